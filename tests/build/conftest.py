"""Fixtures for the build tests: the repo's byte-level tokenizer, a tiny random Qwen2 model (in
memory and saved as a model directory), and a CLI runner. CPU only, no network."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from build.drafter.data import encode_example
from build.pipeline import main
from solver.tokenizer import byte_tokenizer



@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tensors here are tiny: a second intra-op thread buys nothing, and on a shared 2-core
    runner its spin-waits made a 10 s test take 100 s. Restored after each module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer()


def tiny_qwen2(vocab_size: int) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=vocab_size,
    )
    return Qwen2ForCausalLM(config).eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_base(tokenizer) -> Qwen2ForCausalLM:
    return tiny_qwen2(len(tokenizer))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer, tiny_base) -> Path:
    """A Hugging Face model directory: tiny random Qwen2 weights plus the byte tokenizer."""
    path = tmp_path_factory.mktemp("tiny-qwen2")
    tiny_base.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def cli(capsys):
    """Run `python -m build.pipeline ARGS` in-process; returns (exit status, stdout, stderr)."""

    def run(*args) -> tuple[int, str, str]:
        status = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.fixture
def jsonl():
    return write_jsonl


def runlog_records(problems: list[tuple[str, list[str]]]) -> list[dict]:
    """A run log in the format of docs/runlog.md: one `run` record, then `problem` records."""
    records: list[dict] = [{"kind": "run", "version": 1, "started_at": "2026-11-28T00:00:00+00:00", "config": {}}]
    for index, (problem, texts) in enumerate(problems):
        samples = [
            {"index": i, "seed": i, "request_id": f"p{index}/{i}", "text": text, "finish_reason": "stop",
             "boxed": None, "answer": None, "num_generated_tokens": len(text), "num_tool_tokens": 0,
             "first_token_s": 0.1, "finished_s": 1.0, "tool_calls": []}
            for i, text in enumerate(texts)
        ]
        records.append({"kind": "problem", "version": 1, "problem_id": f"p{index}", "problem_sha": "x",
                        "problem": problem, "expected_answer": None, "answer": None, "answer_source": "fallback",
                        "votes": {}, "is_correct": None, "stop_reason": "all_done", "allowance_s": 10.0,
                        "wall_s": 1.0, "started_at": "2026-11-28T00:00:01+00:00", "error": None, "samples": samples})
    return records


@pytest.fixture
def runlog():
    return runlog_records


@pytest.fixture(scope="session")
def cycle_corpus(tokenizer):
    """64 learnable examples: each solution repeats a fixed shuffled cycle of letters or digits,
    so every character determines the next; prompts are the solver's."""
    rng = random.Random(0)
    cycles = []
    for alphabet in ("abcdefghijklmnopqrstuvwxyz", "0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
        letters = list(alphabet)
        rng.shuffle(letters)
        cycles.append("".join(letters))
    rows = []
    for i in range(64):
        cycle, start = cycles[i % 3], rng.randrange(26)
        rows.append((f"Continue pattern {i:02d}.", "".join(cycle[(start + j) % len(cycle)] for j in range(40))))
    return [encode_example(tokenizer, problem, solution, max_len=512) for problem, solution in rows]
