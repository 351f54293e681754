"""FP8 KV cache (CPU, float32 models): greedy output equals transformers' `generate` on the same
model with its roped keys and its values rounded to FP8 e4m3 (saturating at +-448) as they enter
its cache: alone, batched with shared prefixes, and across a tool-call continuation. The cache
holds one byte per value, so twice the tokens fit.

Run: pytest tests/solver/engines/native/test_fp8_kv.py -q
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import transformers.models.llama.modeling_llama as llama_module
import transformers.models.qwen2.modeling_qwen2 as qwen2_module

from solver.engines.base import Request, SamplingParams
from solver.engines.native import EngineConfig, NativeEngine
from solver.engines.native.attention import DecodeKernel
from tests.solver.engines.engine_testing import ARCHITECTURES, PROMPTS, TOOL_OUTPUT, Collector, tiny_model

FP8_KV = dict(kv_cache_dtype="fp8")


def fp8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-448, 448).to(torch.float8_e4m3fn).to(x.dtype)


@contextlib.contextmanager
def kv_rounded_to_fp8(model):
    """transformers' own forward, with keys rounded after RoPE and values after v_proj."""
    module = {"llama": llama_module, "qwen2": qwen2_module}[model.config.model_type]
    original = module.apply_rotary_pos_emb

    def rope_then_round(q, k, *args, **kwargs):
        q, k = original(q, k, *args, **kwargs)
        return q, fp8(k)

    hooks = [layer.self_attn.v_proj.register_forward_hook(lambda _m, _i, out: fp8(out)) for layer in model.model.layers]
    module.apply_rotary_pos_emb = rope_then_round
    try:
        yield
    finally:
        module.apply_rotary_pos_emb = original
        for hook in hooks:
            hook.remove()


def generate(model, token_ids: tuple[int, ...], max_new_tokens: int, rounded: bool = True) -> list[int]:
    input_ids = torch.tensor([token_ids])
    with kv_rounded_to_fp8(model) if rounded else contextlib.nullcontext(), torch.inference_mode():
        output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens, do_sample=False)
    return output[0, len(token_ids) :].tolist()


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def model(request):
    return tiny_model(request.param)


def test_fp8_cache_takes_one_byte_per_value_and_equals_generate_with_rounded_kv(model):
    engine = NativeEngine(model, config=EngineConfig(**FP8_KV))
    keys, values = engine.runner.kv_cache[0]
    assert keys.dtype == values.dtype == torch.float8_e4m3fn
    run = Collector(engine)
    for name, prompt in PROMPTS.items():
        engine.add(Request(name, prompt, SamplingParams(max_tokens=24, temperature=0.0)))
    run.run()
    expected = {name: generate(model, prompt, 24) for name, prompt in PROMPTS.items()}
    assert run.tokens == expected
    # The rounding is visible: without it transformers continues differently somewhere.
    assert any(generate(model, p, 24, rounded=False) != expected[n] for n, p in PROMPTS.items())
    assert engine.num_used_blocks() == 0


def test_fp8_cache_with_shared_prefix_blocks(model):
    engine = NativeEngine(model, config=EngineConfig(block_size=4, **FP8_KV))
    run = Collector(engine)
    for i in range(3):
        engine.add(Request(f"s{i}", PROMPTS["long"], SamplingParams(max_tokens=16, temperature=0.0)))
    run.run()
    assert run.tokens["s0"] == run.tokens["s1"] == run.tokens["s2"] == generate(model, PROMPTS["long"], 16)


def test_fp8_cache_across_a_tool_call_continuation(model):
    engine = NativeEngine(model, config=EngineConfig(**FP8_KV))
    prompt = PROMPTS["medium"]
    first = generate(model, prompt, 20)
    stop_at = next(i for i in range(2, len(first)) if first[i] not in first[:i])
    run = Collector(engine)
    engine.add(Request("a", prompt, SamplingParams(max_tokens=20, temperature=0.0, stop_token_ids=(first[stop_at],))))
    run.run()
    assert run.finish["a"] == "stop" and run.tokens["a"] == first[: stop_at + 1]
    engine.extend("a", TOOL_OUTPUT, SamplingParams(max_tokens=12, temperature=0.0))
    run.resume("a")
    run.run()
    context = prompt + tuple(first[: stop_at + 1]) + TOOL_OUTPUT
    assert run.tokens["a"][stop_at + 1 :] == generate(model, context, 12)
    assert engine.num_used_blocks() == 0


def test_unknown_kv_cache_dtype_is_refused():
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        EngineConfig(kv_cache_dtype="int4")


def test_decode_kernel_settings_follow_the_cache_dtype_unless_given():
    assert EngineConfig().plain_decode_kernel() == DecodeKernel()
    assert EngineConfig(kv_cache_dtype="fp8").plain_decode_kernel() == DecodeKernel(prefetch=True, programs_per_sm=2)
    given = DecodeKernel(num_stages=3)
    assert EngineConfig(kv_cache_dtype="fp8", decode_kernel=given).plain_decode_kernel() is given
