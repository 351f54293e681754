"""The few-rows matrix kernel (`fp8_gemm.skinny_mm`) in Triton's CPU interpreter, in float32 (the
interpreter cannot run FP8; the kernel is dtype-generic): it equals x @ w.T for row counts below,
at and above one tile, outputs that do not fill a tile, inputs that are not a whole number of
K tiles, and each of the engine's candidate configs.
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


def test_config_names_round_trip():
    for config in (*CANDIDATES, SkinnyConfig(32, 64, 8, 2)):
        assert SkinnyConfig.parse(config.name) == config
    assert CANDIDATES[0].name == "triton/64x256/w4/s6"
