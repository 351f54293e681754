import json

import polars as pl
import pytest

from build.plan import BuildError
from build.solutions import read_solutions


def test_jsonl_rows_are_read_in_order_up_to_the_limit(jsonl, tmp_path):
    path = jsonl(tmp_path / "rows.jsonl", [{"problem": f"p{i}", "generated_solution": f"s{i}"} for i in range(4)])
    pairs = read_solutions((path,), limit=3)
    assert [(p.problem, p.solution) for p in pairs] == [("p0", "s0"), ("p1", "s1"), ("p2", "s2")]


def test_files_are_recognised_by_content_not_name(tmp_path):
    disguised = tmp_path / "rows.jsonl"  # really parquet
    pl.DataFrame({"problem": ["p"], "generated_solution": ["s"]}).write_parquet(disguised)
    assert [(p.problem, p.solution) for p in read_solutions((disguised,))] == [("p", "s")]


def test_run_log_samples_become_pairs_skipping_errors_and_empty_texts(jsonl, runlog, tmp_path):
    records = runlog([("P", ["good", "", "bad"])])
    records[1]["samples"][2]["finish_reason"] = "error"
    pairs = read_solutions((jsonl(tmp_path / "run.jsonl", records),))
    assert [(p.problem, p.solution) for p in pairs] == [("P", "good")]


def test_torn_last_line_of_a_run_log_is_skipped_with_a_warning(jsonl, runlog, tmp_path, capsys):
    path = jsonl(tmp_path / "run.jsonl", runlog([("P", ["a"])]))
    path.write_text(path.read_text() + '{"kind": "problem", "prob')
    assert [p.solution for p in read_solutions((path,))] == ["a"]
    assert "ignoring torn last line" in capsys.readouterr().err


def test_malformed_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"problem": "p", "generated_solution": "s"}\nnot json\n{"problem": "p", "generated_solution": "s"}\n')
    with pytest.raises(BuildError, match=r"rows\.jsonl:2: line is not valid JSON"):
        read_solutions((path,))


def test_missing_field_names_file_row_and_field(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"problem": "p", "generated_solution": "s"}) + "\n" + json.dumps({"problem": "p"}) + "\n")
    with pytest.raises(BuildError) as error:
        read_solutions((path,))
    assert str(error.value) == f"{path}:2: field `generated_solution` is missing or not a non-empty string."


def test_parquet_without_the_column_is_refused(tmp_path):
    path = tmp_path / "t.parquet"
    pl.DataFrame({"question": ["p"]}).write_parquet(path)
    with pytest.raises(BuildError, match="parquet file has no column `problem`"):
        read_solutions((path,))
