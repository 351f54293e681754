"""The command line: exit codes, messages, outputs. Run: python -m pytest tests/test_submission.py -q"""

from pathlib import Path

import pytest

import submission

FIXTURES = Path(__file__).parent / "fixtures"


def run(capsys, *argv):
    code = submission.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("id,text\n1,x\n", "missing column 'problem'"),
        ("id,problem\n1,x\n1,y\n", "duplicate id"),
        ("id,problem,answer\n1,x,abc\n", "must be an integer"),
    ],
)
def test_bad_input_exits_2_before_loading_any_engine(tmp_path, capsys, content, fragment):
    problems = tmp_path / "p.csv"
    problems.write_text(content)
    # the model path does not exist: reaching the engine would exit 1, not 2
    code, _, err = run(capsys, problems, "--model", tmp_path / "missing.gguf", "--out", tmp_path / "s.csv")
    assert code == 2
    assert fragment in err and str(problems) in err
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize(
    "option, fragment",
    [
        (["--num-samples", "0"], "number of samples"),
        (["--num-samples", "4", "--stop-after", "5"], "stop-after"),
        (["--top-p", "1.5"], "top-p"),
        (["--temperature", "-1"], "temperature"),
        (["--consensus", "5/4"], "consensus"),
        (["--time-limit", "1", "--time-margin", "2"], "margin"),
        (["--max-tool-calls", "-1"], "tool calls"),
        (["--engine", "replay"], "--replay-file"),
    ],
)
def test_options_out_of_range_exit_2(tmp_path, capsys, option, fragment):
    code, _, err = run(capsys, FIXTURES / "seed_bases.csv", "--out", tmp_path / "s.csv", *option)
    assert code == 2
    assert fragment in err


def test_missing_model_file_exits_1_with_a_clear_message(tmp_path, capsys):
    code, _, err = run(capsys, FIXTURES / "seed_bases.csv", "--model", tmp_path / "missing.gguf", "--out", tmp_path / "s.csv")
    assert code == 1
    assert "model not found" in err


def test_replay_run_writes_submission_run_log_and_accuracy(tmp_path, capsys):
    out = tmp_path / "s.csv"
    code, stdout, _ = run(capsys, FIXTURES / "seed_bases.csv", "--engine", "replay", "--replay-file", FIXTURES / "seed_bases.jsonl", "--out", out, "--num-samples", "2", "--quiet")
    assert code == 0
    assert out.read_text() == "id,answer\nbases,70\n"
    assert "accuracy: 1/1" in stdout
    assert Path(f"{out}.runlog.jsonl").exists()


def test_trtllm_without_tensorrt_llm_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorrt_llm", None)  # import fails as when absent
    code, _, err = run(capsys, FIXTURES / "seed_bases.csv", "--engine", "trtllm", "--engine-dir", tmp_path, "--out", tmp_path / "s.csv")
    assert code == 1
    assert "pip install tensorrt-llm" in err
    assert len(err.strip().splitlines()) == 1


def test_fp8_without_a_gpu_is_refused_in_one_sentence(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = run(capsys, FIXTURES / "seed_bases.csv", "--engine", "native", "--fp8", "--model", tmp_path / "m.gguf", "--out", tmp_path / "s.csv")
    assert code == 1
    assert "--fp8 needs a CUDA GPU" in err


def test_kv_cache_dtype_needs_the_native_engine(tmp_path, capsys):
    code, _, err = run(capsys, FIXTURES / "seed_bases.csv", "--kv-cache-dtype", "fp8", "--out", tmp_path / "s.csv")
    assert code == 2
    assert "--kv-cache-dtype needs --engine native" in err


def test_native_loader_passes_the_kv_cache_dtype_and_shared_prefix_threshold(tmp_path):
    import torch

    from solver.engines.loader import EngineOptions, RunShape, load_engine
    from tests.solver.engines.engine_testing import TOKENIZER, tiny_model

    tiny_model("llama").save_pretrained(tmp_path)
    TOKENIZER.save_pretrained(tmp_path)
    options = EngineOptions(name="native", model=str(tmp_path), device="cpu", kv_cache_dtype="fp8", shared_prefix_min_tokens=64)
    engine, _ = load_engine(options, RunShape(max_new_tokens=16))
    assert engine.runner.kv_cache[0][0].dtype == torch.float8_e4m3fn
    assert engine.config.shared_prefix_attention and engine.config.shared_prefix_min_tokens == 64


def test_shared_prefix_threshold_needs_the_native_engine(tmp_path, capsys):
    code, _, err = run(capsys, FIXTURES / "seed_bases.csv", "--shared-prefix-min-tokens", "0", "--out", tmp_path / "s.csv")
    assert code == 2
    assert "--shared-prefix-min-tokens needs --engine native" in err


def test_drafter_needs_the_native_engine(tmp_path, capsys):
    code, _, err = run(capsys, FIXTURES / "seed_bases.csv", "--drafter", tmp_path, "--out", tmp_path / "s.csv")
    assert code == 2
    assert "--drafter needs --engine native" in err
