"""Kaggle gateway mode: `predict(id_, question)` for an AIMO-style evaluation API.

The gateway sends one problem per call, in an order it shuffled, and waits for a one-row
`polars.DataFrame({"id": ..., "answer": int})` before sending the next. `Gateway` answers it
with one `Orchestrator` built (and its model loaded) once by the caller, reused for every call,
a `TimeBudget` over the number of problems announced up front (AIMO-2: 50 in 5 hours) counted
from the run's start, and the run log, which gets a `run` record at the start and each problem's
record as it ends (so `python -m solver.report` works on a gateway run).

Guarantees: `predict` never raises on a solver failure (the failure is logged and the fallback
answer returned: an exception would end a Kaggle submission); once the run's time is spent it
answers the fallback at once. `serve(predict)` uses the competition's `kaggle_evaluation`
package when importable, else `run_local_gateway`, a stand-in with the same calling convention.
Not covered: the real gateway's process split and gRPC transport, and its first-answer (15 min)
and per-answer (30 min) deadlines other than as checks after each call in the stand-in.
"""

from __future__ import annotations

import os
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import polars as pl

from .budget import BudgetPolicy, TimeBudget
from .orchestrator import Orchestrator
from .problems import Problem, read_problems
from .run import error_record
from .runlog import RunLog

AIMO_NUM_PROBLEMS = 50
PER_ANSWER_TIMEOUT_S = 30 * 60.0  # the AIMO-2 gateway's limit per answer after the first

Predict = Callable[..., pl.DataFrame]


class GatewayError(RuntimeError):
    """The stand-in gateway rejected a response or a deadline passed (Kaggle would fail the run)."""


class Gateway:
    """The solver behind `predict`: one orchestrator, one time budget, one run log for the whole run."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        runlog: RunLog,
        policy: BudgetPolicy,
        num_problems: int = AIMO_NUM_PROBLEMS,
        start_s: float | None = None,
        run_config: dict | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        now_s = clock()
        self.orchestrator = orchestrator
        self.runlog = runlog
        self.clock = clock
        self.budget = TimeBudget(policy, num_problems, start_s=now_s if start_s is None else start_s, now_s=now_s)
        self.answers: dict[str, int] = {}
        runlog.start_run(run_config or {})

    @property
    def fallback_answer(self) -> int:
        return self.orchestrator.config.fallback_answer

    def predict(self, id_, question, *other_columns) -> pl.DataFrame:
        """One problem in, one row out. Arguments: one-row DataFrames or Series, or plain values;
        the real gateway passes every column of the row, so an `answer` column is read as the
        expected answer (for the run log's accuracy) and any other column is ignored."""
        problem = Problem(str(one_value(id_)), str(one_value(question)).strip(), _expected(other_columns))
        self.answers[problem.id] = self.solve(problem)
        return pl.DataFrame({"id": [problem.id], "answer": [self.answers[problem.id]]}, schema={"id": pl.String, "answer": pl.Int64})

    def solve(self, problem: Problem) -> int:
        started_s = self.clock()
        if self.budget.is_exhausted(started_s):
            return self.fallback_answer
        allowance_s = self.budget.allowance_s(started_s)
        try:
            record = self.orchestrator.solve(problem, allowance_s).record()
        except Exception as exc:  # one problem's failure must not end the submission
            traceback.print_exc(file=sys.stderr)
            record = error_record(problem, self.fallback_answer, allowance_s, self.clock() - started_s, exc)
        self.runlog.append(record)
        self.budget.record(self.clock() - started_s)
        return int(record["answer"])


def make_predict(orchestrator: Orchestrator, runlog: RunLog, policy: BudgetPolicy, num_problems: int = AIMO_NUM_PROBLEMS, start_s: float | None = None, run_config: dict | None = None) -> Predict:
    return Gateway(orchestrator, runlog, policy, num_problems, start_s, run_config).predict


def one_value(value: object) -> object:
    """The single value of a one-row DataFrame (its first column) or one-item Series; plain values pass."""
    if isinstance(value, pl.DataFrame):
        value = value.to_series(0)
    if isinstance(value, pl.Series):
        if len(value) != 1:
            raise ValueError(f"predict expects one row, got {len(value)} in column {value.name!r}")
        return value.item()
    return value


def _expected(columns: tuple) -> int | None:
    """The value of an `answer` column among the extra columns, when the gateway sent one."""
    for column in columns:
        frame = column.to_frame() if isinstance(column, pl.Series) else column
        if isinstance(frame, pl.DataFrame) and "answer" in frame.columns:
            value = one_value(frame["answer"])
            return None if value is None else int(value)
    return None


# --- serving --------------------------------------------------------------------------------


def serve(predict: Predict, problems_path: str | Path = "reference.csv", seed: int | None = None, out_dir: str | Path = ".") -> None:
    """Kaggle's inference server when its package is importable, else the local stand-in."""
    try:
        from kaggle_evaluation.aimo_2_inference_server import AIMO2InferenceServer
    except ImportError:
        run_local_gateway(predict, problems_path, seed, out_dir)
        return
    server = AIMO2InferenceServer(predict)
    if os.getenv("KAGGLE_IS_COMPETITION_RERUN"):
        server.serve()
    else:
        server.run_local_gateway((str(problems_path),))


def run_local_gateway(
    predict: Predict,
    problems_path: str | Path,
    seed: int | None = None,
    out_dir: str | Path = ".",
    time_limit_s: float | None = None,
    per_answer_timeout_s: float = PER_ANSWER_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
) -> pl.DataFrame:
    """Like Kaggle's gateway: shuffle the problems (`seed`; None: from system entropy), call
    `predict(*row)` with each one-row slice's columns as Series, one call at a time, check each
    response and the deadlines, then write `submission.csv` and `submission.parquet` (id, answer)."""
    rows = _shuffled_rows(problems_path, seed)
    started_s = clock()
    answers = []
    for number, row in enumerate(rows):
        call_s = clock()
        response = predict(*row.get_columns())
        answers.append(_checked(response, row["id"].item()))
        _check_time(clock(), call_s, started_s, number, per_answer_timeout_s, time_limit_s)
    submission = pl.concat(answers)
    _write_submission(submission, Path(out_dir))
    return submission


def _shuffled_rows(problems_path: str | Path, seed: int | None) -> list[pl.DataFrame]:
    problems = read_problems(problems_path)  # checked like submission.py's input
    frame = pl.DataFrame({"id": [p.id for p in problems], "problem": [p.text for p in problems]})
    if any(p.expected_answer is not None for p in problems):
        frame = frame.with_columns(pl.Series("answer", [p.expected_answer for p in problems], dtype=pl.Int64))
    order = list(range(len(problems)))
    random.Random(seed if seed is not None else int.from_bytes(os.urandom(4), "big")).shuffle(order)
    return [frame[i : i + 1] for i in order]


def _checked(response: object, problem_id: str) -> pl.DataFrame:
    if not isinstance(response, pl.DataFrame) or response.columns != ["id", "answer"] or response.height != 1:
        raise GatewayError(f"predict for {problem_id!r} must return a one-row polars DataFrame with columns id, answer; got {response!r}")
    if str(response["id"].item()) != problem_id:
        raise GatewayError(f"predict for {problem_id!r} answered for id {response['id'].item()!r}")
    if not response["answer"].dtype.is_integer():
        raise GatewayError(f"predict for {problem_id!r} returned a non-integer answer ({response['answer'].dtype})")
    return response.select(pl.col("id").cast(pl.String), pl.col("answer").cast(pl.Int64))


def _check_time(now_s: float, call_s: float, started_s: float, number: int, per_answer_s: float, limit_s: float | None) -> None:
    if number > 0 and now_s - call_s > per_answer_s:  # the first answer may include model loading
        raise GatewayError(f"answer {number + 1} took {now_s - call_s:.0f} s, over the gateway's {per_answer_s:.0f} s per answer")
    if limit_s is not None and now_s - started_s > limit_s:
        raise GatewayError(f"the run took {now_s - started_s:.0f} s, over its {limit_s:.0f} s limit")


def _write_submission(submission: pl.DataFrame, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    submission.write_csv(out_dir / "submission.csv")
    submission.write_parquet(out_dir / "submission.parquet")
