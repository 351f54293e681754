"""What the fp8 and redrafter steps share about TensorRT-LLM: engine limits and `trtllm-build`.

TensorRT-LLM's conversion scripts (`examples/quantization/quantize.py`,
`examples/redrafter/convert_checkpoint.py`) are not part of its wheel, so both steps take
`--trtllm-examples DIR`: the `examples` folder of a TensorRT-LLM checkout of the same release as
the installed wheel. Both run the scripts with the current Python interpreter.

Flag names below are TensorRT-LLM's (`tensorrt_llm/commands/build.py`). Nothing here imports
TensorRT-LLM.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from build.plan import Command

DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class EngineLimits:
    """Sizes fixed when the engine is built (AIMO-2 values by default)."""

    max_batch_size: int = 32
    max_input_len: int = 32000
    max_seq_len: int = 32000
    max_num_tokens: int = 32000

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.max_input_len > self.max_seq_len:
            raise ValueError("--max-input-len must not exceed --max-seq-len")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = EngineLimits()
    group = parser.add_argument_group("engine limits (trtllm-build)")
    group.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size, help="concurrent sequences (each of N samples takes one); default %(default)s")
    group.add_argument("--max-input-len", type=int, default=defaults.max_input_len, help="longest prompt in tokens; default %(default)s")
    group.add_argument("--max-seq-len", type=int, default=defaults.max_seq_len, help="longest prompt + generation in tokens; default %(default)s")
    group.add_argument("--max-num-tokens", type=int, default=defaults.max_num_tokens, help="tokens per engine step across the batch; default %(default)s")


def engine_limits_from_args(args: argparse.Namespace) -> EngineLimits:
    return EngineLimits(args.max_batch_size, args.max_input_len, args.max_seq_len, args.max_num_tokens)


def add_trtllm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trtllm-examples", type=Path, required=True, help="the `examples` folder of a TensorRT-LLM checkout matching the installed wheel (its scripts are not in the wheel)")
    parser.add_argument("--tp-size", type=int, default=1, help="tensor-parallel GPUs the engine runs on; default %(default)s")
    parser.add_argument("--workers", type=int, default=None, help="parallel build workers for trtllm-build; default: --tp-size")


def example_command(examples_dir: Path, script: str, *flags: str) -> Command:
    return Command((sys.executable, str(examples_dir / script), *flags), name=script)


def build_command(
    checkpoint_dir: Path, engine_dir: Path, limits: EngineLimits, workers: int, extra: tuple[str, ...] = ()
) -> Command:
    """`trtllm-build` for an FP8 checkpoint with paged KV cache and paged context FMHA."""
    return Command(
        (
            "trtllm-build",
            "--checkpoint_dir", str(checkpoint_dir),
            "--output_dir", str(engine_dir),
            "--gemm_plugin", "fp8",
            "--use_paged_context_fmha", "enable",
            "--kv_cache_type", "paged",
            *extra,
            "--max_batch_size", str(limits.max_batch_size),
            "--max_input_len", str(limits.max_input_len),
            "--max_seq_len", str(limits.max_seq_len),
            "--max_num_tokens", str(limits.max_num_tokens),
            "--workers", str(workers),
        )
    )


def read_checkpoint_config(checkpoint_dir: Path) -> dict | None:
    """A TensorRT-LLM checkpoint's `config.json`, or None when absent/unreadable."""
    try:
        return json.loads((checkpoint_dir / "config.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def dir_bytes(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file()) if path.is_dir() else 0
