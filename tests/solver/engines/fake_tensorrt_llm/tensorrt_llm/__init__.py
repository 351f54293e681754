"""FAKE `tensorrt_llm` for tests (see ../README.md): not TensorRT-LLM.

Only `tensorrt_llm.bindings.executor` is mirrored; importing this package has none of the real
package's side effects (loading CUDA, TensorRT, MPI).
"""

__version__ = "1.2.1+fake"
IS_FAKE = True
