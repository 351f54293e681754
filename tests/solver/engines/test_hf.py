"""HFEngine on tiny random Llama and Qwen2 models (CPU, float32): greedy output equals
`generate`, stop/length/extend/abort semantics, seeds, prefix sharing and queueing."""

from __future__ import annotations

import pytest
import torch

from solver.engines.base import Delta, Engine, Request, SamplingParams
from solver.engines.hf import HFEngine
from tests.solver.engines.engine_testing import (
    ARCHITECTURES,
    GREEDY,
    PROMPTS,
    TOKENIZER,
    Collector,
    first_new_position,
    reference,
    stop_then_extend,
    tiny_model,
)


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def model(request):
    return tiny_model(request.param)


def test_engine_satisfies_protocol(model):
    assert isinstance(HFEngine(model), Engine)


def test_greedy_alone_equals_generate(model):
    for name, prompt in PROMPTS.items():
        run = Collector(HFEngine(model))
        run.engine.add(Request(name, prompt, GREEDY))
        run.run()
        assert run.tokens[name] == reference(model, prompt, GREEDY.max_tokens)
        assert run.finish[name] == "length"


def test_greedy_batch_of_different_lengths_equals_generate(model):
    run = Collector(HFEngine(model))
    for name, prompt in PROMPTS.items():
        run.engine.add(Request(name, prompt, GREEDY))
    first = run.step()
    assert sorted(d.request_id for d in first) == sorted(PROMPTS)
    run.run()
    for name, prompt in PROMPTS.items():
        assert run.tokens[name] == reference(model, prompt, GREEDY.max_tokens), name


def test_request_joining_mid_flight_equals_generate(model):
    run = Collector(HFEngine(model))
    run.engine.add(Request("long", PROMPTS["long"], GREEDY))
    run.engine.add(Request("short", PROMPTS["short"], SamplingParams(max_tokens=4, temperature=0.0)))
    for _ in range(6):  # "short" has finished and left the batch; "long" is half way
        run.step()
    run.engine.add(Request("medium", PROMPTS["medium"], GREEDY))
    assert [d.request_id for d in run.step()] == ["long", "medium"]
    run.run()
    assert run.tokens["long"] == reference(model, PROMPTS["long"], GREEDY.max_tokens)
    assert run.tokens["short"] == reference(model, PROMPTS["short"], 4)
    assert run.tokens["medium"] == reference(model, PROMPTS["medium"], GREEDY.max_tokens)


def test_stop_token_ends_request_and_is_included(model):
    prompt = PROMPTS["medium"]
    expected = reference(model, prompt, 12)
    stop_at = first_new_position(expected)
    run = Collector(HFEngine(model))
    stop = SamplingParams(max_tokens=12, temperature=0.0, stop_token_ids=(expected[stop_at],))
    run.engine.add(Request("a", prompt, stop))
    run.run()
    assert run.tokens["a"] == expected[: stop_at + 1]
    assert run.finish["a"] == "stop"
    assert not run.engine.has_work()


def test_max_tokens_gives_length(model):
    run = Collector(HFEngine(model))
    run.engine.add(Request("a", PROMPTS["short"], SamplingParams(max_tokens=3, temperature=0.0)))
    run.run()
    assert len(run.tokens["a"]) == 3 and run.finish["a"] == "length"
    assert len(run.steps) == 3


def test_context_limit_gives_length_and_too_long_prompt_gives_error():
    model = tiny_model("llama", max_position_embeddings=16)
    run = Collector(HFEngine(model))
    run.engine.add(Request("fits", tuple(range(40, 50)), SamplingParams(max_tokens=100, temperature=0.0)))
    run.engine.add(Request("too-long", tuple(range(40, 57)), SamplingParams(max_tokens=100, temperature=0.0)))
    run.run()
    # The last generated token is never fed, so 10 prompt + 7 generated tokens use positions 0..15.
    assert run.finish["fits"] == "length" and len(run.tokens["fits"]) == 7
    assert run.finish["too-long"] == "error" and run.tokens["too-long"] == []


def test_extend_continues_as_if_appended_tokens_were_in_the_prompt(model):
    run = stop_then_extend(HFEngine(model), model, first_new_position(reference(model, PROMPTS["medium"], 12)), 12, GREEDY)
    assert run.finish["a"] == "length"


def test_extend_of_a_request_that_is_not_paused_is_refused(model):
    engine = HFEngine(model)
    engine.add(Request("a", PROMPTS["short"], GREEDY))
    with pytest.raises(ValueError, match="not paused"):
        engine.extend("a", (1,), GREEDY)
    with pytest.raises(ValueError, match="not paused"):
        engine.extend("unknown", (1,), GREEDY)


def test_abort_stops_deltas_at_once_is_idempotent_and_frees_kv(model):
    engine = HFEngine(model)
    run = Collector(engine)
    for name, prompt in PROMPTS.items():
        engine.add(Request(name, prompt, SamplingParams(max_tokens=30, temperature=0.0)))
    run.step()
    run.step()
    engine.abort("long")
    engine.abort("long")
    engine.abort("never-added")
    deltas = run.step()
    assert sorted(d.request_id for d in deltas) == ["medium", "short"]
    # The longest row is gone, so the batch narrows to the longest remaining row.
    width = len(PROMPTS["medium"]) + 2
    assert engine.num_kv_tokens() == 2 * width
    engine.abort("short")
    engine.abort("medium")
    assert not engine.has_work()
    assert engine.step() == []
    assert engine.num_kv_tokens() == 0
    assert "long" not in run.finish and "short" not in run.finish


def test_abort_frees_a_paused_request_and_it_cannot_be_extended(model):
    expected = reference(model, PROMPTS["short"], 12)
    engine = HFEngine(model)
    run = Collector(engine)
    stop = SamplingParams(max_tokens=12, temperature=0.0, stop_token_ids=(expected[0],))
    engine.add(Request("a", PROMPTS["short"], stop))
    run.run()
    assert run.finish["a"] == "stop"
    assert engine.num_kv_tokens() == len(PROMPTS["short"])
    engine.abort("a")
    assert engine.num_kv_tokens() == 0
    with pytest.raises(ValueError):
        engine.extend("a", (1,), GREEDY)


def sampled(engine: HFEngine, extra_requests: int, seed: int) -> list[int]:
    params = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=seed)
    prompts = list(PROMPTS.values())
    for i in range(extra_requests):
        other = SamplingParams(max_tokens=8 + i, temperature=1.0, seed=100 + i)
        engine.add(Request(f"other-{i}", prompts[i % 3] + (i,), other))
    engine.add(Request("x", PROMPTS["medium"], params))
    run = Collector(engine)
    run.run()
    return run.tokens["x"]


def test_same_seed_same_tokens_alone_or_in_a_batch(model):
    alone = sampled(HFEngine(model), 0, seed=7)
    in_batch = sampled(HFEngine(model), 8, seed=7)
    assert alone == in_batch
    assert sampled(HFEngine(model), 0, seed=8) != alone


def test_identical_prompts_added_together_are_prefilled_once(model):
    engine = HFEngine(model)
    run = Collector(engine)
    for i in range(4):
        engine.add(Request(f"s{i}", PROMPTS["long"], SamplingParams(max_tokens=8, temperature=0.0, seed=i)))
    run.step()
    assert engine.stats.num_prefill_tokens == len(PROMPTS["long"])
    assert engine.stats.num_cached_prompt_tokens == 3 * len(PROMPTS["long"])
    run.run()
    expected = reference(model, PROMPTS["long"], 8)
    assert all(run.tokens[f"s{i}"] == expected for i in range(4))


def test_max_batch_size_queues_the_rest_first_in_first_out(model):
    engine = HFEngine(model, max_batch_size=2)
    run = Collector(engine)
    lengths = {"a": 3, "b": 5, "c": 4, "d": 4}
    for i, (name, max_tokens) in enumerate(lengths.items()):
        engine.add(Request(name, PROMPTS["short"] + (i,), SamplingParams(max_tokens=max_tokens, temperature=0.0)))
    run.run()
    started = [next(n for n, step in enumerate(run.steps) if name in {d.request_id for d in step}) for name in lengths]
    # "a" gets its 3rd and last token in step 2 and "c" takes its slot in that same step;
    # "d" takes "b"'s slot in step 4.
    assert started == [0, 0, 2, 4]
    assert max(sum(not d.is_finished for d in deltas) for deltas in run.steps) == 2
    for i, (name, max_tokens) in enumerate(lengths.items()):
        assert run.tokens[name] == reference(model, PROMPTS["short"] + (i,), max_tokens)


def test_failed_prefill_is_an_error_delta_and_others_go_on(model, monkeypatch):
    poison = 99
    forward = model.forward

    def failing_forward(*args, input_ids, **kwargs):
        if (input_ids == poison).any():
            raise torch.OutOfMemoryError("simulated out of memory")
        return forward(*args, input_ids=input_ids, **kwargs)

    engine = HFEngine(model)
    monkeypatch.setattr(model, "forward", failing_forward)
    run = Collector(engine)
    engine.add(Request("good", PROMPTS["medium"], GREEDY))
    run.step()
    engine.add(Request("bad", (poison, 1, 2), GREEDY))
    deltas = run.step()
    assert Delta("bad", (), "error", "OutOfMemoryError: simulated out of memory") in deltas
    run.run()
    monkeypatch.undo()
    assert run.tokens["good"] == reference(model, PROMPTS["medium"], GREEDY.max_tokens)


def test_invalid_requests_are_refused(model):
    engine = HFEngine(model)
    engine.add(Request("a", (1, 2), GREEDY))
    with pytest.raises(ValueError, match="already in use"):
        engine.add(Request("a", (1, 2), GREEDY))
    with pytest.raises(ValueError, match="empty prompt"):
        engine.add(Request("b", (), GREEDY))
    with pytest.raises(ValueError, match="outside a vocabulary"):
        engine.add(Request("c", (len(TOKENIZER),), GREEDY))


def test_from_pretrained_loads_a_model_directory_on_cpu(tmp_path):
    tiny_model("qwen2").save_pretrained(tmp_path)
    engine = HFEngine.from_pretrained(tmp_path, device="cpu")
    assert engine.device.type == "cpu"
    assert next(engine.model.parameters()).dtype == torch.float32
    engine = HFEngine.from_pretrained(tmp_path, device="cpu", dtype="bfloat16")
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        HFEngine.from_pretrained(tmp_path, device="cpu", dtype="float99")
