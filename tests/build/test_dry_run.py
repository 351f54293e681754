"""Dry runs print the exact TensorRT-LLM commands, with the documented flags, and write nothing."""

import sys

import pytest

EXAMPLES = "/opt/TensorRT-LLM/examples"


def runs_lines(out: str) -> list[str]:
    return [line.removeprefix("runs:   ") for line in out.splitlines() if line.startswith("runs:   ")]


def test_fp8_dry_run_prints_quantize_and_build_commands(cli, tmp_path):
    status, out, _ = cli("fp8", "--model", "/models/omn14b", "--calibration", tmp_path / "calib",
                         "--checkpoint-dir", tmp_path / "ckpt", "--engine-dir", tmp_path / "engine",
                         "--trtllm-examples", EXAMPLES, "--tp-size", 2, "--calib-size", 1024, "--dry-run")
    assert status == 0
    quantize, build = runs_lines(out)
    assert quantize == (
        f"{sys.executable} {EXAMPLES}/quantization/quantize.py --model_dir /models/omn14b --qformat fp8 "
        f"--dtype bfloat16 --calib_dataset {tmp_path}/calib --calib_size 1024 --calib_max_seq_length 512 "
        f"--tp_size 2 --output_dir {tmp_path}/ckpt"
    )
    assert build == (
        f"trtllm-build --checkpoint_dir {tmp_path}/ckpt --output_dir {tmp_path}/engine --gemm_plugin fp8 "
        "--use_paged_context_fmha enable --kv_cache_type paged --max_batch_size 32 --max_input_len 32000 "
        "--max_seq_len 32000 --max_num_tokens 32000 --workers 2"
    )
    assert f"writes: {tmp_path}/ckpt/rank1.safetensors" in out  # the checkpoint the redrafter step needs is kept
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "engine").exists()


def test_fp8_kv_cache_dtype_is_passed_only_when_asked(cli, tmp_path):
    args = ("fp8", "--model", "/m", "--calibration", "/c", "--checkpoint-dir", tmp_path / "c", "--engine-dir",
            tmp_path / "e", "--trtllm-examples", EXAMPLES, "--dry-run")
    assert "--kv_cache_dtype" not in cli(*args)[1]
    assert "--qformat fp8 --kv_cache_dtype fp8 --dtype bfloat16" in cli(*args, "--kv-cache-dtype", "fp8")[1]


def redrafter_args(tmp_path):
    return ("redrafter", "--base-checkpoint", tmp_path / "fp8-ckpt", "--drafter", tmp_path / "drafter",
            "--checkpoint-dir", tmp_path / "rd-ckpt", "--engine-dir", tmp_path / "rd-engine",
            "--trtllm-examples", EXAMPLES, "--dry-run")


def test_redrafter_dry_run_samples_by_default(cli, tmp_path):
    status, out, _ = cli(*redrafter_args(tmp_path))
    assert status == 0
    convert, build = runs_lines(out)
    assert convert == (
        f"{sys.executable} {EXAMPLES}/redrafter/convert_checkpoint.py --base_model_checkpoint_dir {tmp_path}/fp8-ckpt "
        f"--drafter_model_dir {tmp_path}/drafter --output_dir {tmp_path}/rd-ckpt --dtype bfloat16 --tp_size 1 "
        "--redrafter_num_beams 1 --redrafter_draft_len_per_beam 3 --redrafter_no_greedy_search"
    )
    assert build == (
        f"trtllm-build --checkpoint_dir {tmp_path}/rd-ckpt --output_dir {tmp_path}/rd-engine --gemm_plugin fp8 "
        "--use_paged_context_fmha enable --kv_cache_type paged --speculative_decoding_mode explicit_draft_tokens "
        "--max_beam_width 1 --max_batch_size 32 --max_input_len 32000 --max_seq_len 32000 --max_num_tokens 32000 --workers 1"
    )
    assert "N samples differ" in out


def test_redrafter_greedy_drops_the_flag_and_says_samples_are_identical(cli, tmp_path):
    status, out, _ = cli(*redrafter_args(tmp_path), "--greedy")
    assert status == 0
    assert "--redrafter_no_greedy_search" not in out
    assert "note:   --greedy: the engine ignores temperature, so all N samples of a problem are identical" in out


@pytest.mark.parametrize("step", [("calibration",), ("fp8",), ("drafter", "train"), ("drafter", "export"), ("redrafter",)])
def test_every_step_has_help(cli, step, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli(*step, "--help")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--dry-run" in out and "--force" in out


def test_redrafter_help_states_the_greedy_consequence(cli, capsys):
    with pytest.raises(SystemExit):
        cli("redrafter", "--help")
    assert "ALL N SAMPLES OF A PROBLEM ARE IDENTICAL" in " ".join(capsys.readouterr().out.split())
