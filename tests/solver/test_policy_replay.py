"""Policy replay against real runs: log a generous run, replay a stricter policy, run it for real.

Time is the engine's step count (the orchestrator's clock counts steps), so the logged timings
are exact: with one token per step, a sample of L tokens finishes at step L, and every sample
finishing in one step finishes "at once", as the orchestrator sees them. On wall-clock time the
replay and the real run would agree up to scheduling jitter; on steps they must agree exactly.

Run: python -m pytest tests/solver/test_policy_replay.py -q
"""

import pytest

from solver import policy_replay, stopping, vote
from solver.config import SolverConfig, ToolConfig
from solver.engines.replay import problem_and_index
from solver.engines.scripted import ScriptedEngine
from solver.orchestrator import Orchestrator
from solver.policy_replay import ReplayPolicy, replay_problem, tokens_at
from solver.problems import Problem
from solver.stopping import Consensus
from solver.tokenizer import byte_tokenizer

TOKENIZER = byte_tokenizer()
PROBLEM = Problem("p", "What is 3+4?", 7)


def padded(answer, length):
    """`length` characters (one token each) ending in a box; no box when answer is None."""
    box = "" if answer is None else f"\\boxed{{{answer}}}"
    return "x" * (length - len(box)) + box


# Finish order by length: 1 (3), 4 (7), 7 (9), 2 (7), 3 (no answer), 0 (7), 6 (7), 5 (3).
COMPLETIONS = [padded(7, 60), padded(3, 25), padded(7, 40), padded(None, 50), padded(7, 30), padded(3, 80), padded(7, 70), padded(9, 35)]


class SteppedEngine:
    """The scripted engine plus a clock that reads its step count."""

    def __init__(self, completions):
        script = lambda request: completions[problem_and_index(request.request_id)[1]]  # noqa: E731
        self.inner = ScriptedEngine(TOKENIZER, script, tokens_per_step=1)
        self.now_steps = 0.0

    def step(self):
        self.now_steps += 1
        return self.inner.step()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def solve(num_samples=8, stop_after=None, consensus=None, allowance_s=None, completions=COMPLETIONS):
    engine = SteppedEngine(completions)
    config = SolverConfig(num_samples=num_samples, stop_after=stop_after, consensus=consensus, tools=ToolConfig(enabled=False))
    return Orchestrator(engine, TOKENIZER, config, clock=lambda: engine.now_steps).solve(PROBLEM, allowance_s).record()


@pytest.fixture(scope="module")
def generous_log():
    record = solve()
    assert record["stop_reason"] == "all_done"
    return record


def outcome(record):
    """What a policy decides and costs: per sample (index, finish reason, answer, tokens, end)."""
    samples = [(s["index"], s["finish_reason"], s["answer"], s["num_generated_tokens"], s["finished_s"]) for s in record["samples"]]
    return record["answer"], record["votes"], record["stop_reason"], record["wall_s"], samples


STRICTER = [
    pytest.param({"stop_after": 3}, id="first-3-of-8: tie 3/7/9, first vote wins"),
    pytest.param({"consensus": Consensus(3, 5)}, id="consensus-3/5"),
    pytest.param({"consensus": Consensus(2, 3)}, id="consensus-2/3 never reached"),
    pytest.param({"num_samples": 4}, id="n=4"),
    pytest.param({"num_samples": 6, "stop_after": 4, "consensus": Consensus(2, 2)}, id="n=6 K=4 consensus=2/2"),
    pytest.param({"budget_s": 45.0}, id="budget between two finishes"),
    pytest.param({"budget_s": 41.0}, id="budget on a finishing step"),
    pytest.param({"budget_s": 20.0}, id="budget before any finish"),
    pytest.param({"stop_after": 6, "budget_s": 100.0}, id="K=6 inside a budget"),
]


@pytest.mark.parametrize("policy", STRICTER)
def test_replay_matches_a_real_run_with_that_policy(generous_log, policy):
    replayed = replay_problem(generous_log, ReplayPolicy(**policy))
    real = solve(
        num_samples=policy.get("num_samples", 8),
        stop_after=policy.get("stop_after"),
        consensus=policy.get("consensus"),
        allowance_s=policy.get("budget_s"),
    )
    assert outcome(replayed) == outcome(real)
    assert sum(s["num_generated_tokens"] for s in replayed["samples"]) == sum(s["num_generated_tokens"] for s in real["samples"])


def test_a_budget_between_steps_cuts_up_to_one_step_earlier_than_the_engine_does(generous_log):
    replayed = replay_problem(generous_log, ReplayPolicy(budget_s=20.5))
    real = solve(allowance_s=20.5)  # the orchestrator sees its deadline after step 21
    assert (replayed["wall_s"], real["wall_s"]) == (20.5, 21.0)
    assert replayed["stop_reason"] == real["stop_reason"] == "deadline"
    assert replayed["answer"] == real["answer"] == 0 and replayed["votes"] == real["votes"] == {}


def test_replay_of_the_generous_policy_is_the_log(generous_log):
    assert outcome(replay_problem(generous_log, ReplayPolicy())) == outcome(generous_log)


def test_stricter_policies_cost_fewer_tokens(generous_log):
    full = sum(s["num_generated_tokens"] for s in generous_log["samples"])
    strict = replay_problem(generous_log, ReplayPolicy(stop_after=3))
    assert sum(s["num_generated_tokens"] for s in strict["samples"]) < full
    assert [s["finish_reason"] for s in strict["samples"]].count("aborted") == 5


def test_waiting_for_samples_the_log_had_cut_stops_at_the_log_end():
    logged = solve(stop_after=2)  # samples 1 and 4 finished; the rest were aborted at step 31
    replayed = replay_problem(logged, ReplayPolicy(stop_after=5))
    assert replayed["stop_reason"] == "log_end"
    assert replayed["samples"] == logged["samples"]
    assert replayed["votes"] == logged["votes"]


def test_a_replay_cannot_use_more_samples_than_were_logged(generous_log):
    with pytest.raises(ValueError, match="8 logged samples"):
        replay_problem(generous_log, ReplayPolicy(num_samples=9))


def test_a_failed_problem_stays_failed():
    record = {"problem_id": "p", "error": "RuntimeError: x", "answer": 0, "samples": [], "stop_reason": "error"}
    assert replay_problem(record, ReplayPolicy(stop_after=1)) is record


def test_the_replay_uses_the_solvers_own_rules():
    assert policy_replay.stop_reason is stopping.stop_reason
    assert policy_replay.majority is vote.majority


@pytest.mark.parametrize(
    "at_s, tokens",
    [(0.5, 0), (1.0, 1), (4.0, 4), (7.6, 8), (10.0, 10), (99.0, 10)],
)
def test_tokens_grow_linearly_from_the_first_token_to_the_end(at_s, tokens):
    sample = {"num_generated_tokens": 10, "first_token_s": 1.0, "finished_s": 10.0}
    assert tokens_at(sample, at_s) == tokens


@pytest.mark.parametrize(
    "text, policy",
    [
        ("n=8 K=6 consensus=4/5 budget=60", ReplayPolicy(8, 6, Consensus(4, 5), 60.0)),
        ("K=6, budget=60s", ReplayPolicy(None, 6, None, 60.0)),
        ("consensus=off n=all", ReplayPolicy()),
    ],
)
def test_policy_text_round_trips(text, policy):
    assert ReplayPolicy.parse(text) == policy
    assert ReplayPolicy.parse(policy.label()) == policy


@pytest.mark.parametrize("text", ["k=3", "n=4 K=5", "budget=-1", "consensus=5/4", "n"])
def test_bad_policy_text_is_one_clear_error(text):
    with pytest.raises(ValueError):
        ReplayPolicy.parse(text)


def test_policy_of_a_logged_run_reads_its_stop_rules():
    config = {"solver": {"num_samples": 8, "stop_after": 6, "consensus": {"votes": 4, "window": 5}}}
    assert ReplayPolicy.of_run(config) == ReplayPolicy(None, 6, Consensus(4, 5), None)
    assert ReplayPolicy.of_run({}) == ReplayPolicy()
