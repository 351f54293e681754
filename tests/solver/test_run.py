"""A whole run: resume after an interruption, failures recorded, budget exhaustion.

Run: python -m pytest tests/solver/test_run.py -q
"""

import json

import pytest

from solver.budget import BudgetPolicy
from solver.config import SolverConfig, ToolConfig
from solver.engines.scripted import ScriptedEngine
from solver.orchestrator import Orchestrator
from solver.problems import Problem
from solver.run import Runner
from solver.runlog import RunLog
from solver.tokenizer import byte_tokenizer

TOKENIZER = byte_tokenizer()
PROBLEMS = [Problem(f"q{i}", f"problem {i}", i) for i in range(4)]


class InterruptingOrchestrator:
    """Wraps an orchestrator; raises KeyboardInterrupt when asked to solve `interrupt_on`."""

    def __init__(self, inner, interrupt_on=None, fail_on=None):
        self.inner, self.interrupt_on, self.fail_on = inner, interrupt_on, fail_on
        self.solved = []

    def solve(self, problem, allowance_s=None):
        if problem.id == self.interrupt_on:
            raise KeyboardInterrupt
        if problem.id == self.fail_on:
            raise RuntimeError("engine exploded")
        self.solved.append(problem.id)
        return self.inner.solve(problem, allowance_s)


def orchestrator():
    # every sample answers the problem's index, read back from the prompt text
    def script(request):
        text = TOKENIZER.decode(request.prompt_token_ids)
        return f"\\boxed{{{text.split('problem ')[-1][0]}}}"

    config = SolverConfig(num_samples=2, consensus=None, tools=ToolConfig(enabled=False))
    return Orchestrator(ScriptedEngine(TOKENIZER, script, tokens_per_step=8), TOKENIZER, config)


def runner(tmp_path, orchestrator, **kwargs):
    return Runner(orchestrator, RunLog(tmp_path / "log.jsonl"), tmp_path / "submission.csv", BudgetPolicy(**kwargs), fallback_answer=999, show_progress=False)


def test_interrupted_run_keeps_answers_and_resumes_where_it_stopped(tmp_path):
    first = InterruptingOrchestrator(orchestrator(), interrupt_on="q2")
    with pytest.raises(KeyboardInterrupt):
        runner(tmp_path, first).run(PROBLEMS, {})
    assert (tmp_path / "submission.csv").read_text() == "id,answer\nq0,0\nq1,1\nq2,999\nq3,999\n"

    second = InterruptingOrchestrator(orchestrator())
    summary = runner(tmp_path, second).run(PROBLEMS, {})
    assert second.solved == ["q2", "q3"]
    assert summary.num_resumed == 2 and summary.num_solved == 2
    assert summary.num_correct == 4
    assert (tmp_path / "submission.csv").read_text() == "id,answer\nq0,0\nq1,1\nq2,2\nq3,3\n"


def test_a_changed_problem_text_is_solved_again(tmp_path):
    runner(tmp_path, orchestrator()).run(PROBLEMS[:1], {})
    again = InterruptingOrchestrator(orchestrator())
    runner(tmp_path, again).run([Problem("q0", "problem 5", 5)], {})
    assert again.solved == ["q0"]


def test_a_failing_problem_is_recorded_and_the_run_goes_on(tmp_path, capsys):
    failing = InterruptingOrchestrator(orchestrator(), fail_on="q1")
    summary = runner(tmp_path, failing).run(PROBLEMS, {})
    assert summary.num_errors == 1
    assert (tmp_path / "submission.csv").read_text() == "id,answer\nq0,0\nq1,999\nq2,2\nq3,3\n"
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    failed = [r for r in records if r.get("problem_id") == "q1"][0]
    assert failed["error"] == "RuntimeError: engine exploded" and failed["answer_source"] == "fallback"
    assert "engine exploded" in capsys.readouterr().err
    # the failed problem is retried on the next run
    retry = InterruptingOrchestrator(orchestrator())
    runner(tmp_path, retry).run(PROBLEMS, {})
    assert retry.solved == ["q1"]


def test_spent_budget_gives_fallback_at_once(tmp_path):
    spent = InterruptingOrchestrator(orchestrator())
    summary = runner(tmp_path, spent, time_limit_s=10, margin_s=1).run(PROBLEMS, {}, start_s=-100.0)
    assert spent.solved == []
    assert summary.num_unsolved == 4
    assert (tmp_path / "submission.csv").read_text().count("999") == 4


def test_allowances_passed_to_problems_stay_within_the_limit(tmp_path):
    seen = []

    class Recording(InterruptingOrchestrator):
        def solve(self, problem, allowance_s=None):
            seen.append(allowance_s)
            return super().solve(problem, allowance_s)

    runner(tmp_path, Recording(orchestrator()), time_limit_s=40, margin_s=2).run(PROBLEMS, {})
    assert all(a is not None and 0 < a <= 38 / 4 * 1.6 + 1e-6 for a in seen)
