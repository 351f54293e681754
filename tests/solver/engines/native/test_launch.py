"""Programmatic launch (`launch.py`): every Triton kernel of the engine, compiled for a Hopper GPU
(no GPU needed: Triton compiles for a named target), waits for the kernel before it ahead of its
first global load or store when launched programmatically, and carries no wait otherwise."""

from __future__ import annotations

import re

import pytest

triton = pytest.importorskip("triton")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from solver.engines.native import fp8_gemm, paged_attention, paged_prefill, row_kernels  # noqa: E402

INT_POINTERS = {"tables_ptr", "lens_ptr", "shared_ptr", "slot_ptr", "info_ptr", "tiles_ptr"}
FLOATS = {"scale", "eps"}
# constexprs of each kernel (sizes of the engine's shapes, small)
KERNELS = {
    "skinny": (fp8_gemm._skinny_kernel, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, EVEN_K=True)),
    "skinny_grouped": (fp8_gemm._skinny_kernel, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, EVEN_K=True, GROUP_SCALES=True)),
    "merge_group": (row_kernels._merge_kernel, dict(NUM_HEADS=8, GROUP=2, GROUP_PAD=2, HEAD_DIM=64, ROUND_TO=triton.language.float32)),
    "skinny_silu": (fp8_gemm._skinny_silu_kernel, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, EVEN_K=True, CHUNKS=8)),
    "rope_store": (row_kernels._rope_store_kernel, dict(NUM_HEADS=4, NUM_KV_HEADS=2, HEAD_DIM=64, HAS_SCALES=True, HAS_BIAS=True, CLAMP=True)),
    "silu_row": (row_kernels._silu_row_kernel, dict(BLOCK=1024, HAS_SCALES=True)),
    "silu_chunk": (row_kernels._silu_chunk_kernel, dict(CHUNKS=8, BLOCK=512, HAS_SCALES=True)),
    "quantize_chunk": (row_kernels._quantize_chunk_kernel, dict(CHUNKS=8, BLOCK=512)),
    "add_norm": (row_kernels._add_norm_row_kernel, dict(BLOCK=1024, HAS_SCALES=True, HAS_RESIDUAL=True)),
    "merge": (row_kernels._merge_kernel, dict(NUM_HEADS=5, GROUP=5, GROUP_PAD=8, HEAD_DIM=64, ROUND_TO=triton.language.float32)),
    "decode": (paged_attention._decode_kernel, dict(NUM_HEADS=8, NUM_KV_HEADS=2, GROUP=4, GROUP_PAD=16, HEAD_DIM=64, BLOCK_SIZE=16,
                                                    BLOCK_N=64, NUM_SPLITS=2, TOTAL_SPLITS=3, HAS_SHARED=False)),
    "decode_fp8_cache": (paged_attention._decode_kernel, dict(NUM_HEADS=8, NUM_KV_HEADS=2, GROUP=4, GROUP_PAD=16, HEAD_DIM=64,
                                                              BLOCK_SIZE=16, BLOCK_N=64, NUM_SPLITS=2, TOTAL_SPLITS=3, HAS_SHARED=True,
                                                              IN_FP16=True)),
    "decode_shared": (paged_attention._decode_kernel, dict(NUM_HEADS=8, NUM_KV_HEADS=2, GROUP=4, GROUP_PAD=16, HEAD_DIM=64,
                                                           BLOCK_SIZE=16, BLOCK_N=64, NUM_SPLITS=2, TOTAL_SPLITS=3, HAS_SHARED=True,
                                                           BLOCK_Q=64, SHARED_SPLITS=1, PREFETCH=True)),
    "prefill": (paged_prefill._prefill_kernel, dict(NUM_HEADS=8, NUM_KV_HEADS=2, HEAD_DIM=64, BLOCK_SIZE=16, BLOCK_M=64, BLOCK_N=64)),
}  # fmt: skip
GLOBAL_ACCESS = re.compile(r"\b(ld\.global|st\.global|cp\.async|atom\.global|red\.global)")


def hopper_ptx(kernel, constexprs: dict, pdl: bool) -> str:
    signature = {}
    for p in kernel.params:
        if p.is_constexpr:
            signature[p.name] = "constexpr"
        elif p.name.endswith("_ptr"):
            signature[p.name] = "*i32" if p.name in INT_POINTERS else "*fp32"
        else:
            signature[p.name] = "fp32" if p.name in FLOATS else "i32"
    defaults = {p.name: p.default for p in kernel.params if p.is_constexpr and p.has_default}  # as a launch leaves them
    source = ASTSource(fn=kernel, signature=signature, constexprs={**defaults, **constexprs, "PDL": pdl})
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "launch_pdl": pdl})
    except RuntimeError as exc:  # no ptxas for this platform in the Triton wheel
        pytest.skip(f"Triton cannot compile for sm_90 here: {exc}")
    return compiled.asm["ptx"]


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_waits_for_the_previous_one_before_touching_memory_when_launched_programmatically(name):
    kernel, constexprs = KERNELS[name]
    ptx = hopper_ptx(kernel, constexprs, pdl=True)
    wait = ptx.find("griddepcontrol.wait")
    first_access = GLOBAL_ACCESS.search(ptx)
    assert wait >= 0 and "griddepcontrol.launch_dependents" in ptx
    assert first_access is not None and wait < first_access.start(), f"{name}: global memory touched before the wait"


def test_kernel_launched_plainly_carries_no_wait():
    kernel, constexprs = KERNELS["skinny"]
    assert "griddepcontrol" not in hopper_ptx(kernel, constexprs, pdl=False)
