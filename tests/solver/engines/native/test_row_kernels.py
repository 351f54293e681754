"""The hand-written row kernels (`row_kernels.py`) in Triton's CPU interpreter, float32 (it
cannot run FP8 or bf16 here): RoPE + KV store equals the eager ops' q and cache contents, with
and without an FP8 linear's scales and a bias; SiLU*up + per-row quantisation gives the eager
rows and scales (stored unrounded as float32), in both variants, for rows that fill one chunk,
several, and a chunk count that is not a power of two; add + RMSNorm + quantisation gives the
eager sum, rows and scales, with and without a residual; the attention merge + quantisation
gives the eager merge's rows and scales (a head count that is not a power of two, empty
parts), and per group of heads (for our product kernel, `fp8_gemm.skinny_mm`), which the
op before o_proj uses only for decode's parts of up to the kernel's rows; the choice at build takes the faster form and refuses a wrong one. The whole engine
with the RoPE + KV-store kernel: `test_paged_prefill.py`. On the GPU (bf16, FP8, timing):
`bench/engine.py` (its checks).

Run: pytest tests/solver/engines/native/test_row_kernels.py -q
"""

from __future__ import annotations

import pytest

from tests.solver.engines.native.interpreter import interpreter_unavailable, run_in_interpreter

_CHECK = """
import json, torch
from solver.engines.native import row_kernels
from solver.engines.native.layers import Out
from solver.engines.native.ops import EAGER, quantize_rows, silu_mul
torch.manual_seed(0)
errors = {}
tokens, heads, kv_heads, dim, blocks, bs = 5, 4, 2, 16, 6, 4
width = (heads + 2 * kv_heads) * dim
cos, sin = torch.randn(tokens, dim), torch.randn(tokens, dim)
slots = torch.tensor([3, 9, 10, 17, 0])
for name, qkv in (
    ("plain", Out(torch.randn(tokens, width))),
    ("scaled+bias", Out(torch.randn(tokens, width) * 50, torch.rand(tokens, 1), torch.rand(1, width) * 0.1, torch.randn(width))),
):
    caches = [[torch.zeros(blocks, bs, kv_heads, dim) for _ in range(2)] for _ in range(2)]
    q_ref = EAGER.rope_store(qkv, cos, sin, heads, kv_heads, dim, *caches[0], slots)
    q = row_kernels.rope_store(qkv, cos, sin, heads, kv_heads, dim, *caches[1], slots)
    errors[f"rope {name} q"] = ((q - q_ref).abs().max() / q_ref.abs().max()).item()
    for i, part in enumerate("kv"):
        ref, got = caches[0][i], caches[1][i]
        errors[f"rope {name} {part} cache"] = ((got - ref).abs().max() / ref.abs().max()).item()
        errors[f"rope {name} {part} written"] = float(int((ref != 0).sum()) == tokens * kv_heads * dim)
for w in (300, 2048, 5000):
    gate_up = Out(torch.randn(3, 2 * w) * 40, torch.rand(3, 1), torch.rand(1, 2 * w) * 0.1)
    gate, up = EAGER.dequantize(gate_up, torch.float32).chunk(2, dim=-1)
    h = torch.nn.functional.silu(gate) * up
    h_q, scale_ref = quantize_rows(h)
    for variant in ("row", "chunks"):
        rows, scale = row_kernels.silu_mul_quantize(gate_up, variant, out_dtype=torch.float32)
        errors[f"silu {w} {variant} rows"] = ((rows * scale - h).abs().max() / h.abs().max()).item()
        errors[f"silu {w} {variant} scale"] = ((scale - scale_ref).abs() / scale_ref).max().item()
for name, residual in (("first layer", None), ("residual", torch.randn(3, 700))):
    x = Out(torch.randn(3, 700) * 30, torch.rand(3, 1), torch.rand(1, 700) * 0.1)
    weight = torch.rand(700) + 0.5
    (q_ref, scale_ref), sum_ref = EAGER.add_norm(x, residual, weight, 1e-6, True)
    (rows, scale), summed = row_kernels.add_norm_quantize(x, residual, weight, 1e-6, out_dtype=torch.float32)
    normed = q_ref.float() * scale_ref  # the eager rows, dequantised (one FP8 rounding away from the norm)
    h = EAGER.add_norm(x, residual, weight, 1e-6, False)[0]
    errors[f"add_norm {name} sum"] = ((summed - sum_ref).abs().max() / sum_ref.abs().max()).item()
    errors[f"add_norm {name} rows"] = ((rows * scale - h).abs().max() / h.abs().max()).item()
    errors[f"add_norm {name} scale"] = ((scale - scale_ref).abs() / scale_ref).max().item()
from solver.engines.native.attention import Splits
partial, lse = torch.randn(4, 5, 3, 16), torch.randn(4, 5, 3) * 3
lse[1, 2, 0] = lse[2, :, 2] = float("-inf")  # empty parts (a split past a row's end)
merged = EAGER.attention_output(Splits(partial, lse), torch.float32, False)
_, scale_ref = quantize_rows(merged)
rows, scale = row_kernels.merge_quantize(Splits(partial, lse), torch.float32, out_dtype=torch.float32)
errors["merge rows"] = ((rows * scale - merged).abs().max() / merged.abs().max()).item()
errors["merge scale"] = ((scale - scale_ref).abs() / scale_ref).max().item()
partial, lse = torch.randn(3, 8, 3, 16), torch.randn(3, 8, 3) * 3
lse[0, 5, 1] = lse[2, :, 0] = float("-inf")
merged = EAGER.attention_output(Splits(partial, lse), torch.float32, False).view(3, 4, 2 * 16)  # groups of 2 heads
scale_ref = merged.abs().amax(-1).clamp(min=1e-12) / 448
rows, scale = row_kernels.merge_quantize(Splits(partial, lse), torch.float32, out_dtype=torch.float32, group_heads=2)
errors["merge per group rows"] = ((rows.view(3, 4, 32) * scale.unsqueeze(-1) - merged).abs().max() / merged.abs().max()).item()
errors["merge per group scale"] = ((scale - scale_ref).abs() / scale_ref).max().item()
op = lambda *args, **kwargs: row_kernels._grouped_attention_output(lambda o, dtype, fp8: "plain", 2, 3, *args, out_dtype=torch.float32)
errors["grouped op takes decode parts"] = float(not torch.equal(op(Splits(partial, lse), torch.float32, True)[1], scale))
errors["grouped op leaves more rows to the plain op"] = float(op(Splits(torch.randn(4, 8, 3, 16), torch.randn(4, 8, 3)), torch.float32, True) != "plain")
errors["grouped op leaves bf16 and merged attention to the plain op"] = float(
    op(Splits(partial, lse), torch.float32, False) != "plain" or op(torch.randn(3, 8, 16), torch.float32, True) != "plain")
print(json.dumps(errors))
"""


_CHOICE_CHECK = """
import json, torch
from solver.engines.native import row_kernels
from solver.engines.native.model import from_hf
from tests.solver.engines.engine_testing import tiny_model
result = {}
for broken in (False, True):
    model = from_hf(tiny_model("qwen2"), 64)
    kv = tuple(torch.zeros(4, 4, model.shape.num_kv_heads, model.shape.head_dim) for _ in range(2))
    kernel = row_kernels.rope_store
    if broken:  # a kernel that writes the right cache but returns a wrong q
        row_kernels.rope_store = lambda *args, **kwargs: kernel(*args, **kwargs) * 2
    # a stand-in timer (CUDA graphs need a GPU): the kernel is always the faster
    row_kernels.graph_time_ms = lambda fns, args: 1.0 if fns[0].__defaults__[0] is not model.ops.rope_store else 2.0
    choice = row_kernels.choose_row_kernels(model, kv, batch_size=3)
    result[str(broken)] = [choice["rope_store"]["chosen"], choice["rope_store"].get("mismatch", []), sorted(choice)]
    row_kernels.rope_store = kernel
print(json.dumps(result))
"""


@pytest.mark.skipif(interpreter_unavailable() is not None, reason=str(interpreter_unavailable()))
def test_row_kernel_choice_takes_the_faster_form_and_refuses_a_wrong_one_in_the_triton_interpreter():
    # A float32 model without FP8: only rope_store is offered.
    result = run_in_interpreter(_CHOICE_CHECK)
    assert result["False"] == ["kernel", [], ["rope_store"]]
    assert result["True"] == ["compiled", ["kernel"], ["rope_store"]]


@pytest.mark.skipif(interpreter_unavailable() is not None, reason=str(interpreter_unavailable()))
def test_row_kernels_equal_the_eager_ops_in_the_triton_interpreter():
    errors = run_in_interpreter(_CHECK)
    written = {k: v for k, v in errors.items() if k.endswith("written")}
    assert written and all(v == 1.0 for v in written.values()), written  # every new K/V landed in its slot
    numeric = {k: v for k, v in errors.items() if not k.endswith("written")}
    assert len(numeric) == 2 * 3 + 3 * 2 * 2 + 2 * 3 + 2 + 2 + 3
    assert max(numeric.values()) < 1e-5, numeric


def test_row_kernels_option_is_ignored_off_the_gpu():
    from solver.engines.base import Request, SamplingParams
    from solver.engines.native import EngineConfig, NativeEngine
    from tests.solver.engines.engine_testing import PROMPTS, Collector, reference, tiny_model

    model = tiny_model("llama")
    engine = NativeEngine(model, config=EngineConfig(row_kernels=True))
    assert engine.row_kernel_choice == {}
    run = Collector(engine)
    engine.add(Request("a", PROMPTS["long"], SamplingParams(max_tokens=12, temperature=0.0)))
    run.run()
    assert run.tokens["a"] == reference(model, PROMPTS["long"], 12)


def test_forms_in_our_product_kernel_when_chosen_switch_their_linears_and_keep_a_plain_path(monkeypatch):
    """The choice of the two steps that can move into our FP8 product kernel (SiLU*up into
    gate_up, the merge's quantisation into o_proj's input), on the CPU: stand-ins compute what
    the plain path computes (FP8 Triton kernels cannot run here) and a stand-in timer makes them
    the fastest. Then every gate_up and o_proj linear is our kernel in the chosen config, gate_up
    ends with SiLU*up, and inputs the kernels do not take (merged attention, FP8 off) still go
    through the plain ops."""
    from functools import partial

    import torch

    from solver.engines.native import row_kernels
    from solver.engines.native.fp8 import KINDS, convert
    from solver.engines.native.model import from_hf
    from solver.engines.native.ops import EAGER
    from tests.solver.engines.engine_testing import tiny_model

    model = from_hf(tiny_model("qwen2").to(torch.bfloat16), 64)
    convert(model, {kind: "tensorwise" for kind in KINDS})
    monkeypatch.setattr(row_kernels, "_silu_in_product", lambda gate_up, x_in, config, pdl: EAGER.silu_mul(gate_up(x_in), torch.bfloat16, True))
    monkeypatch.setattr(row_kernels, "_grouped_product",
                        lambda o_proj, parts, config, group_heads, dtype, pdl: o_proj(EAGER.attention_output(parts, dtype, True)))  # fmt: skip
    # our product kernel's forms are the partials among the timed forms; the plain ones are lambdas
    monkeypatch.setattr(row_kernels, "graph_time_ms", lambda fns, args: 1.0 if isinstance(fns[0].__defaults__[0], partial) else 2.0)
    # K tiles of two heads (the 14B shape's 256-wide tiles hold two heads of 128; this model's heads are smaller)
    tiles = (row_kernels.SkinnyConfig(64, 2 * model.shape.head_dim, 4, 2), row_kernels.SkinnyConfig(64, 3 * model.shape.head_dim, 4, 2))
    monkeypatch.setattr(row_kernels, "PRODUCT_CONFIGS", tiles)
    assert row_kernels._group_configs(model.layers[0].o_proj, 3, model.shape.num_heads, model.shape.head_dim) == [tiles[0]]  # 3 heads: no
    kv = tuple(torch.zeros(4, 4, model.shape.num_kv_heads, model.shape.head_dim, dtype=torch.bfloat16) for _ in range(2))
    choice = row_kernels.choose_row_kernels(model, kv, batch_size=3)

    silu, merge = choice["silu_mul"]["chosen"], choice["attention_output"]["chosen"]
    assert silu.startswith("gate_up epilogue triton/") and merge.startswith("grouped triton/"), choice
    assert not choice["silu_mul"].get("mismatch") and not choice["attention_output"].get("mismatch")
    assert all(layer.gate_up.silu_epilogue and layer.gate_up.mode == silu.split()[-1] for layer in model.layers)
    assert all(layer.o_proj.mode == merge.split()[-1] and not layer.o_proj.silu_epilogue for layer in model.layers)
    assert all(layer.qkv.mode == layer.down.mode == "tensorwise" for layer in model.layers)
    group_heads = row_kernels.SkinnyConfig.parse(merge.split()[-1]).block_k // model.shape.head_dim
    assert model.ops.attention_output.func is row_kernels._grouped_attention_output and model.ops.attention_output.args[1] == group_heads
    assert model.ops.silu_mul.func is row_kernels._silu_mul_after
    attention = torch.randn(3, model.shape.num_heads, model.shape.head_dim, dtype=torch.bfloat16)
    rows, scales = model.ops.attention_output(attention, torch.bfloat16, True)  # merged already (prefill): per row
    assert scales.shape == (3, 1)
    assert torch.equal(model.ops.attention_output(attention, torch.bfloat16, False), attention.flatten(1))  # FP8 off: as it is
