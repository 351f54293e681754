"""A whole run: every problem of a file through the orchestrator, inside the time budget.

Guarantees:
- the submission file exists from the start and is rewritten (atomically) after every
  problem, with the fallback answer for problems not solved yet, so it is complete and valid
  whenever the run stops: finished, out of time, crashed or interrupted;
- every finished problem is in the run log before the next one starts; with `resume`, problems
  already in the log (same id and same text) are not solved again;
- an exception while solving one problem is recorded for that problem (fallback answer,
  `error` in its record, traceback on stderr) and the run goes on;
- once the time budget is spent, the remaining problems get the fallback answer at once.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .budget import BudgetPolicy, TimeBudget
from .orchestrator import Orchestrator, ProblemResult
from .problems import Problem, write_answers
from .runlog import RunLog, now_iso


@dataclass
class RunSummary:
    answers: dict[str, int] = field(default_factory=dict)
    num_solved: int = 0  # solved in this run
    num_resumed: int = 0  # taken from the run log
    num_unsolved: int = 0  # fallback: out of time
    num_errors: int = 0
    num_voted: int = 0  # solved in this run with a voted answer (not the fallback)
    num_correct: int = 0
    num_with_expected: int = 0
    num_generated_tokens: int = 0
    wall_s: float = 0.0

    @property
    def accuracy(self) -> float | None:
        return self.num_correct / self.num_with_expected if self.num_with_expected else None


@dataclass
class Runner:
    orchestrator: Orchestrator
    runlog: RunLog
    out_path: Path
    policy: BudgetPolicy
    fallback_answer: int = 0
    resume: bool = True
    show_progress: bool = True
    clock: Callable[[], float] = time.monotonic

    def run(self, problems: list[Problem], run_config: dict, start_s: float | None = None) -> RunSummary:
        start_s = self.clock() if start_s is None else start_s
        summary = RunSummary()
        self._take_resumed(problems, summary)
        todo = [p for p in problems if p.id not in summary.answers]
        self._write(problems, summary)
        self.runlog.start_run(run_config)
        budget = TimeBudget(self.policy, len(todo), start_s=start_s, now_s=self.clock())
        bar = tqdm(total=len(problems), initial=summary.num_resumed, desc="problems", unit="problem", disable=not self.show_progress, file=sys.stderr)
        try:
            for problem in todo:
                if budget.is_exhausted(self.clock()):
                    summary.num_unsolved += 1
                    continue
                self._solve_one(problem, budget, summary)
                self._write(problems, summary)
                bar.update(1)
                bar.set_postfix_str(_postfix(summary, self.clock() - start_s), refresh=False)
        finally:
            bar.close()
            self._write(problems, summary)
            summary.wall_s = self.clock() - start_s
        return summary

    def _take_resumed(self, problems: list[Problem], summary: RunSummary) -> None:
        if not self.resume:
            return
        solved = self.runlog.solved()
        for problem in problems:
            record = solved.get(problem.id)
            if record is not None and record.get("problem_sha") == problem.sha:
                summary.answers[problem.id] = int(record["answer"])
                summary.num_resumed += 1
                _count_correct(summary, problem, int(record["answer"]))

    def _solve_one(self, problem: Problem, budget: TimeBudget, summary: RunSummary) -> None:
        started = self.clock()
        allowance_s = budget.allowance_s(started)
        try:
            result = self.orchestrator.solve(problem, allowance_s)
            record = result.record()
            summary.num_generated_tokens += result.num_generated_tokens
        except Exception as exc:  # one problem's failure must not end the run
            traceback.print_exc(file=sys.stderr)
            record = error_record(problem, self.fallback_answer, allowance_s, self.clock() - started, exc)
            summary.num_errors += 1
        self.runlog.append(record)
        summary.num_voted += record["answer_source"] == "vote"
        budget.record(self.clock() - started)
        summary.answers[problem.id] = record["answer"]
        summary.num_solved += 1
        _count_correct(summary, problem, record["answer"])

    def _write(self, problems: list[Problem], summary: RunSummary) -> None:
        write_answers(self.out_path, problems, summary.answers, self.fallback_answer)


def _count_correct(summary: RunSummary, problem: Problem, answer: int) -> None:
    if problem.expected_answer is not None:
        summary.num_with_expected += 1
        summary.num_correct += int(answer == problem.expected_answer)


def _postfix(summary: RunSummary, elapsed_s: float) -> str:
    parts = [f"voted={summary.num_voted}/{summary.num_solved}", f"tok/s={summary.num_generated_tokens / max(elapsed_s, 1e-9):.0f}"]
    if summary.num_with_expected:
        parts.insert(0, f"correct={summary.num_correct}/{summary.num_with_expected}")
    return " ".join(parts)


def error_record(problem: Problem, fallback: int, allowance_s: float | None, wall_s: float, exc: Exception) -> dict:
    result = ProblemResult(problem, fallback, "fallback", {}, "error", allowance_s, wall_s, now_iso(), [], error=f"{exc.__class__.__name__}: {exc}")
    return result.record()
