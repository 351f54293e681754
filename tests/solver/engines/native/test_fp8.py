"""FP8 linears on the CPU (torch offers `_scaled_mm` and float8 there): the product each mode
returns, and a whole tiny model's logits with every linear in FP8 against the same model in
bf16. Speed is measured on the GPU only (bench/engine.py); the engine refuses FP8 on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch

from solver.engines.base import SamplingParams
from solver.engines.native import EngineConfig
from solver.engines.native.fp8 import KINDS, LAYER_KINDS, MODES, FP8Linear, convert, modules_of
from solver.engines.native.layers import Linear, Out
from solver.engines.native.model import from_hf
from solver.engines.native.model_runner import Chunk, ModelRunner
from solver.engines.native.ops import EAGER, dequantize, quantize_rows
from solver.engines.native.sequence import Sequence
from tests.solver.engines.engine_testing import PROMPTS, tiny_model


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("mode", MODES)
def test_fp8_linear_is_the_product_of_its_quantised_operands(mode):
    torch.manual_seed(0)
    x = torch.randn(5, 64, dtype=torch.bfloat16)  # 5 rows: not a multiple of 16
    weight, bias = torch.randn(48, 64, dtype=torch.bfloat16), torch.randn(48, dtype=torch.bfloat16)
    linear = FP8Linear(weight, bias, mode)
    xq, x_scale = quantize_rows(x)
    got = dequantize(linear((xq, x_scale)), torch.bfloat16)
    exact = (xq.float() * x_scale) @ (linear.weight.float() * linear.weight_scale.t()).t() + bias.float()
    assert got.dtype == torch.bfloat16 and got.shape == (5, 48)
    assert relative_error(got, exact) < 1e-2  # bf16 rounding of the result only
    assert relative_error(got, torch.nn.functional.linear(x, weight, bias)) < 0.08  # what FP8 costs


class FakeFP8Linear(Linear):
    """The reference an FP8 linear must equal: its quantised weight and per-row quantised input,
    dequantised and multiplied in float32 by a plain matmul."""

    def __init__(self, quantized: FP8Linear) -> None:
        super().__init__(quantized.weight.float() * quantized.weight_scale.t(), quantized.bias)

    def forward(self, x: torch.Tensor) -> Out:
        xq, x_scale = quantize_rows(x)
        y = torch.nn.functional.linear(xq.float() * x_scale, self.weight)
        return Out((y if self.bias is None else y + self.bias.float()).to(torch.bfloat16))


def prefill_logits(model, prompt: list[int]) -> torch.Tensor:
    """Logits after prefilling `prompt` (at most 64 tokens) through a fresh cache: [1, vocab]."""
    runner = ModelRunner(model, EngineConfig(), max_model_len=256, num_blocks=8)
    seq = Sequence("r", SamplingParams(max_tokens=1), torch.Generator(), prompt)
    seq.block_table = [1, 2, 3, 4]
    return runner.prefill([Chunk(seq, 0, len(prompt))])


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("mode", MODES)
def test_fp8_model_equals_its_quantised_reference(architecture, mode):
    """Every linear in FP8 (scales applied by the neighbouring ops, bias once) gives the logits
    of the same model whose linears dequantise and multiply in float32. (Against the bf16 model
    the logits differ by 20-40% here: these tiny random models are tuned to be chaotic, and bf16
    alone moves them by 3-14% from float32.)"""
    quantized = from_hf(tiny_model(architecture).to(torch.bfloat16), 256)
    convert(quantized, {kind: mode for kind in KINDS})
    assert all(getattr(layer, kind).fp8 for layer in quantized.layers for kind in LAYER_KINDS) and quantized.lm_head.fp8
    reference = copy.deepcopy(quantized)
    for kind in KINDS:
        for owner, name in modules_of(reference, kind):
            setattr(owner, name, FakeFP8Linear(getattr(owner, name)))
    assert quantized.ops == EAGER and reference.ops == EAGER
    got, expected = prefill_logits(quantized, list(PROMPTS["long"])), prefill_logits(reference, list(PROMPTS["long"]))
    assert got.dtype == torch.bfloat16
    assert relative_error(got, expected) < 1e-2


@pytest.mark.parametrize("mode", MODES)
def test_drafter_with_an_fp8_head_still_gives_exact_greedy_output(mode):
    from build.drafter.model import Drafter, DrafterConfig
    from solver.engines.base import Request
    from solver.engines.native import NativeEngine
    from solver.engines.native.fp8 import convert_drafter_head
    from tests.solver.engines.engine_testing import Collector, reference

    model = tiny_model("qwen2")
    torch.manual_seed(1)
    drafter = Drafter(DrafterConfig.for_base(model.config.hidden_size, model.config.vocab_size, num_draft_tokens=3)).eval()
    engine = NativeEngine(model, config=EngineConfig(), drafter=drafter)
    drafter = engine.proposer.drafter  # converted on the device, as the engine does with fp8=True
    head = drafter.lm_head[-1]
    x = torch.randn(5, head.weight.shape[1])
    plain = head(x).detach()
    convert_drafter_head(drafter, mode)
    fp8_head = drafter.lm_head[-1]
    assert fp8_head.inner.weight.dtype == torch.float8_e4m3fn
    assert fp8_head(x).dtype == x.dtype and relative_error(fp8_head(x), plain) < 0.1  # an FP8 copy of the head
    run = Collector(engine)
    run.engine.add(Request("a", PROMPTS["long"], SamplingParams(max_tokens=30, temperature=0.0)))
    run.run()
    assert run.tokens["a"] == reference(model, PROMPTS["long"], 30)  # the drafts change, the output cannot
    assert run.engine.stats.extra["spec_draft_tokens"] > 0


def test_a_form_whose_product_is_wrong_is_never_chosen(monkeypatch):
    """The choice's self-check (CPU, with a stand-in timer): a form that is the fastest but
    whose product disagrees with cuBLAS's is listed as a mismatch and not chosen."""
    from solver.engines.native import fp8

    torch.manual_seed(0)
    weight = torch.randn(48, 64, dtype=torch.bfloat16)
    broken = fp8.all_modes()[-1]

    def forms(mode):
        linear = FP8Linear(weight, None, mode)
        if mode == broken:
            linear.weight_scale.data *= 2  # a kernel that computes the wrong product
        return [linear]

    times = {mode: float(i + 2) for i, mode in enumerate(fp8.all_modes())} | {broken: 0.5}  # broken is fastest
    monkeypatch.setattr(fp8, "graph_time_ms", lambda fns, x: times.get(getattr(fns[0], "mode", "bf16"), 100.0))
    x = torch.randn(16, 64, dtype=torch.bfloat16)
    choice = fp8._fastest([Linear(weight)], forms, x, quantize_rows(x))
    assert choice["mismatch"] == [broken]
    assert choice[broken] == float("inf")
    assert choice["chosen"] == "rowwise"  # the fastest of the rest (2.0 ms)


def test_silu_epilogue_and_product_kernel_forms_are_set_on_every_layer():
    from solver.engines.native.fp8 import fuse_silu, use_product_kernel
    from solver.engines.native.fp8_gemm import CANDIDATES

    model = from_hf(tiny_model("qwen2").to(torch.bfloat16), 64)
    convert(model, {kind: "tensorwise" for kind in KINDS})
    fuse_silu(model, CANDIDATES[1])
    assert all(layer.gate_up.silu_epilogue and layer.gate_up.skinny == CANDIDATES[1] and layer.gate_up.mode == CANDIDATES[1].name
               for layer in model.layers)  # fmt: skip
    assert not any(getattr(layer, kind).silu_epilogue for layer in model.layers for kind in ("qkv", "o_proj", "down"))
    fuse_silu(model, None)
    assert not any(layer.gate_up.silu_epilogue for layer in model.layers)
    use_product_kernel(model, "o_proj", CANDIDATES[2])
    assert all(layer.o_proj.skinny == CANDIDATES[2] and layer.o_proj.mode == CANDIDATES[2].name for layer in model.layers)
    assert all(layer.qkv.mode == "tensorwise" for layer in model.layers)
