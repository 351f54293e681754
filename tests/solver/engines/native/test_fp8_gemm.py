"""The few-rows matrix kernel (`fp8_gemm.skinny_mm`) in Triton's CPU interpreter, in float32 (the
interpreter cannot run FP8; the kernel is dtype-generic): it equals x @ w.T for row counts below,
at and above one tile, outputs that do not fill a tile, inputs that are not a whole number of
K tiles, and each of the engine's candidate configs. Its gate_up form with SiLU*up as the
epilogue (`skinny_silu_mm`) equals SiLU(gate) * up of the scaled product, with each row's max
per tile of channels, and `row_kernels.quantize_chunks` then gives the per-row quantisation.
With an input quantised per group of K columns (`group_scales`) it equals the sum of
each group's product times its scale;
the op after such a gate_up (`row_kernels._silu_mul_after`) takes its product, and passes any
other to the plain op.
Also the config names the engine's choice table uses. On the GPU, in FP8: `bench/fp8_gemm.py`
and `bench/engine.py`'s FP8 check.

Run: pytest tests/solver/engines/native/test_fp8_gemm.py -q
"""

from __future__ import annotations

import pytest

from solver.engines.native.fp8_gemm import CANDIDATES, SkinnyConfig
from tests.solver.engines.native.interpreter import interpreter_unavailable, run_in_interpreter

_CHECK = """
import json, torch
from solver.engines.native.fp8_gemm import CANDIDATES, SkinnyConfig, skinny_mm
torch.manual_seed(0)
cases = [(5, 70, 300, SkinnyConfig(32, 64, 4, 2)), (16, 128, 512, SkinnyConfig(64, 128, 4, 2)),
         (37, 64, 256, SkinnyConfig(32, 32, 4, 2)), (1, 33, 100, SkinnyConfig(32, 64, 4, 2)),
         (70, 40, 96, SkinnyConfig(32, 32, 4, 2))]
cases += [(16, 130, 1024, c) for c in CANDIDATES]
errors = []
for rows, n, k, config in cases:
    x, w = torch.randn(rows, k), torch.randn(n, k)
    out = skinny_mm(x, w, config)
    assert out.shape == (rows, n) and out.dtype == torch.float32, (out.shape, out.dtype)
    expected = x.double() @ w.double().T
    errors.append(((out.double() - expected).abs().max() / expected.abs().max()).item())
print(json.dumps(errors))
"""


@pytest.mark.skipif(interpreter_unavailable() is not None, reason=str(interpreter_unavailable()))
def test_skinny_mm_partials_sum_to_the_product_in_the_triton_interpreter():
    errors = run_in_interpreter(_CHECK)
    assert len(errors) == 5 + len(CANDIDATES)
    assert max(errors) < 1e-5, errors


_SILU_CHECK = """
import json, torch
from solver.engines.native.fp8 import SiluProduct
from solver.engines.native.fp8_gemm import CANDIDATES, SkinnyConfig, skinny_silu_mm
from solver.engines.native.layers import Out
from solver.engines.native.ops import quantize_rows
from solver.engines.native.row_kernels import _silu_mul_after, quantize_chunks
torch.manual_seed(0)
errors = {}
cases = [(5, 70, 300, SkinnyConfig(32, 64, 4, 2)), (16, 128, 512, SkinnyConfig(64, 128, 4, 2)), (3, 40, 96, SkinnyConfig(64, 32, 4, 2)),
         (16, 100, 512, CANDIDATES[0])]
for rows, width, k, config in cases:
    x, w = torch.randn(rows, k), torch.randn(2 * width, k)
    x_scale, w_scale = torch.rand(rows, 1) + 0.5, torch.rand(1, 2 * width) * 0.1
    h, chunk_max, tiles = skinny_silu_mm(x, x_scale, w, w_scale, config)
    gate, up = ((x.double() @ w.double().T) * x_scale.double() * w_scale.double()).chunk(2, dim=-1)
    ref = torch.nn.functional.silu(gate) * up
    key = f"{rows}x{width}x{k}"
    errors[key + " h"] = ((h.double() - ref).abs().max() / ref.abs().max()).item()
    errors[key + " tiles"] = float(tiles != -(-width // (config.block_n // 2)))
    tile_max = torch.nn.functional.pad(ref.abs(), (0, tiles * (config.block_n // 2) - width)).view(rows, tiles, -1).amax(-1)
    errors[key + " chunk max"] = ((chunk_max[:, :tiles].double() - tile_max).abs().max() / tile_max.max()).item()
    q, scale = _silu_mul_after(None, SiluProduct(h, chunk_max, tiles), torch.float32, True, out_dtype=torch.float32)
    _, scale_ref = quantize_rows(ref.float())
    errors[key + " rows"] = ((q * scale - ref).abs().max() / ref.abs().max()).item()
    errors[key + " scale"] = ((scale - scale_ref).abs() / scale_ref).max().item()
from solver.engines.native.fp8_gemm import skinny_mm
for rows, n, k, config in [(5, 70, 256, SkinnyConfig(32, 64, 4, 2)), (16, 130, 1024, CANDIDATES[0])]:
    x, w = torch.randn(rows, k), torch.randn(n, k)
    x_scale = torch.rand(rows, k // config.block_k) + 0.5
    out = skinny_mm(x, w, config, group_scales=x_scale)
    expected = sum(x_scale[:, g, None].double() * (x[:, g * config.block_k:(g + 1) * config.block_k].double()
                   @ w[:, g * config.block_k:(g + 1) * config.block_k].double().T) for g in range(k // config.block_k))
    errors[f"grouped {rows}x{n}x{k}"] = ((out.double() - expected).abs().max() / expected.abs().max()).item()
plain = Out(torch.randn(2, 8))
errors["other products to the plain op"] = float(_silu_mul_after(lambda y, dtype, fp8: "plain", plain, torch.float32, True) != "plain")
print(json.dumps(errors))
"""


@pytest.mark.skipif(interpreter_unavailable() is not None, reason=str(interpreter_unavailable()))
def test_gate_up_product_with_the_silu_epilogue_and_grouped_input_scales_in_the_triton_interpreter():
    errors = run_in_interpreter(_SILU_CHECK)
    assert len(errors) == 4 * 5 + 2 + 1
    assert max(errors.values()) < 1e-5, errors


def test_config_names_round_trip():
    for config in (*CANDIDATES, SkinnyConfig(32, 64, 8, 2)):
        assert SkinnyConfig.parse(config.name) == config
    assert CANDIDATES[0].name == "triton/64x256/w4/s6"
