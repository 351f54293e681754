"""The paged prefill kernel (`paged_prefill.py`) in Triton's CPU interpreter, float32: against the
gather attention for a batch of a whole prompt longer than one query tile, a continuation (a few
queries after a long context), a sequence sharing another's first blocks, with grouped-query
heads; and the whole engine with it, the decode kernel leaving its parts to `attention_output`
and the RoPE + KV-store row kernel (as on the GPU), against transformers' generate for Qwen2
(whose qkv has a bias) and Llama, batched, with shared prefixes, across a tool-call
continuation; the same with the gather prefill. On the GPU: `bench/engine.py` (its checks).

Run: pytest tests/solver/engines/native/test_paged_prefill.py -q
"""

from __future__ import annotations

import pytest

from solver.engines.native import EngineConfig
from tests.solver.engines.native.interpreter import interpreter_unavailable, run_in_interpreter

_KERNEL_CHECK = """
import json, torch
from solver.engines.native.attention import PrefillMeta, prefill_attention
from solver.engines.native.paged_prefill import paged_prefill_attention
torch.manual_seed(0)
heads, kv_heads, dim, blocks, bs = 4, 2, 16, 64, 4
k, v = (torch.randn(blocks, bs, kv_heads, dim) for _ in range(2))
pages = (torch.randperm(blocks - 1) + 1).tolist()
a = pages[:20]  # 70-token prompt: 18 blocks, more than one 64-query tile
b = pages[20:35]  # a continuation: 5 new tokens after 50
c = a[:10] + pages[35:36]  # shares a's first 10 blocks, computes its last 3 of 43
seqs = [(a, 70, 70), (b, 5, 55), (c, 3, 43)]  # (table, queries, context)
starts, total = [], 0
for _, n, _ in seqs:
    starts.append(total)
    total += n
q = torch.randn(total, heads, dim)
meta = PrefillMeta(torch.zeros(total, dtype=torch.long), [torch.tensor(t) for t, _, _ in seqs], starts,
                   [n for _, n, _ in seqs], [ctx for _, _, ctx in seqs])
ref = prefill_attention(q, k, v, meta, dim**-0.5)
got = paged_prefill_attention(q, k, v, meta, dim**-0.5)
again = paged_prefill_attention(q, k, v, meta, dim**-0.5)  # the kernel inputs kept on the meta
print(json.dumps({"error": ((got - ref).abs().max() / ref.abs().max()).item(), "again": (again - got).abs().max().item()}))
"""

_ENGINE_CHECK = """
import dataclasses, itertools, json
from solver.engines.base import Request, SamplingParams
from solver.engines.native import EngineConfig, NativeEngine, row_kernels
from solver.engines.native.ops import EAGER
from solver.engines.native.paged_attention import paged_decode_splits
from solver.engines.native.paged_prefill import paged_prefill_attention
from tests.solver.engines.engine_testing import GREEDY, PROMPTS, Collector, first_new_position, reference, stop_then_extend, tiny_model
same = {}
for architecture, prefill in itertools.product(("qwen2", "llama"), ("gather", "kernel")):
    model = tiny_model(architecture)
    engine = NativeEngine(model, config=EngineConfig(block_size=4))
    native = engine.runner.model
    if prefill == "kernel":
        native.prefill_attn = paged_prefill_attention
    native.decode_attn = paged_decode_splits
    native.ops = dataclasses.replace(EAGER, rope_store=row_kernels.rope_store)
    run = Collector(engine)
    for i in range(3):  # three samples of one prompt: each prefills what follows the shared blocks
        engine.add(Request(f"s{i}", PROMPTS["long"], SamplingParams(max_tokens=10, temperature=0.0)))
    engine.add(Request("m", PROMPTS["medium"], SamplingParams(max_tokens=10, temperature=0.0)))
    run.run()
    key = f"{architecture}/{prefill}"
    same[key] = [run.tokens[f"s{i}"] == reference(model, PROMPTS["long"], 10) for i in range(3)]
    same[key].append(run.tokens["m"] == reference(model, PROMPTS["medium"], 10))
    stop_then_extend(engine, model, first_new_position(reference(model, PROMPTS["medium"], 12)), 12, GREEDY)  # asserts inside
    same[key].append(engine.num_used_blocks() == 0)
print(json.dumps(same))
"""


@pytest.mark.skipif(interpreter_unavailable() is not None, reason=str(interpreter_unavailable()))
def test_paged_prefill_kernel_equals_the_gather_attention_in_the_triton_interpreter():
    result = run_in_interpreter(_KERNEL_CHECK)
    assert result["error"] < 1e-5, result
    assert result["again"] == 0.0


@pytest.mark.skipif(interpreter_unavailable() is not None, reason=str(interpreter_unavailable()))
def test_engine_with_the_kernels_equals_generate_in_the_triton_interpreter():
    # The RoPE + KV-store kernel with the gather prefill too (the engine's default prefill).
    expected = {f"{a}/{p}": [True] * 5 for a in ("qwen2", "llama") for p in ("gather", "kernel")}
    assert run_in_interpreter(_ENGINE_CHECK) == expected


def test_unknown_prefill_backend_is_refused():
    with pytest.raises(ValueError, match="prefill_attention_backend"):
        EngineConfig(prefill_attention_backend="flash")
