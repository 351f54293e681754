"""Nothing the code does outlives its call or hurts the pool; the next call always works.

Run: python -m pytest tests/sandbox/test_worker.py -q
"""

from __future__ import annotations

import pytest
from sandbox_testing import needs_root, pids_of_uid, run_ok, session_uid_and_worker_pid

ATTACKS = {
    "sys-exit": ("import sys\nsys.exit(3)", {"error"}),
    "os-exit": ("import os\nos._exit(0)", {"crashed"}),
    "segfault": ("import ctypes\nctypes.string_at(0)", {"crashed"}),
    "kill-parent": ("import os\nos.kill(os.getppid(), 9)", {"error"}),
    "kill-everything": ("import os\nos.kill(-1, 9)", {"ok"}),
    "ignore-sigterm": (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)",
        {"timeout"},
    ),
    "background-thread": (
        "import threading, time\n"
        "threading.Thread(target=lambda: [print('tick') or time.sleep(0.01) for _ in range(10**6)],\n"
        "                 daemon=True).start()",
        {"ok"},
    ),
    "double-fork-daemon": (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n",
        {"ok"},
    ),
    "setsid-subprocess": (
        "import subprocess\nsubprocess.Popen(['sleep', '60'], start_new_session=True)",
        {"ok"},
    ),
    "alarm": ("import signal\nsignal.setitimer(signal.ITIMER_REAL, 0.2)", {"ok"}),
    "close-all-fds": ("import os\nos.closerange(0, 1024)", {"crashed", "timeout"}),
    "break-stdout": ("import sys\nsys.stdout = None\nsys.stderr = None", {"ok"}),
    "break-worker-modules": ("import json\njson.dumps = None", {"crashed"}),
}


@needs_root
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_does_not_outlive_the_call_or_hurt_the_pool(sandbox, session_id, attack):
    code, expected_statuses = ATTACKS[attack]
    uid, _ = session_uid_and_worker_pid(sandbox, session_id)
    run_ok(sandbox, session_id, "kept = 42")

    result = sandbox.execute(session_id, code, timeout_s=1.0)

    assert result.status in expected_statuses, result
    # The pause gives anything left behind (a thread, a timer, a daemon) time to strike.
    after = run_ok(sandbox, session_id, "import os, time\ntime.sleep(0.3)\nprint(kept, os.getpid())")
    kept, worker_pid = after.stdout.split()
    assert kept == "42"
    assert pids_of_uid(uid) == {int(worker_pid)}
    assert run_ok(sandbox, f"{session_id}-bystander", "print('fine')").stdout == "fine\n"


def test_leftover_processes_are_reported_in_the_note(sandbox, session_id):
    result = run_ok(sandbox, session_id, "import subprocess\nsubprocess.Popen(['sleep', '60'])")
    assert result.note == "1 background process(es) left running by the code were killed."


def test_leftover_thread_replaces_the_worker_and_keeps_the_state_before_the_call(sandbox, session_id):
    run_ok(sandbox, session_id, "before = 1")
    code = "import threading, time\nduring = 2\nthreading.Thread(target=time.sleep, args=(60,)).start()"
    result = run_ok(sandbox, session_id, code)
    assert "thread(s) running" in result.note and not result.state_lost
    assert run_ok(sandbox, session_id, "print(before, 'during' in globals())").stdout == "1 False\n"


def test_stdin_is_empty(sandbox, session_id):
    result = sandbox.execute(session_id, "input()")
    assert result.status == "error" and result.stderr.endswith("EOFError: EOF when reading a line\n")
