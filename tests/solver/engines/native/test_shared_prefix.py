"""Shared-prefix decode attention: which positions all rows share (a pure function), the engine
with the option on (CPU: the hint is computed and ignored by the gather attention, outputs
unchanged), and the Triton kernels themselves in Triton's CPU interpreter (float32; skipped
where Triton or an interpreter-compatible NumPy is missing).

Run: pytest tests/solver/engines/native/test_shared_prefix.py -q
"""

from __future__ import annotations

import pytest

from solver.engines.base import Request, SamplingParams
from solver.engines.native import EngineConfig, NativeEngine
from solver.engines.native.model_runner import shared_prefix_len
from tests.solver.engines.engine_testing import PROMPTS, Collector, reference, tiny_model
from tests.solver.engines.native.interpreter import interpreter_unavailable, run_in_interpreter


@pytest.mark.parametrize(
    "tables, lens, expected",
    [
        ([[5, 6, 7], [5, 6, 8], [5, 6, 9]], [40, 41, 45], 32),  # two shared blocks of 16
        ([[5, 6, 7], [5, 6, 8]], [33, 40], 32),  # a row's last token starts block 3: both shared blocks usable
        ([[5, 6, 7], [5, 6, 8]], [32, 40], 16),  # the first row's last token is in block 2: it stays its own
        ([[5, 6, 7], [4, 6, 7]], [40, 40], 0),  # different first blocks: nothing shared
        ([[5, 6, 7, 8]], [60], 48),  # one row: all its full blocks before its last token
        ([[5], [5]], [1, 1], 0),
    ],
)
def test_shared_prefix_len_counts_whole_common_blocks_before_every_last_token(tables, lens, expected):
    assert shared_prefix_len(tables, lens, 16) == expected


@pytest.mark.parametrize("min_tokens, hinted", [(0, True), (1000, False)])
def test_decode_is_told_the_shared_length_only_from_the_threshold_on(min_tokens, hinted):
    model = tiny_model("qwen2")
    engine = NativeEngine(model, config=EngineConfig(block_size=4, shared_prefix_min_tokens=min_tokens))
    native = engine.runner.model
    seen, attend = [], native.decode_attn

    def recording(q, k_cache, v_cache, meta, scale):
        seen.append(None if meta.shared_len is None else int(meta.shared_len))
        return attend(q, k_cache, v_cache, meta, scale)

    native.decode_attn = recording
    run = Collector(engine)
    for i in range(3):
        engine.add(Request(f"s{i}", PROMPTS["long"], SamplingParams(max_tokens=8, temperature=0.0)))
    run.run()
    assert seen and all((s is not None and s > 0) == hinted for s in seen)
    assert run.tokens["s0"] == run.tokens["s1"] == run.tokens["s2"] == reference(model, PROMPTS["long"], 8)


def test_decode_kernel_splits_leave_no_shared_parts_without_a_shared_prefix():
    import torch

    from solver.engines.native.attention import DecodeKernel

    cpu = torch.device("cpu")  # counted as 8 multiprocessors
    assert DecodeKernel(programs_per_sm=4).splits(2, 40, 8, cpu, shared=False) == (0, 2)
    assert DecodeKernel(programs_per_sm=4, shared_splits=8).splits(2, 40, 8, cpu, shared=True) == (8, 2)
    assert DecodeKernel(shared_splits=0).splits(2, 40, 8, cpu, shared=True)[0] == 2  # 0: enough to fill the GPU twice


def test_engine_with_shared_prefix_attention_equals_generate():
    model = tiny_model("qwen2")
    engine = NativeEngine(model, config=EngineConfig(block_size=4, shared_prefix_min_tokens=0))
    run = Collector(engine)
    for i in range(3):
        engine.add(Request(f"s{i}", PROMPTS["long"], SamplingParams(max_tokens=16, temperature=0.0)))
    engine.add(Request("other", PROMPTS["medium"], SamplingParams(max_tokens=16, temperature=0.0)))
    run.run()
    assert run.tokens["s0"] == run.tokens["s1"] == run.tokens["s2"] == reference(model, PROMPTS["long"], 16)
    assert run.tokens["other"] == reference(model, PROMPTS["medium"], 16)


_KERNEL_CHECK = """
import json, torch
from solver.engines.native.attention import DecodeKernel, DecodeMeta, decode_attention
from solver.engines.native.ops import merge_splits
from solver.engines.native.paged_attention import paged_decode_splits
torch.manual_seed(0)
rows, heads, kv_heads, dim, blocks, bs = 6, 8, 2, 32, 64, 4
k, v = (torch.randn(blocks, bs, kv_heads, dim) for _ in range(2))
q = torch.randn(rows, heads, dim)
prefix = (torch.randperm(blocks - 1)[:5] + 1).tolist()  # 5 blocks (20 positions) every row shares
tables = torch.tensor([prefix + (torch.randperm(blocks - 1)[:6] + 1).tolist() for _ in range(rows)], dtype=torch.int32)
lens = torch.tensor([21, 22, 30, 44, 1, 35], dtype=torch.int32)  # row 4 stands for a padded graph row
slots = torch.zeros(rows, dtype=torch.long)
ref = decode_attention(q, k, v, DecodeMeta(slots, tables, lens), dim**-0.5)
errors = {}
long_prompts = DecodeKernel(prefetch=True, num_stages=3, programs_per_sm=2, shared_splits=2, shared_block_n=32)
for name, kernel in (("plain", DecodeKernel()), ("long", long_prompts)):  # the engine's two decode graphs' settings
    for shared in (None, 0, 20):
        hint = None if shared is None else torch.tensor([shared], dtype=torch.int32)
        got = merge_splits(*paged_decode_splits(q, k, v, DecodeMeta(slots, tables, lens, hint), dim**-0.5, kernel=kernel), torch.float32)
        real = [i for i in range(rows) if lens[i] > (shared or 0)]
        errors[f"{name}/{shared}"] = ((got[real] - ref[real]).norm() / ref[real].norm()).item()
print(json.dumps(errors))
"""


@pytest.mark.skipif(interpreter_unavailable() is not None, reason=str(interpreter_unavailable()))
def test_paged_kernels_equal_the_gather_attention_in_the_triton_interpreter():
    errors = run_in_interpreter(_KERNEL_CHECK)
    for settings in ("plain", "long"):  # the short prompts' settings, and the long ones' (with block-table prefetch)
        assert errors[f"{settings}/None"] < 1e-5  # the per-row programs alone
        assert errors[f"{settings}/0"] < 1e-5  # with a shared prefix of nothing
        assert errors[f"{settings}/20"] < 1e-5  # 20 positions read once for all rows, the rest per row


def test_a_negative_threshold_is_refused():
    with pytest.raises(ValueError, match="shared_prefix_min_tokens"):
        EngineConfig(shared_prefix_min_tokens=-1)
