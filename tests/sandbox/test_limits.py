"""Limits stop runaway code: wall time, memory, processes, output, CPU time, file size.

Run: python -m pytest tests/sandbox/test_limits.py -q
"""

from __future__ import annotations

import importlib.util
import time

import pytest
from sandbox_testing import needs_root, pids_of_uid, run_ok, session_uid_and_worker_pid, wait_until

from sandbox import Sandbox, SandboxLimits
from sandbox.output import CUT_MARKER


@pytest.fixture(scope="module")
def strict_sandbox():
    limits = SandboxLimits(timeout_s=5.0, cpu_s=0.5, file_size_mb=1, memory_mb=512)
    with Sandbox(max_workers=2, limits=limits) as pool:
        yield pool


@pytest.mark.parametrize(
    "field", ["timeout_s", "memory_mb", "cpu_s", "file_size_mb", "max_processes",
              "max_output_chars", "max_output_mb", "restore_timeout_s"])
def test_limits_reject_values_that_are_not_positive(field):
    with pytest.raises(ValueError, match=field):
        SandboxLimits(**{field: 0})


@needs_root
def test_timeout_kills_children_and_grandchildren(sandbox, session_id):
    uid, worker_pid = session_uid_and_worker_pid(sandbox, session_id)
    code = (
        "import os, subprocess, time\n"
        "child = subprocess.Popen(['sh', '-c', 'sleep 60 & echo $! > grandchild; exec sleep 60'],\n"
        "                         start_new_session=True)\n"
        "open('child', 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    result = sandbox.execute(session_id, code, timeout_s=1.0)
    assert result.status == "timeout"
    assert time.monotonic() - started < 5
    directory = sandbox.session_dir(session_id)
    child, grandchild = (int((directory / name).read_text()) for name in ("child", "grandchild"))
    leftovers = pids_of_uid(uid)
    assert not {worker_pid, child, grandchild} & leftovers
    assert len(leftovers) == 1  # only the fresh worker that replaced the killed one


@pytest.mark.parametrize(
    "bomb",
    [
        "x = bytearray(10**10)",
        pytest.param("import numpy\nx = numpy.ones((10**5, 10**5))",
                     marks=pytest.mark.skipif(importlib.util.find_spec("numpy") is None, reason="numpy not installed")),
        "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))",
    ],
    ids=["bytearray", "numpy", "gradual"],
)
def test_memory_bomb_gives_memory_status_and_the_session_survives(sandbox, session_id, bomb):
    run_ok(sandbox, session_id, "kept = 7")
    result = sandbox.execute(session_id, bomb, timeout_s=5.0)
    assert result.status == "memory"
    assert "MemoryError" in result.stderr
    assert run_ok(sandbox, session_id, "print(kept)").stdout == "7\n"


@needs_root
def test_fork_bomb_is_contained(sandbox, session_id):
    uid, _ = session_uid_and_worker_pid(sandbox, session_id)
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    future = sandbox.submit(session_id, bomb, timeout_s=1.5)
    assert wait_until(lambda: len(pids_of_uid(uid)) > 5, timeout_s=1.0)
    peak = max(len(pids_of_uid(uid)) for _ in range(5))
    bystander = sandbox.execute(f"{session_id}-bystander", "print(sum(range(10)))")
    result = future.result()
    assert peak <= sandbox.limits.max_processes
    assert bystander.status == "ok" and bystander.stdout == "45\n"
    assert result.status == "timeout"
    assert run_ok(sandbox, session_id, "print('after')").stdout == "after\n"
    assert len(pids_of_uid(uid)) == 1


@pytest.mark.parametrize(
    "flood",
    ["print('x' * 10**8)", "import os\nfor _ in range(100):\n    os.write(1, b'y' * 10**6)"],
    ids=["print", "raw-fd"],
)
def test_hundred_megabytes_of_output_are_cut_and_the_call_stopped(sandbox, session_id, flood):
    result = sandbox.execute(session_id, "print('first line')\n" + flood)
    assert result.status == "output_limit"
    assert result.stdout.startswith("first line\n")
    assert CUT_MARKER in result.stdout
    assert len(result.stdout) <= sandbox.limits.max_output_chars + len(CUT_MARKER) + 2
    assert run_ok(sandbox, session_id, "print('fine')").stdout == "fine\n"


def test_output_longer_than_max_chars_is_cut_but_the_call_succeeds(sandbox, session_id):
    result = sandbox.execute(session_id, "for i in range(1000):\n    print(i)")
    assert result.status == "ok"
    assert result.stdout.startswith("0\n1\n2\n") and result.stdout.endswith("998\n999\n")
    assert CUT_MARKER in result.stdout


def test_cpu_time_limit_ends_the_call_as_timeout(strict_sandbox, session_id):
    result = strict_sandbox.execute(session_id, "while True:\n    pass")
    assert result.status == "timeout"
    assert "CPU" in result.note
    assert result.wall_s < 4.0
    assert run_ok(strict_sandbox, session_id, "print(1)").stdout == "1\n"


def test_file_size_limit_makes_a_larger_write_fail(strict_sandbox, session_id):
    result = strict_sandbox.execute(session_id, "open('big', 'wb').write(b'0' * 2 * 2**20)")
    assert result.status == "error"
    assert "File too large" in result.stderr
