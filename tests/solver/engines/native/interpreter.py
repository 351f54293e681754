"""Running Triton kernels on the CPU: Triton's interpreter, in a fresh process (TRITON_INTERPRET
must be set before the kernels are defined), float32 only (it cannot run bf16 or FP8 here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]


def interpreter_unavailable() -> str | None:
    """Why the interpreter cannot run here, or None."""
    if find_spec("triton") is None:
        return "triton is not installed"
    import numpy

    if tuple(int(x) for x in numpy.__version__.split(".")[:2]) >= (2, 3):
        return f"Triton's interpreter needs NumPy < 2.3, found {numpy.__version__}"
    return None


def run_in_interpreter(script: str):
    """Run `script` under the interpreter; returns the JSON of its last printed line."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
