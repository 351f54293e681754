"""`python -m sandbox` prints the result as one JSON object and exits 0 whatever the code did.

Run: python -m pytest tests/sandbox/test_cli.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("code", "status", "stdout"),
    [("print(6 * 7)", "ok", "42\n"), ("1/0", "error", ""), ("while True: pass", "timeout", "")],
)
def test_cli_prints_one_json_object_and_exits_zero(code, status, stdout):
    completed = subprocess.run([sys.executable, "-m", "sandbox", "--timeout", "1", "--memory-mb", "512"],
                               input=code, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert completed.returncode == 0
    result = json.loads(completed.stdout)
    assert {"status", "stdout", "stderr", "wall_s"} <= set(result)
    assert result["status"] == status and result["stdout"] == stdout


def test_cli_rejects_a_non_positive_timeout():
    completed = subprocess.run([sys.executable, "-m", "sandbox", "--timeout", "0"], input="",
                               capture_output=True, text=True, cwd=REPO, timeout=60)
    assert completed.returncode == 2 and "timeout_s" in completed.stderr
