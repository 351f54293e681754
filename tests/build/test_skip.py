"""A step whose outputs are complete for the same inputs and arguments is skipped."""

import json
import os

import polars as pl
import pytest

from build import preflight
from build.plan import BuildError, run_commands
from build.trtllm import example_command


def calibration_args(tmp_path, model_dir, *extra):
    return ("calibration", "--model", model_dir, "--input", tmp_path / "rows.jsonl", "--output", tmp_path / "calib", *extra)


def test_completed_step_is_skipped_until_inputs_or_arguments_change(cli, jsonl, tmp_path, model_dir):
    jsonl(tmp_path / "rows.jsonl", [{"problem": f"p{i}", "generated_solution": f"s{i}"} for i in range(4)])
    status, out, _ = cli(*calibration_args(tmp_path, model_dir))
    assert status == 0 and "wrote 4 texts" in out
    manifest = json.loads((tmp_path / "calib" / "build_manifest.json").read_text())
    assert manifest["step"] == "calibration" and manifest["result"] == {"num_rows": 4}
    written = (tmp_path / "calib" / "data.parquet").stat().st_mtime_ns

    status, out, _ = cli(*calibration_args(tmp_path, model_dir))
    assert status == 0 and "already complete for these inputs" in out and "skipping" in out
    assert (tmp_path / "calib" / "data.parquet").stat().st_mtime_ns == written

    _, out, _ = cli(*calibration_args(tmp_path, model_dir, "--dry-run"))
    assert "a real run would skip it" in out

    _, out, _ = cli(*calibration_args(tmp_path, model_dir, "--num-rows", 2))  # other arguments
    assert "wrote 2 texts" in out
    jsonl(tmp_path / "rows.jsonl", [{"problem": "new", "generated_solution": "s"}])  # other inputs
    _, out, _ = cli(*calibration_args(tmp_path, model_dir, "--num-rows", 2))
    assert "wrote 1 texts" in out
    _, out, _ = cli(*calibration_args(tmp_path, model_dir, "--num-rows", 2, "--force"))
    assert "wrote 1 texts" in out


def test_missing_output_or_failed_run_means_not_complete(cli, jsonl, tmp_path, model_dir):
    jsonl(tmp_path / "rows.jsonl", [{"problem": "p", "generated_solution": "s"}])
    assert cli(*calibration_args(tmp_path, model_dir))[0] == 0
    (tmp_path / "calib" / "data.parquet").unlink()
    _, out, _ = cli(*calibration_args(tmp_path, model_dir))
    assert "wrote 1 texts" in out

    (tmp_path / "rows.jsonl").write_text('{"problem": "p"}\n{"problem": "p", "generated_solution": "s"}\n')
    status, _, err = cli(*calibration_args(tmp_path, model_dir))
    assert status == 1
    assert err == f"error: calibration: {tmp_path}/rows.jsonl:1: field `generated_solution` is missing or not a non-empty string.\n"
    assert not (tmp_path / "calib" / "build_manifest.json").exists()  # the old manifest went first


FAKE_QUANTIZE = '''
import argparse, json, pathlib, sys
parser = argparse.ArgumentParser()
parser.add_argument("--output_dir"); parser.add_argument("--tp_size", type=int)
args, _ = parser.parse_known_args()
out = pathlib.Path(args.output_dir); out.mkdir(parents=True, exist_ok=True)
(out / "config.json").write_text(json.dumps({"architecture": "Qwen2ForCausalLM"}))
for rank in range(args.tp_size):
    (out / f"rank{rank}.safetensors").write_text("weights")
with open(pathlib.Path(__file__).with_name("calls.log"), "a") as log:
    log.write("quantize\\n")
'''

FAKE_TRTLLM_BUILD = '''#!/bin/sh
echo trtllm-build >> "$CALLS_LOG"
[ -n "$FAIL_BUILD" ] && exit 1
while [ $# -gt 0 ]; do [ "$1" = --output_dir ] && out=$2; shift; done
mkdir -p "$out" && echo '{}' > "$out/config.json" && echo engine > "$out/rank0.engine"
'''


def test_fp8_reruns_only_the_failed_engine_build(cli, tmp_path, monkeypatch):
    """A real (non-dry) run through fake TensorRT-LLM tools: the FP8 checkpoint that was quantized
    before `trtllm-build` failed is kept and not quantized again."""
    examples, bin_dir = tmp_path / "examples", tmp_path / "bin"
    (examples / "quantization").mkdir(parents=True)
    (examples / "quantization" / "quantize.py").write_text(FAKE_QUANTIZE)
    bin_dir.mkdir()
    (bin_dir / "trtllm-build").write_text(FAKE_TRTLLM_BUILD)
    (bin_dir / "trtllm-build").chmod(0o755)
    calls = examples / "quantization" / "calls.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CALLS_LOG", str(calls))
    monkeypatch.setattr(preflight, "gpus", lambda: [("NVIDIA H100", (9, 0))])
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda name: object())
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"vocab_size": 10, "hidden_size": 4}))
    (tmp_path / "calib").mkdir()
    pl.DataFrame({"text": ["t"] * 8}).write_parquet(tmp_path / "calib" / "data.parquet")
    args = ("fp8", "--model", model, "--calibration", tmp_path / "calib", "--checkpoint-dir", tmp_path / "ckpt",
            "--engine-dir", tmp_path / "engine", "--trtllm-examples", examples, "--calib-size", 8)

    monkeypatch.setenv("FAIL_BUILD", "1")
    status, _, err = cli(*args)
    assert status == 1 and err == "error: fp8: `trtllm-build` exited with status 1; its own output above says why.\n"
    assert (tmp_path / "ckpt" / "build_manifest.json").is_file() and not (tmp_path / "engine" / "build_manifest.json").exists()

    monkeypatch.delenv("FAIL_BUILD")
    status, out, _ = cli(*args)
    assert status == 0 and "fp8 quantize: already complete for these inputs" in out
    assert calls.read_text().split() == ["quantize", "trtllm-build", "trtllm-build"]

    status, out, _ = cli(*args)
    assert status == 0 and "fp8: already complete" in out
    assert calls.read_text().split() == ["quantize", "trtllm-build", "trtllm-build"]


def test_a_failing_example_script_is_named_in_the_error(tmp_path):
    (tmp_path / "quantization").mkdir()
    (tmp_path / "quantization" / "quantize.py").write_text("raise SystemExit(3)\n")
    with pytest.raises(BuildError) as error:
        run_commands((example_command(tmp_path, "quantization/quantize.py", "--qformat", "fp8"),))
    assert str(error.value) == "`quantization/quantize.py` exited with status 3; its own output above says why."
