"""Reading problems files and writing submissions; every bad input gets one clear sentence.

Run: python -m pytest tests/solver/test_problems.py -q
"""

import polars as pl
import pytest

from solver.problems import InputError, Problem, read_problems, write_answers


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_reads_csv_with_answers(tmp_path):
    path = write(tmp_path, "p.csv", 'id,problem,answer\na,"What is 1+1, really?",2\nb,Hard one,\n')
    assert read_problems(path) == [Problem("a", "What is 1+1, really?", 2), Problem("b", "Hard one", None)]


def test_accepts_question_column_and_bom(tmp_path):
    path = write(tmp_path, "p.csv", "\ufeffid,question\n1,Q\n".encode("utf-8"))
    assert read_problems(path) == [Problem("1", "Q")]


def test_reads_parquet(tmp_path):
    path = tmp_path / "p.parquet"
    pl.DataFrame({"id": [7, 8], "problem": ["x", "y"], "answer": [1, 2]}).write_parquet(path)
    assert read_problems(path) == [Problem("7", "x", 1), Problem("8", "y", 2)]


@pytest.mark.parametrize(
    "name, content, fragments",
    [
        ("p.csv", "problem\nx\n", ["missing column 'id'"]),
        ("p.csv", "id,text\n1,x\n", ["missing column 'problem'"]),
        ("p.csv", "id,problem\n,x\n", ["row 1", "'id'", "empty"]),
        ("p.csv", "id,problem\n1,x\n2,y\n1,z\n", ["row 3", "duplicate id '1'", "row 1"]),
        ("p.csv", "id,problem\n1,x\n2,  \n", ["row 2", "'problem'", "empty"]),
        ("p.csv", "id,problem,answer\n1,x,3.5\n", ["row 1", "'answer'", "integer", "'3.5'"]),
        ("p.csv", "id,problem,answer\n1,x,seventy\n", ["row 1", "'answer'", "'seventy'"]),
        ("p.csv", b"id,problem\n1,caf\xe9\n", ["line 2", "UTF-8"]),
        ("p.csv", "id,problem\n", ["no problems"]),
        ("p.json", "{}", ["unsupported file type"]),
        ("p.parquet", "not parquet", ["not a readable parquet"]),
    ],
)
def test_bad_input_names_file_row_and_column(tmp_path, name, content, fragments):
    path = write(tmp_path, name, content)
    with pytest.raises(InputError) as excinfo:
        read_problems(path)
    message = str(excinfo.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_problems(tmp_path / "nope.csv")


def test_write_answers_keeps_input_order_and_fills_fallback(tmp_path):
    problems = [Problem("b", "x"), Problem("a", "y"), Problem("c", "z")]
    out = tmp_path / "sub" / "submission.csv"
    write_answers(out, problems, {"a": 5}, fallback=7)
    assert out.read_text() == "id,answer\nb,7\na,5\nc,7\n"
    assert [p.name for p in out.parent.iterdir()] == ["submission.csv"]  # no temporary file left
