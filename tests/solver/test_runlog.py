"""The run log survives torn writes. Run: python -m pytest tests/solver/test_runlog.py -q"""

from solver.runlog import RunLog


def test_append_and_read_back(tmp_path):
    log = RunLog(tmp_path / "log.jsonl")
    log.start_run({"x": 1})
    log.append({"kind": "problem", "problem_id": "a", "answer": 3, "error": None})
    assert [r["kind"] for r in log.read()] == ["run", "problem"]
    assert log.solved()["a"]["answer"] == 3


def test_torn_last_line_is_ignored_and_the_next_record_starts_fresh(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    log = RunLog(path)
    log.append({"kind": "problem", "problem_id": "a", "answer": 1, "error": None})
    with path.open("a") as handle:
        handle.write('{"kind": "problem", "problem_id": "b", "ans')  # crash mid-write
    log.append({"kind": "problem", "problem_id": "c", "answer": 2, "error": None})
    assert sorted(log.solved()) == ["a", "c"]
    assert "line 2" in capsys.readouterr().err


def test_problems_that_failed_are_not_counted_as_solved(tmp_path):
    log = RunLog(tmp_path / "log.jsonl")
    log.append({"kind": "problem", "problem_id": "a", "answer": 0, "error": "RuntimeError: boom"})
    assert log.solved() == {}


def test_a_record_without_an_integer_answer_is_not_taken_as_solved(tmp_path):
    log = RunLog(tmp_path / "log.jsonl")
    log.append({"kind": "problem", "problem_id": "a", "answer": "seventy", "error": None})
    log.append({"kind": "problem", "problem_id": "b", "answer": None, "error": None})
    log.append({"kind": "problem", "problem_id": "c", "answer": 7, "error": None})
    assert sorted(log.solved()) == ["c"]
