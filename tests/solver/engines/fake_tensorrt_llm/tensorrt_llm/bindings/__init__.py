"""FAKE `tensorrt_llm.bindings` for tests: only the `executor` submodule is mirrored."""
