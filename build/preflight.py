"""Checks run before a step starts, so that it fails in a second rather than an hour in.

Every check returns `None` when all is well, or one sentence that names what is wrong and what to
do. Steps collect these into a list; the pipeline prints them all and does not start. The checks
do not import TensorRT-LLM (its import fails on a machine without a GPU driver): they only look
for it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

FP8_MIN_CAPABILITY = (8, 9)  # Ada Lovelace / Hopper: the first GPUs with FP8 tensor cores
GB = 10**9


def gpus() -> list[tuple[str, tuple[int, int]]]:
    """Visible CUDA devices as (name, compute capability); empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [
        (torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i))
        for i in range(torch.cuda.device_count())
    ]


def gpu_problem(
    num_gpus: int,
    purpose: str,
    min_capability: tuple[int, int] = FP8_MIN_CAPABILITY,
    devices: list[tuple[str, tuple[int, int]]] | None = None,
) -> str | None:
    devices = gpus() if devices is None else devices
    if not devices:
        return (
            f"No CUDA GPU is visible (torch.cuda.is_available() is False); {purpose} needs "
            f"{num_gpus} GPU(s) with FP8 support (compute capability "
            f"{min_capability[0]}.{min_capability[1]} or newer, e.g. H100)."
        )
    if len(devices) < num_gpus:
        return f"{purpose.capitalize()} uses --tp-size {num_gpus} but only {len(devices)} GPU(s) are visible."
    weak = [name for name, capability in devices[:num_gpus] if capability < min_capability]
    if weak:
        return (
            f"{purpose.capitalize()} needs FP8 tensor cores (compute capability "
            f"{min_capability[0]}.{min_capability[1]}+), which {weak[0]} lacks."
        )
    return None


def trtllm_problems() -> list[str]:
    problems = []
    if importlib.util.find_spec("tensorrt_llm") is None:
        problems.append(
            "TensorRT-LLM is not installed in this Python environment (no `tensorrt_llm` "
            "module); install the wheel from NVIDIA's package index as docs/build.md describes."
        )
    if shutil.which("trtllm-build") is None:
        problems.append(
            "The `trtllm-build` command is not on PATH; it comes with the TensorRT-LLM wheel."
        )
    return problems


def example_script_problem(examples_dir: Path, relative: str) -> str | None:
    script = examples_dir / relative
    if script.is_file():
        return None
    return (
        f"--trtllm-examples: {script} does not exist; point it at the `examples` folder of a "
        "TensorRT-LLM checkout of the same release as the installed wheel."
    )


def file_problem(path: Path, flag: str, what: str) -> str | None:
    if path.is_file():
        return None
    return f"{flag}: {path} does not exist; it should be {what}."


def dir_problem(path: Path, flag: str, what: str) -> str | None:
    if path.is_dir():
        return None
    return f"{flag}: {path} is not a directory; it should be {what}."


def existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def disk_problem(path: Path, need_bytes: int, what: str, free_bytes: int | None = None) -> str | None:
    """`need_bytes` is an estimate; the message says so."""
    where = existing_parent(path)
    free = shutil.disk_usage(where).free if free_bytes is None else free_bytes
    if free >= need_bytes:
        return None
    return (
        f"Not enough free disk under {where} for {what}: about {need_bytes / GB:.1f} GB needed "
        f"(estimate), {free / GB:.1f} GB free."
    )


def writable_problem(path: Path, flag: str) -> str | None:
    where = existing_parent(path)
    if where.is_dir() and os.access(where, os.W_OK):
        return None
    return f"{flag}: cannot create {path} because {where} is not a writable directory."


def collect(*results: str | None | list[str | None]) -> list[str]:
    """The problems among `results` (sentences, Nones and lists of either), in order."""
    problems: list[str] = []
    for result in results:
        for item in result if isinstance(result, list) else [result]:
            if item is not None:
                problems.append(item)
    return problems
