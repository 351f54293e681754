"""Tiny random Llama and Qwen2 models and helpers shared by the engine tests (CPU, float32).

Imported by tests/solver/engines/test_hf.py and tests/solver/engines/native/*.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from solver.engines.base import Delta, Engine, Request, SamplingParams
from solver.tokenizer import TOOL_CALL_END, TOOL_CALL_START, byte_tokenizer

TOKENIZER = byte_tokenizer()
GREEDY = SamplingParams(max_tokens=12, temperature=0.0)
PROMPTS = {
    "short": tuple(TOKENIZER.encode("1+1=")),
    "medium": tuple(TOKENIZER.encode("<|im_start|>user\nWhat is 7*6?<|im_end|>\n")),
    "long": tuple(TOKENIZER.encode("Find all integers n such that n^2 + 1 divides n^3 + 3.")),
}


TOOL_OUTPUT = tuple(TOKENIZER.encode(f"{TOOL_CALL_START}x=42{TOOL_CALL_END}\n```output\n42\n```\n"))
ARCHITECTURES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


def tiny_model(architecture: str, max_position_embeddings: int = 512):
    shape = dict(
        vocab_size=len(TOKENIZER),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=TOKENIZER.pad_token_id,
        # Larger than the default 0.02, so attention is sharp and a wrong position or mask
        # changes the greedy tokens.
        initializer_range=0.3,
    )
    config_class, model_class = ARCHITECTURES[architecture]
    torch.manual_seed(0)
    model = model_class(config_class(**shape)).eval()
    model.generation_config.eos_token_id = None
    return model


_REFERENCES: dict = {}


def reference(model, token_ids: tuple[int, ...], max_new_tokens: int) -> list[int]:
    """Greedy continuation by transformers' own `generate` (memoised per model)."""
    key = (id(model), tuple(token_ids), max_new_tokens)
    if key not in _REFERENCES:
        input_ids = torch.tensor([token_ids])
        with torch.inference_mode():
            output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens, do_sample=False)
        _REFERENCES[key] = output[0, len(token_ids) :].tolist()
    return _REFERENCES[key]


class Collector:
    """Runs an engine to completion and checks the per-delta guarantees on the way."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.tokens: dict[str, list[int]] = {}
        self.finish: dict[str, str] = {}
        self.steps: list[list[Delta]] = []

    def step(self) -> list[Delta]:
        deltas = self.engine.step()
        assert len({d.request_id for d in deltas}) == len(deltas), "one delta per request per step"
        for delta in deltas:
            assert delta.request_id not in self.finish, f"{delta.request_id} yielded after finishing"
            self.tokens.setdefault(delta.request_id, []).extend(delta.token_ids)
            if delta.is_finished:
                self.finish[delta.request_id] = delta.finish_reason
        self.steps.append(deltas)
        return deltas

    def run(self, max_steps: int = 500) -> None:
        for _ in range(max_steps):
            if not self.engine.has_work():
                return
            self.step()
        raise AssertionError("engine did not finish")

    def resume(self, request_id: str) -> None:
        del self.finish[request_id]


def first_new_position(tokens: list[int]) -> int:
    """An index whose token does not occur earlier, so stopping on it stops exactly there."""
    return next(i for i in range(2, len(tokens)) if tokens[i] not in tokens[:i])


def stop_then_extend(engine: Engine, model, stop_at: int, max_tokens: int, continuation: SamplingParams,
                     on_pause: Callable[[], None] = lambda: None) -> Collector:  # fmt: skip
    """The tool-call round trip every engine must get exactly right: request "a" (PROMPTS["medium"],
    greedy) stops on its token at `stop_at` while "b" runs on; after `on_pause()` it is extended
    with TOOL_OUTPUT and must go on as `generate` from its prompt, its tokens and TOOL_OUTPUT,
    prefilling only the stop token (sampled, never fed) and TOOL_OUTPUT; "b" stays exact."""
    prompt = PROMPTS["medium"]
    expected = reference(model, prompt, max_tokens)
    run = Collector(engine)
    engine.add(Request("a", prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0, stop_token_ids=(expected[stop_at],))))
    engine.add(Request("b", PROMPTS["long"], SamplingParams(max_tokens=40, temperature=0.0)))
    while "a" not in run.finish:
        run.step()
    assert run.finish["a"] == "stop" and run.tokens["a"] == expected[: stop_at + 1]
    on_pause()
    prefilled_before = engine.stats.num_prefill_tokens
    engine.extend("a", TOOL_OUTPUT, continuation)
    run.resume("a")
    start = len(run.tokens["a"])
    run.run()
    generated = tuple(run.tokens["a"][:start])
    assert run.tokens["a"][start:] == reference(model, prompt + generated + TOOL_OUTPUT, continuation.max_tokens)
    assert engine.stats.num_prefill_tokens - prefilled_before == 1 + len(TOOL_OUTPUT)
    assert run.tokens["b"] == reference(model, PROMPTS["long"], 40)
    return run
