"""Every preflight problem is one readable sentence naming what is wrong and what to do."""

import json

import polars as pl
import pytest
import torch

from build import preflight
from build.drafter.export import save_drafter
from build.drafter.model import Drafter, DrafterConfig

EXAMPLES = "/nonexistent/TensorRT-LLM/examples"
H100 = ("NVIDIA H100 80GB HBM3", (9, 0))
A100 = ("NVIDIA A100-SXM4-80GB", (8, 0))


@pytest.fixture
def bare_machine(monkeypatch):
    """No GPU and no TensorRT-LLM, whatever machine the tests run on."""
    monkeypatch.setattr(preflight, "gpus", lambda: [])
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(preflight.shutil, "which", lambda name: None)


def test_gpu_problems():
    assert preflight.gpu_problem(1, "the fp8 step", devices=[H100]) is None
    assert preflight.gpu_problem(1, "the fp8 step", devices=[]) == (
        "No CUDA GPU is visible (torch.cuda.is_available() is False); the fp8 step needs 1 GPU(s) "
        "with FP8 support (compute capability 8.9 or newer, e.g. H100)."
    )
    assert preflight.gpu_problem(2, "the fp8 step", devices=[H100]) == "The fp8 step uses --tp-size 2 but only 1 GPU(s) are visible."
    assert preflight.gpu_problem(1, "the fp8 step", devices=[A100]) == (
        "The fp8 step needs FP8 tensor cores (compute capability 8.9+), which NVIDIA A100-SXM4-80GB lacks."
    )


def test_missing_tensorrt_llm_is_reported(bare_machine):
    assert preflight.trtllm_problems() == [
        "TensorRT-LLM is not installed in this Python environment (no `tensorrt_llm` module); install the "
        "wheel from NVIDIA's package index as docs/build.md describes.",
        "The `trtllm-build` command is not on PATH; it comes with the TensorRT-LLM wheel.",
    ]


def test_not_enough_disk_is_reported_as_an_estimate(tmp_path):
    assert preflight.disk_problem(tmp_path / "out", 10**9, "the engine", free_bytes=2 * 10**9) is None
    assert preflight.disk_problem(tmp_path / "out", 33 * 10**9, "the engine", free_bytes=5 * 10**9) == (
        f"Not enough free disk under {tmp_path} for the engine: about 33.0 GB needed (estimate), 5.0 GB free."
    )


def test_fp8_refuses_to_start_and_lists_every_problem(cli, bare_machine, tmp_path):
    status, out, err = cli("fp8", "--model", tmp_path / "no-model", "--calibration", tmp_path / "no-calib",
                           "--checkpoint-dir", tmp_path / "ckpt", "--engine-dir", tmp_path / "engine",
                           "--trtllm-examples", EXAMPLES)
    assert status == 2 and out == ""
    assert err.splitlines() == [
        "error: No CUDA GPU is visible (torch.cuda.is_available() is False); the fp8 step needs 1 GPU(s) with "
        "FP8 support (compute capability 8.9 or newer, e.g. H100).",
        "error: TensorRT-LLM is not installed in this Python environment (no `tensorrt_llm` module); install the "
        "wheel from NVIDIA's package index as docs/build.md describes.",
        "error: The `trtllm-build` command is not on PATH; it comes with the TensorRT-LLM wheel.",
        f"error: --trtllm-examples: {EXAMPLES}/quantization/quantize.py does not exist; point it at the `examples` "
        "folder of a TensorRT-LLM checkout of the same release as the installed wheel.",
        f"error: --model: {tmp_path}/no-model/config.json does not exist; it should be the config of a Hugging Face model directory.",
        f"error: --calibration: {tmp_path}/no-calib/data.parquet does not exist; it should be written by "
        "`python -m build.pipeline calibration`.",
    ]


def test_fp8_calib_size_must_not_exceed_the_calibration_set(cli, bare_machine, tmp_path):
    (tmp_path / "calib").mkdir()
    pl.DataFrame({"text": ["a", "b"]}).write_parquet(tmp_path / "calib" / "data.parquet")
    _, _, err = cli("fp8", "--model", tmp_path, "--calibration", tmp_path / "calib", "--checkpoint-dir", tmp_path / "c",
                    "--engine-dir", tmp_path / "e", "--trtllm-examples", EXAMPLES, "--calib-size", 3)
    assert (f"error: --calib-size 3 exceeds the 2 texts in {tmp_path}/calib/data.parquet; lower it or rebuild the "
            "calibration set.") in err.splitlines()


def fake_base_checkpoint(path, **overrides):
    path.mkdir()
    config = {"architecture": "Qwen2ForCausalLM", "dtype": "bfloat16", "hidden_size": 8, "vocab_size": 20,
              "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1}, **overrides}
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_redrafter_checks_base_checkpoint_against_drafter(cli, bare_machine, tmp_path):
    base = fake_base_checkpoint(tmp_path / "base", architecture="GPTForCausalLM", dtype="float16", hidden_size=16,
                                mapping={"tp_size": 2})
    save_drafter(Drafter(DrafterConfig.for_base(8, 20, num_draft_tokens=2)), tmp_path / "drafter", torch.bfloat16)
    status, _, err = cli("redrafter", "--base-checkpoint", base, "--drafter", tmp_path / "drafter", "--checkpoint-dir",
                         tmp_path / "rc", "--engine-dir", tmp_path / "re", "--trtllm-examples", EXAMPLES)
    assert status == 2
    lines = err.splitlines()
    for expected in [
        "error: --base-checkpoint: architecture 'GPTForCausalLM' has no ReDrafter model in TensorRT-LLM (supported: "
        "QWenForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM).",
        "error: --base-checkpoint was written for tp_size 2, but --tp-size is 1; they must match.",
        "error: --dtype bfloat16 differs from the base checkpoint's dtype float16; TensorRT-LLM requires them equal.",
        "error: --drafter has hidden_size 8 but the base checkpoint has 16; train the drafter on this base model.",
        "error: --draft-len-per-beam 3 exceeds the 2 tokens the drafter was trained to predict.",
    ]:
        assert expected in lines


def test_redrafter_without_an_fp8_checkpoint_says_to_run_fp8_first(cli, bare_machine, tmp_path):
    _, _, err = cli("redrafter", "--base-checkpoint", tmp_path / "none", "--drafter", tmp_path / "d", "--checkpoint-dir",
                    tmp_path / "rc", "--engine-dir", tmp_path / "re", "--trtllm-examples", EXAMPLES)
    assert f"error: --base-checkpoint: {tmp_path}/none/config.json is missing or unreadable; run the fp8 step first." in err.splitlines()
    assert (f"error: --drafter: {tmp_path}/d/model.safetensors does not exist; it should be written by "
            "`python -m build.pipeline drafter export`.") in err.splitlines()


def test_calibration_reports_missing_input(cli, tmp_path, model_dir):
    status, _, err = cli("calibration", "--model", model_dir, "--input", tmp_path / "omr.parquet", "--output", tmp_path / "out")
    assert status == 2
    assert err == f"error: --input: {tmp_path}/omr.parquet does not exist; it should be a parquet or JSONL file.\n"


def test_drafter_train_on_cuda_without_a_gpu(cli, tmp_path, model_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "d.jsonl").write_text("")
    status, _, err = cli("drafter", "train", "--model", model_dir, "--data", tmp_path / "d.jsonl", "--output", tmp_path / "o", "--device", "cuda")
    assert status == 2
    assert err == "error: --device cuda was asked for but no CUDA GPU is visible (torch.cuda.is_available() is False).\n"


def test_invalid_arguments_are_one_line(cli, tmp_path):
    status, _, err = cli("fp8", "--model", "/m", "--calibration", "/c", "--checkpoint-dir", tmp_path, "--engine-dir", tmp_path,
                         "--trtllm-examples", EXAMPLES)
    assert (status, err) == (2, "error: --checkpoint-dir and --engine-dir must differ\n")
