"""Overlapped decode (CPU, float32): queuing step N+1 before reading step N's tokens changes
nothing a request sees. Token for token equal to plain decoding with sampled and greedy rows,
stop tokens and tool-call continuations, rows the host finishes with the full sort, aborts
while a step is queued; block accounting returns to empty.

Run: pytest tests/solver/engines/native/test_overlap.py -q
"""

from __future__ import annotations

import pytest

from solver.engines import sampling
from solver.engines.base import Request, SamplingParams
from solver.engines.native import EngineConfig, NativeEngine
from tests.solver.engines.engine_testing import ARCHITECTURES, PROMPTS, TOOL_OUTPUT, Collector, reference, tiny_model

STOPS = tuple(range(0, 300, 9))  # about one token in nine stops a sampled row


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def model(request):
    return tiny_model(request.param)


def transcript(model, overlap: bool) -> tuple[dict, dict, NativeEngine]:
    engine = NativeEngine(model, config=EngineConfig(overlap_decode=overlap, max_num_seqs=8))
    return (*run_with_tool_calls(engine), engine)


def run_with_tool_calls(engine: NativeEngine) -> tuple[dict, dict]:
    """Six sampled and two greedy requests; each stop is answered with TOOL_OUTPUT (twice at
    most), as the solver answers a tool call. Returns tokens and finish reasons per request
    (and the continuations made, under "extends"). Also run on the GPU by bench/engine.py."""
    prompts = list(PROMPTS.values())
    params = {}
    for i in range(6):
        params[f"s{i}"] = SamplingParams(max_tokens=10 + 3 * i, temperature=1.0, top_p=0.9, seed=i, stop_token_ids=STOPS)
    for i in range(2):
        params[f"g{i}"] = SamplingParams(max_tokens=14, temperature=0.0, stop_token_ids=STOPS[1:4])
    for i, (name, p) in enumerate(params.items()):
        engine.add(Request(name, prompts[i % 3] + (i,), p))
    run, extends = Collector(engine), {}
    for _ in range(500):
        if not engine.has_work():
            break
        for delta in run.step():
            if delta.finish_reason == "stop" and extends.get(delta.request_id, 0) < 2:
                extends[delta.request_id] = extends.get(delta.request_id, 0) + 1
                engine.extend(delta.request_id, TOOL_OUTPUT, params[delta.request_id])
                run.resume(delta.request_id)
    for name in params:  # requests left paused on a stop keep their KV until aborted
        engine.abort(name)
    assert engine.num_used_blocks() == 0
    return run.tokens, {**run.finish, "extends": extends}


def test_overlapped_decode_equals_plain_decode_token_for_token(model):
    plain_tokens, plain_finish, _ = transcript(model, overlap=False)
    tokens, finish, _ = transcript(model, overlap=True)
    assert finish == plain_finish and tokens == plain_tokens
    assert sum(finish["extends"].values()) >= 4, "the workload must exercise stops and continuations"


def test_rows_left_to_the_full_sort_are_fed_again_with_the_same_draws(model, monkeypatch):
    # With two candidates nearly every sampled row misses top-p: the device feeds a placeholder
    # to the queued step, which must void that row and rewind its draw.
    monkeypatch.setattr(sampling, "NUCLEUS_CANDIDATES", 2)
    plain_tokens, plain_finish, _ = transcript(model, overlap=False)
    tokens, finish, engine = transcript(model, overlap=True)
    assert engine.stats.extra["sampling_fallback_rows"] > 20
    assert finish == plain_finish and tokens == plain_tokens


def test_queued_steps_feed_tokens_on_the_device(model):
    engine = NativeEngine(model, config=EngineConfig())
    feeds = []
    decode = engine.runner.decode
    engine.runner.decode = lambda seqs, sampling=None, feed=None: feeds.append(feed) or decode(seqs, sampling, feed)
    engine.add(Request("a", PROMPTS["long"], SamplingParams(max_tokens=20, temperature=0.0)))
    run = Collector(engine)
    run.run()
    assert run.tokens["a"] == reference(model, PROMPTS["long"], 20)
    assert len(feeds) == 19 and sum(f == [0] for f in feeds) == 18  # every step after the first takes row 0 of the one before
    assert engine.stats.num_decode_steps == 19


def test_abort_while_a_step_is_queued_yields_nothing_more_and_frees_everything(model):
    engine = NativeEngine(model, config=EngineConfig())
    run = Collector(engine)
    for name in ("a", "b", "c"):
        engine.add(Request(name, PROMPTS["long"] if name != "b" else PROMPTS["medium"], SamplingParams(max_tokens=25, temperature=0.0)))
    for _ in range(6):
        run.step()
    engine.abort("b")
    aborted_at = len(run.tokens.get("b", []))
    run.run()
    assert len(run.tokens.get("b", [])) == aborted_at and "b" not in run.finish
    assert run.tokens["a"] == run.tokens["c"] == reference(model, PROMPTS["long"], 25)
    assert engine.num_used_blocks() == 0


def test_a_failed_step_ends_its_rows_with_an_error_and_the_engine_goes_on(model):
    engine = NativeEngine(model, config=EngineConfig())
    decode, calls = engine.runner.decode, []

    def failing_once(seqs, sampling=None, feed=None):
        calls.append(len(seqs))
        if len(calls) == 4:
            raise RuntimeError("CUDA out of memory (simulated)")
        return decode(seqs, sampling, feed)

    engine.runner.decode = failing_once
    run = Collector(engine)
    for name in ("a", "b"):
        engine.add(Request(name, PROMPTS["long"], SamplingParams(max_tokens=25, temperature=0.0)))
    run.run()
    expected = reference(model, PROMPTS["long"], 25)
    for name in ("a", "b"):  # the steps before the failure were delivered, then the error
        assert run.finish[name] == "error" and run.tokens[name] == expected[: len(run.tokens[name])]
        assert len(run.tokens[name]) == 4  # the prefill's token and those of the 3 good decode steps
    assert engine.num_used_blocks() == 0
    engine.add(Request("c", PROMPTS["short"], SamplingParams(max_tokens=6, temperature=0.0)))
    run.run()
    assert run.tokens["c"] == reference(model, PROMPTS["short"], 6) and run.finish["c"] == "length"
