"""Leaderboard and per-problem table over run logs, with replayed policies as extra rows.

`python -m solver.report RUNLOG [RUNLOG ...] --out DIR [--names ...] [--replay "K=6 consensus=4/5"]`
writes `leaderboard.md`, `leaderboard.csv`, `problems.csv`, `problems.md` and two PNG plots
(docs/evaluation.md defines every column). `write_report(runlogs, out_dir)` does the same from code.

Guarantees: one file is one run (a resumed run appends `run` records; the last problem record per
problem id wins); a problem record with `error` set counts as wrong, with no sample answering.
Every figure is computed from the problem records alone, so logged and replayed runs
(`solver.policy_replay`) get the same columns. The accuracy-against-budget curve of a run replays
its own stop rules with each budget, at every logged finish time (where the curve can change);
rows replayed with a budget of their own get no curve. Not covered: a run's model-loading time,
which the log does not hold (total seconds are the sum of the problems' seconds).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from .policy_replay import CUT_FINISH_REASONS, ReplayPolicy, replay_records
from . import vote
from .runlog import RunLog


@dataclass(frozen=True)
class Run:
    name: str
    config: dict  # the config of the log's last `run` record ({} when there is none)
    records: list[dict]  # one problem record per problem id: as logged, or replayed
    logged: list[dict]  # as logged (replays start from these)
    policy: ReplayPolicy  # the stop rules behind `records`

    @property
    def fallback_answer(self) -> int:
        return int(self.config.get("solver", {}).get("fallback_answer", 0))


def read_run(path: str | Path, name: str | None = None) -> Run:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: run log not found.")
    records = RunLog(path).read()
    configs = [r.get("config", {}) for r in records if r.get("kind") == "run"]
    problems = {str(r["problem_id"]): r for r in records if r.get("kind") == "problem" and "problem_id" in r}
    config = configs[-1] if configs else {}
    logged = list(problems.values())
    return Run(name or default_name(path), config, logged, logged, ReplayPolicy.of_run(config))


def default_name(path: str | Path) -> str:
    """`out/s.csv.runlog.jsonl` -> `s.csv`."""
    return Path(path).name.removesuffix(".jsonl").removesuffix(".runlog")


def replayed(run: Run, policy: ReplayPolicy) -> Run:
    records = replay_records(run.logged, policy, run.fallback_answer)
    return Run(f"{run.name} | {policy.label()}", run.config, records, run.logged, policy)


# --- metrics of one problem record --------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if n == 0 or k > n:
        return 0.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def is_correct(record: dict) -> bool:
    """The voted answer matched the expected one; a record with an error is wrong."""
    return record.get("error") is None and record.get("is_correct") is True


def ballot(sample: dict) -> int | None:
    """The sample's vote, by the orchestrator's rule (aborted and errored samples have none)."""
    return vote.ballot(sample["answer"], sample["finish_reason"])


def num_answered(record: dict) -> int:
    return 0 if record.get("error") else sum(ballot(s) is not None for s in record["samples"])


def num_correct_samples(record: dict) -> int:
    expected = record.get("expected_answer")
    return sum(expected is not None and ballot(s) == expected for s in record["samples"])


def tokens_saved(record: dict) -> int:
    """Estimated tokens early stopping saved: for each aborted sample, the mean length of the
    problem's finished samples (stop/length) minus what it generated, floored at 0; 0 when no
    sample finished. Shorter samples finish first, so this is an underestimate."""
    lengths = [s["num_generated_tokens"] for s in record["samples"] if s["finish_reason"] in ("stop", "length")]
    if not lengths:
        return 0
    mean_length = statistics.fmean(lengths)
    aborted = [s["num_generated_tokens"] for s in record["samples"] if s["finish_reason"] == "aborted"]
    return round(sum(max(0.0, mean_length - generated) for generated in aborted))


def num_tool_calls(sample: dict) -> int:
    """Code runs, as `Sample.num_tool_calls_made` counts them ("skipped" calls excluded)."""
    return sum(call["status"] != "skipped" for call in sample["tool_calls"])


# --- the leaderboard ----------------------------------------------------------------------


def run_row(run: Run) -> dict:
    records = run.records
    samples = [s for r in records for s in r["samples"]]
    graded = [r for r in records if r.get("expected_answer") is not None]
    seconds = [float(r["wall_s"]) for r in records]
    total_s = sum(seconds)
    num_samples = max((len(r["samples"]) for r in records), default=0)
    gen_tokens = sum(s["num_generated_tokens"] for s in samples)
    batch_tok_s = gen_tokens / total_s if total_s > 0 else None
    saved = sum(tokens_saved(r) for r in records)
    return {
        "run": run.name,
        "problems": len(records),
        "samples": num_samples,
        "correct": sum(is_correct(r) for r in graded) if graded else None,
        "accuracy": _mean([float(is_correct(r)) for r in graded]),
        "pass@N": _mean([pass_at_k(len(r["samples"]), num_correct_samples(r), len(r["samples"])) for r in graded]),
        "answered": _mean([num_answered(r) / len(r["samples"]) if r["samples"] else 0.0 for r in records]),
        "mean_s": _mean(seconds),
        "median_s": statistics.median(seconds) if seconds else None,
        "max_s": max(seconds, default=None),
        "total_s": total_s,
        "gen_tokens": gen_tokens,
        "batch_tok_s": batch_tok_s,
        "sample_tok_s": batch_tok_s / num_samples if batch_tok_s is not None and num_samples else None,
        "tool_calls_per_sample": _mean([num_tool_calls(s) for s in samples]),
        "tokens_saved": saved,
        "saved_share": saved / (gen_tokens + saved) if gen_tokens + saved else None,
        "stops": stop_summary(records),
    }


def leaderboard(runs: list[Run]) -> pl.DataFrame:
    return pl.DataFrame([run_row(run) for run in runs], infer_schema_length=None)


def stop_summary(records: list[dict]) -> str:
    """"consensus:3 all_done:1": how many problems ended for each reason."""
    counts = Counter(r["stop_reason"] for r in records)
    return " ".join(f"{reason}:{count}" for reason, count in counts.most_common())


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


# --- the per-problem table ----------------------------------------------------------------


def problem_table(runs: list[Run]) -> pl.DataFrame:
    rows = [problem_row(run.name, record) for run in runs for record in run.records]
    return pl.DataFrame(rows, schema=PROBLEM_SCHEMA)


PROBLEM_SCHEMA = {
    "run": pl.String, "problem_id": pl.String, "expected": pl.Int64, "answer": pl.Int64, "correct": pl.Boolean,
    "votes": pl.String, "answered": pl.String, "stop_reason": pl.String, "time_s": pl.Float64, "gen_tokens": pl.Int64,
    "error": pl.String,
}  # fmt: skip


def problem_row(run_name: str, record: dict) -> dict:
    votes = " ".join(f"{answer}:{count}" for answer, count in record["votes"].items())
    return {
        "run": run_name,
        "problem_id": str(record["problem_id"]),
        "expected": record.get("expected_answer"),
        "answer": record["answer"],
        "correct": None if record.get("expected_answer") is None else is_correct(record),
        "votes": votes,
        "answered": f"{num_answered(record)}/{len(record['samples'])}",
        "stop_reason": record["stop_reason"],
        "time_s": float(record["wall_s"]),
        "gen_tokens": sum(s["num_generated_tokens"] for s in record["samples"]),
        "error": record.get("error"),
    }


# --- curves for the plots -----------------------------------------------------------------


def budget_breakpoints(run: Run) -> list[float]:
    """0 and every logged finish time: the accuracy curve can only change there."""
    finishes = {float(s["finished_s"]) for r in run.logged for s in r["samples"] if s["finish_reason"] not in CUT_FINISH_REASONS}
    return sorted(finishes | {0.0})


def budget_curve(run: Run) -> tuple[list[float], list[float | None]]:
    budgets_s = budget_breakpoints(run)
    return budgets_s, accuracy_at_budgets(run, budgets_s)


def accuracy_at_budgets(run: Run, budgets_s: list[float]) -> list[float | None]:
    """The run's accuracy had each problem been cut at each budget (its own stop rules kept)."""
    curve = []
    for budget_s in budgets_s:
        records = replay_records(run.logged, replace(run.policy, budget_s=budget_s), run.fallback_answer)
        graded = [r for r in records if r.get("expected_answer") is not None]
        curve.append(_mean([float(is_correct(r)) for r in graded]))
    return curve


# --- files --------------------------------------------------------------------------------


def write_report(runlogs: list[str | Path], out_dir: str | Path, names: list[str] | None = None, replays: list[ReplayPolicy] = (), plots: bool = True) -> dict[str, Path]:
    """Read the run logs, add the replayed policies, write every table (and plot); the paths written."""
    if names is not None and len(names) != len(runlogs):
        raise ValueError(f"--names gives {len(names)} names for {len(runlogs)} run logs")
    logged = [read_run(path, name) for path, name in zip(runlogs, names or [None] * len(runlogs))]
    _check_unique([run.name for run in logged])
    runs = logged + [replayed(run, policy) for run in logged for policy in replays]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    board, problems = leaderboard(runs), problem_table(runs)
    paths = {"leaderboard.csv": out / "leaderboard.csv", "problems.csv": out / "problems.csv", "leaderboard.md": out / "leaderboard.md", "problems.md": out / "problems.md"}
    board.write_csv(paths["leaderboard.csv"])
    problems.write_csv(paths["problems.csv"])
    images = _write_plots(runs, out) if plots else {}
    paths["leaderboard.md"].write_text(_leaderboard_markdown(board, images))
    paths["problems.md"].write_text("# Problems\n\n" + markdown_table(problems) + "\n")
    return paths | images


def _write_plots(runs: list[Run], out: Path) -> dict[str, Path]:
    from . import plots  # matplotlib is needed only here

    curves = {run.name: budget_curve(run) for run in runs if run.policy.budget_s is None}  # a budgeted run has no curve
    seconds = {run.name: {str(r["problem_id"]): float(r["wall_s"]) for r in run.records} for run in runs}
    return {
        "accuracy_vs_budget.png": plots.plot_accuracy_vs_budget(curves, out / "accuracy_vs_budget.png"),
        "seconds_per_problem.png": plots.plot_seconds_per_problem(seconds, out / "seconds_per_problem.png"),
    }


def _leaderboard_markdown(board: pl.DataFrame, images: dict[str, Path]) -> str:
    parts = ["# Leaderboard", "", markdown_table(board), "", "Columns are defined in docs/evaluation.md.", ""]
    parts += [f"![{name}]({name})" for name in images]
    return "\n".join(parts) + "\n"


def markdown_table(frame: pl.DataFrame, decimals: int = 3) -> str:
    """A GitHub markdown table; floats rounded to `decimals`, missing values empty."""
    rounded = frame.with_columns(pl.col(pl.Float64).round(decimals))
    header = "| " + " | ".join(rounded.columns) + " |"
    rule = "|" + "|".join("---" for _ in rounded.columns) + "|"
    rows = ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rounded.iter_rows()]
    return "\n".join([header, rule, *rows])


def _cell(value: object) -> str:
    if value is None:
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _check_unique(names: list[str]) -> None:
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise ValueError(f"two run logs have the same name {repeated[0]!r}; give --names")


# --- command line -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m solver.report", description="Leaderboard, per-problem table and plots from run logs.")
    p.add_argument("runlogs", nargs="+", help="run logs (JSONL), one run each")
    p.add_argument("--out", required=True, help="directory for leaderboard.md/.csv, problems.csv/.md and the plots")
    p.add_argument("--names", nargs="+", default=None, help="a name per run log (default: the file name)")
    p.add_argument("--replay", action="append", default=[], metavar="POLICY", help='replay each log under a policy, e.g. "n=8 K=6 consensus=4/5 budget=60"; repeatable')
    p.add_argument("--no-plots", action="store_true", help="tables only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        policies = [ReplayPolicy.parse(text) for text in args.replay]
        paths = write_report(args.runlogs, args.out, args.names, policies, plots=not args.no_plots)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(str(path) for path in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
