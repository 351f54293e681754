"""The leaderboard and per-problem table, checked column by column against hand arithmetic.

Run: python -m pytest tests/solver/test_report.py -q
"""

import json
import math

import polars as pl
import pytest

from solver import report
from solver.report import pass_at_k, read_run, write_report


def sample(index, reason, answer, tokens, first_s, finished_s, calls=()):
    tool_calls = [{"code": "print(1)", "status": status, "wall_s": 0.1, "output": "", "num_tokens": 5, "run_s": 0.0} for status in calls]
    return {
        "index": index, "seed": index, "request_id": f"x#{index}", "text": "", "finish_reason": reason, "error": None,
        "boxed": None if answer is None else str(answer), "answer": answer, "num_generated_tokens": tokens,
        "num_tool_tokens": 5 * len(calls), "first_token_s": first_s, "finished_s": finished_s, "tool_calls": tool_calls,
    }  # fmt: skip


def problem(problem_id, expected, answer, votes, stop, wall_s, samples, error=None):
    return {
        "kind": "problem", "version": 1, "problem_id": problem_id, "problem_sha": "sha", "problem": "text",
        "expected_answer": expected, "answer": answer, "answer_source": "vote", "votes": votes,
        "is_correct": answer == expected, "stop_reason": stop, "allowance_s": None, "wall_s": wall_s,
        "started_at": "2026-01-01T00:00:00+00:00", "error": error, "samples": samples,
    }  # fmt: skip


RUN = {"kind": "run", "version": 1, "started_at": "2026-01-01T00:00:00+00:00", "config": {"solver": {"num_samples": 3, "stop_after": None, "consensus": {"votes": 2, "window": 2}, "fallback_answer": 0}}}

# A: consensus after two answers of 70; sample 2 aborted after 50 tokens.
A = problem("A", 70, 70, {"70": 2}, "consensus", 21.0, [
    sample(0, "stop", 70, 100, 1.0, 10.0, calls=["ok", "ok"]),
    sample(1, "stop", 70, 200, 1.0, 20.0),
    sample(2, "aborted", None, 50, 1.0, 20.0),
])  # fmt: skip
# B: every sample finished; the vote (3) is wrong, one sample (5) was right.
B = problem("B", 5, 3, {"3": 2, "5": 1}, "all_done", 41.0, [
    sample(0, "stop", 3, 100, 2.0, 10.0, calls=["ok"]),
    sample(1, "stop", 3, 300, 2.0, 30.0, calls=["ok", "skipped"]),
    sample(2, "stop", 5, 400, 2.0, 40.0),
])  # fmt: skip
# C: the solver failed; its fallback happens to equal the expected answer, and still counts wrong.
C = problem("C", 0, 0, {}, "error", 1.0, [], error="RuntimeError: engine exploded")
B_BEFORE_RESUME = {**B, "answer": 5, "votes": {"5": 1}, "is_correct": True, "wall_s": 99.0}


@pytest.fixture
def runlog(tmp_path):
    path = tmp_path / "small.runlog.jsonl"
    lines = [RUN, A, B_BEFORE_RESUME, RUN, B, C]  # resumed: B's last record wins
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_every_leaderboard_column_matches_hand_arithmetic(runlog):
    row = report.run_row(read_run(runlog))
    total_s = 21.0 + 41.0 + 1.0
    gen_tokens = (100 + 200 + 50) + (100 + 300 + 400)
    expected = {
        "run": "small",
        "problems": 3,
        "samples": 3,
        "correct": 1,  # A only; C's fallback equals its answer but C failed
        "accuracy": 1 / 3,
        "pass@N": (1.0 + 1.0 + 0.0) / 3,  # A: 2 of 3 right; B: 1 of 3 right (1 - C(2,3)/C(3,3)); C: none
        "answered": (2 / 3 + 3 / 3 + 0.0) / 3,  # the aborted sample and the failed problem answer nothing
        "mean_s": total_s / 3,
        "median_s": 21.0,
        "max_s": 41.0,
        "total_s": total_s,
        "gen_tokens": gen_tokens,
        "batch_tok_s": gen_tokens / total_s,
        "sample_tok_s": gen_tokens / total_s / 3,
        "tool_calls_per_sample": (2 + 0 + 0 + 1 + 1 + 0) / 6,  # the skipped call does not count
        "tokens_saved": (100 + 200) / 2 - 50,  # A's aborted sample: mean finished length minus its own
        "saved_share": 100 / (gen_tokens + 100),
        "stops": "consensus:1 all_done:1 error:1",
    }
    assert row.keys() == expected.keys()
    for column, value in expected.items():
        assert row[column] == (pytest.approx(value) if isinstance(value, float) else value), column


def test_per_problem_table_has_answer_votes_correctness_and_time(runlog):
    table = report.problem_table([read_run(runlog)])
    assert table.select("problem_id", "expected", "answer", "correct", "votes", "answered", "stop_reason", "time_s", "gen_tokens").rows() == [
        ("A", 70, 70, True, "70:2", "2/3", "consensus", 21.0, 350),
        ("B", 5, 3, False, "3:2 5:1", "3/3", "all_done", 41.0, 800),
        ("C", 0, 0, False, "", "0/0", "error", 1.0, 0),
    ]
    assert table["error"].to_list() == [None, None, "RuntimeError: engine exploded"]


@pytest.mark.parametrize(
    "n, c, k, value",
    [(3, 0, 1, 0.0), (3, 1, 1, 1 / 3), (3, 3, 2, 1.0), (4, 2, 2, 1 - 1 / 6), (10, 1, 10, 1.0), (5, 2, 3, 1 - 1 / 10)],
)
def test_pass_at_k_is_the_unbiased_estimator(n, c, k, value):
    assert pass_at_k(n, c, k) == pytest.approx(value)
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_tokens_saved_is_zero_when_no_sample_finished():
    record = problem("D", 1, 0, {}, "deadline", 5.0, [sample(0, "aborted", None, 40, 1.0, 5.0)])
    assert report.tokens_saved(record) == 0


def test_write_report_writes_tables_and_plots(runlog, tmp_path):
    paths = write_report([runlog, runlog], tmp_path / "out", names=["first", "second"])
    board = pl.read_csv(paths["leaderboard.csv"])
    assert board["run"].to_list() == ["first", "second"]
    assert board["accuracy"].to_list() == pytest.approx([1 / 3, 1 / 3])
    assert pl.read_csv(paths["problems.csv"]).height == 6
    markdown = paths["leaderboard.md"].read_text()
    assert "| run | problems | samples |" in markdown and "![accuracy_vs_budget.png](accuracy_vs_budget.png)" in markdown
    for name in ("accuracy_vs_budget.png", "seconds_per_problem.png"):
        assert_valid_png(paths[name])


def assert_valid_png(path):
    """Right signature, a real image of the expected size, and more than one colour drawn."""
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5_000
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] >= 200 and pixels.shape[1] >= 400
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[2])[::97]}) > 5


def test_replayed_policies_become_leaderboard_rows(runlog, tmp_path):
    paths = write_report([runlog], tmp_path / "out", replays=[report.ReplayPolicy.parse("K=1")], plots=False)
    board = pl.read_csv(paths["leaderboard.csv"])
    assert board["run"].to_list() == ["small", "small | n=all K=1 consensus=off budget=none"]
    problems = pl.read_csv(paths["problems.csv"]).filter(pl.col("run").str.contains("K=1"))
    assert problems["answer"].to_list() == [70, 3, 0]  # first finisher alone; C stays failed


def test_accuracy_curve_steps_at_the_logged_finish_times(runlog):
    budgets_s, accuracy = report.budget_curve(read_run(runlog))
    assert budgets_s == [0.0, 10.0, 20.0, 30.0, 40.0]  # A's aborted sample never finished
    # A's first answer (70, at 10 s) is right; before it, A gets the fallback. B's vote is always wrong.
    assert accuracy == pytest.approx([0.0, 1 / 3, 1 / 3, 1 / 3, 1 / 3])
    assert report.accuracy_at_budgets(read_run(runlog), [9.9]) == [0.0]


def test_command_line(runlog, tmp_path, capsys):
    assert report.main([str(runlog), "--out", str(tmp_path / "cli"), "--replay", "n=2 budget=25", "--no-plots"]) == 0
    assert (tmp_path / "cli" / "leaderboard.md").exists()
    assert report.main([str(runlog), str(runlog), "--out", str(tmp_path / "cli")]) == 2
    assert "same name" in capsys.readouterr().err
    assert report.main([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "cli")]) == 2
    assert report.main([str(runlog), "--out", str(tmp_path / "cli"), "--replay", "k=2"]) == 2


def test_default_name_drops_the_run_log_suffixes():
    assert report.default_name("out/submission.csv.runlog.jsonl") == "submission.csv"
