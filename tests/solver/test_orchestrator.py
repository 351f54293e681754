"""One problem through the orchestrator on the scripted engine: early stop, votes, deadlines.

Run: python -m pytest tests/solver/test_orchestrator.py -q
"""

import time


from solver.config import SolverConfig, ToolConfig
from solver.engines.replay import problem_and_index
from solver.engines.scripted import ScriptedEngine
from solver.orchestrator import Orchestrator
from solver.problems import Problem
from solver.stopping import Consensus
from solver.tokenizer import byte_tokenizer

TOKENIZER = byte_tokenizer()
PROBLEM = Problem("p1", "What is 2+2?", 4)


def engine_for(completions, tokens_per_step=1, step_delay_s=0.0):
    """Sample k streams completions[k]."""
    return ScriptedEngine(TOKENIZER, lambda request: completions[problem_and_index(request.request_id)[1]], tokens_per_step, step_delay_s)


def config(**kwargs):
    kwargs.setdefault("consensus", None)
    kwargs.setdefault("tools", ToolConfig(enabled=False))
    return SolverConfig(**kwargs)


def padded(answer, length):
    """A completion of about `length` tokens ending in a box."""
    box = f"\\boxed{{{answer}}}"
    return "x" * max(0, length - len(box)) + box


def test_votes_and_writes_one_record_per_sample():
    completions = [padded(4, 20), padded(4, 30), padded(5, 25), "no answer"]
    result = Orchestrator(engine_for(completions), TOKENIZER, config(num_samples=4)).solve(PROBLEM)
    assert result.answer == 4 and result.answer_source == "vote"
    assert result.votes == {4: 2, 5: 1}
    assert result.stop_reason == "all_done"
    assert [s.finish_reason for s in result.samples] == ["stop"] * 4
    assert result.samples[3].answer is None


def test_distinct_seeds_per_sample_and_request_ids_name_problem_and_index():
    engine = engine_for([padded(1, 5)] * 4)
    result = Orchestrator(engine, TOKENIZER, config(num_samples=4)).solve(PROBLEM)
    assert len({s.seed for s in result.samples}) == 4
    assert [s.request_id for s in result.samples] == [f"p1#{i}" for i in range(4)]


def test_first_k_aborts_the_rest_in_the_engine():
    completions = [padded(i, 10 + 10 * i) for i in range(6)]
    engine = engine_for(completions)
    result = Orchestrator(engine, TOKENIZER, config(num_samples=6, stop_after=2)).solve(PROBLEM)
    assert result.stop_reason == "first_k"
    assert [s.finish_reason for s in result.samples] == ["stop", "stop"] + ["aborted"] * 4
    assert set(engine.aborted) >= {f"p1#{i}" for i in range(2, 6)}
    assert not engine.has_work()
    assert all(s.num_generated_tokens < len(completions[s.index]) for s in result.samples[2:])
    assert result.votes == {0: 1, 1: 1}  # aborted samples do not vote


def test_consensus_stops_once_the_first_answers_agree():
    completions = [padded(7, 10), padded(7, 12), padded(7, 14), padded(9, 200), padded(9, 220)]
    engine = engine_for(completions)
    result = Orchestrator(engine, TOKENIZER, config(num_samples=5, consensus=Consensus(3, 3))).solve(PROBLEM)
    assert result.stop_reason == "consensus"
    assert result.answer == 7
    assert {"p1#3", "p1#4"} <= set(engine.aborted)


def test_deadline_cuts_samples_and_their_boxes_still_vote():
    completions = ["\\boxed{8}" + "x" * 10_000] * 3
    engine = engine_for(completions, step_delay_s=0.005)
    started = time.monotonic()
    result = Orchestrator(engine, TOKENIZER, config(num_samples=3)).solve(PROBLEM, allowance_s=0.2)
    assert time.monotonic() - started < 1.0
    assert result.stop_reason == "deadline"
    assert [s.finish_reason for s in result.samples] == ["deadline"] * 3
    assert result.answer == 8
    assert len(engine.aborted) == 3


def test_length_limit_is_reported_and_fallback_used_when_nobody_answered():
    engine = engine_for(["y" * 100] * 2)
    result = Orchestrator(engine, TOKENIZER, config(num_samples=2, max_new_tokens=10, fallback_answer=123)).solve(PROBLEM)
    assert [s.finish_reason for s in result.samples] == ["length", "length"]
    assert [s.num_generated_tokens for s in result.samples] == [10, 10]
    assert result.answer == 123 and result.answer_source == "fallback"


def test_engine_errors_become_sample_errors_not_exceptions():
    def script(request):
        raise LookupError("no script for this request")

    engine = ScriptedEngine(TOKENIZER, script)
    result = Orchestrator(engine, TOKENIZER, config(num_samples=2)).solve(PROBLEM)
    assert [s.finish_reason for s in result.samples] == ["error", "error"]
    assert "no script" in result.samples[0].error
    assert result.answer_source == "fallback"


def test_answers_are_reduced_by_the_modulus():
    engine = engine_for([padded(1070, 12)])
    result = Orchestrator(engine, TOKENIZER, config(num_samples=1)).solve(PROBLEM)
    assert result.answer == 70


def test_record_matches_the_documented_run_log_fields():
    result = Orchestrator(engine_for([padded(4, 10)]), TOKENIZER, config(num_samples=1)).solve(PROBLEM)
    record = result.record()
    assert {"kind", "problem_id", "problem_sha", "answer", "votes", "stop_reason", "samples", "is_correct"} <= set(record)
    assert record["is_correct"] is True
    sample = record["samples"][0]
    assert sample["text"].startswith("x\\boxed") and sample["boxed"] == "4" and sample["num_generated_tokens"] > 0


def test_record_holds_this_problems_share_of_the_engine_counters():
    engine = engine_for([padded(4, 10)] * 2)
    orchestrator = Orchestrator(engine, TOKENIZER, config(num_samples=2))
    first = orchestrator.solve(PROBLEM)
    second = orchestrator.solve(Problem("p2", "What is 2+2?", 4))
    prompt_tokens = first.record()["engine_counters"]["num_prefill_tokens"]
    assert prompt_tokens > 0
    assert second.record()["engine_counters"]["num_prefill_tokens"] == prompt_tokens  # not cumulative
