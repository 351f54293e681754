import polars as pl

from build.calibration import calibration_texts
from build.solutions import Solution
from solver.prompt import prompt_text

PROBLEM = "Find the sum of all integer bases $b>9$ for which $17_b$ is a divisor of $97_b$."
SOLUTION = "Therefore the bases are 21 and 49.\n<tool_call>\nprint(21 + 49)\n</tool_call>\n```output\n70\n```\n\\boxed{70}"


def test_calibration_text_is_the_solver_prompt_followed_by_the_solution(tokenizer):
    [text] = calibration_texts(tokenizer, [Solution(PROBLEM, SOLUTION, "t")])
    prompt = prompt_text(tokenizer, PROBLEM)
    assert text.startswith(prompt)
    assert text == prompt + SOLUTION + "<|im_end|>\n"  # the template's end-of-turn marker closes it


def test_calibration_step_writes_a_text_column_with_the_first_rows(cli, jsonl, tmp_path, model_dir, tokenizer):
    rows = [{"problem": f"Problem {i}?", "generated_solution": f"Answer \\boxed{{{i}}}", "extra": 1} for i in range(5)]
    source = jsonl(tmp_path / "rows.jsonl", rows)
    status, out, err = cli("calibration", "--model", model_dir, "--input", source, "--output", tmp_path / "calib", "--num-rows", 3)
    assert status == 0, err
    frame = pl.read_parquet(tmp_path / "calib" / "data.parquet")
    assert frame.columns == ["text"]
    assert frame["text"].to_list() == [prompt_text(tokenizer, f"Problem {i}?") + f"Answer \\boxed{{{i}}}<|im_end|>\n" for i in range(3)]
    assert "wrote 3 texts" in out


def test_calibration_reads_parquet_tables_and_run_logs(cli, jsonl, runlog, tmp_path, model_dir, tokenizer):
    table = tmp_path / "omr.parquet"
    pl.DataFrame({"problem": ["P1"], "generated_solution": ["S1"], "expected_answer": ["1"]}).write_parquet(table)
    log = jsonl(tmp_path / "run.jsonl", runlog([("P2", ["S2a", "S2b"])]))
    status, _, err = cli("calibration", "--model", model_dir, "--input", table, "--input", log, "--output", tmp_path / "calib")
    assert status == 0, err
    texts = pl.read_parquet(tmp_path / "calib" / "data.parquet")["text"].to_list()
    expected = [("P1", "S1"), ("P2", "S2a"), ("P2", "S2b")]
    assert texts == [prompt_text(tokenizer, p) + s + "<|im_end|>\n" for p, s in expected]
