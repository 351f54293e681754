"""The pool runs sessions in parallel within max_workers, is thread-safe, and leaves no process behind.

Run: python -m pytest tests/sandbox/test_pool.py -q
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sandbox_testing import (TEST_LIMITS, descendants, is_alive, processes_of, session_gone,
                             run_ok, session_uid_and_worker_pid, wait_until)

from sandbox import Sandbox
from sandbox.session import CLOSED_BEFORE, CLOSED_DURING

REPO = Path(__file__).resolve().parents[2]


def test_submit_runs_sessions_concurrently(sandbox, session_id):
    sessions = [f"{session_id}-a", f"{session_id}-b"]
    for name in sessions:
        run_ok(sandbox, name, "import time")  # start their workers first
    started = time.monotonic()
    futures = [sandbox.submit(name, "time.sleep(0.5)") for name in sessions]
    results = [future.result() for future in futures]
    elapsed = time.monotonic() - started
    assert all(result.status == "ok" for result in results)
    assert elapsed < 0.9, f"two 0.5 s calls took {elapsed:.2f} s"


def test_execute_is_thread_safe(sandbox, session_id):
    def work(i: int) -> str:
        name = f"{session_id}-{i % 4}"
        return sandbox.execute(name, f"total = globals().get('total', 0) + {i}\nprint({i})").stdout

    with ThreadPoolExecutor(max_workers=8) as threads:
        outputs = list(threads.map(work, range(40)))
    assert outputs == [f"{i}\n" for i in range(40)]
    totals = [run_ok(sandbox, f"{session_id}-{k}", "print(total)").stdout for k in range(4)]
    assert sum(int(total) for total in totals) == sum(range(40))


def test_close_session_cancels_queued_calls_and_kills_the_running_one(sandbox, session_id):
    uid, worker = session_uid_and_worker_pid(sandbox, session_id)
    running = sandbox.submit(session_id, "import time\ntime.sleep(30)", timeout_s=30)
    queued = sandbox.submit(session_id, "print('never')")
    time.sleep(0.3)
    started = time.monotonic()
    sandbox.close_session(session_id)
    assert time.monotonic() - started < 2
    assert running.result(timeout=2).status == "crashed"
    assert running.result().note == CLOSED_DURING
    assert queued.result(timeout=2).status == "crashed"
    assert queued.result().note == CLOSED_BEFORE
    assert session_gone(uid, [worker])


def test_idle_workers_are_evicted_beyond_max_workers_and_restored_by_replay():
    with Sandbox(max_workers=1, limits=TEST_LIMITS) as pool:
        first_pid = int(run_ok(pool, "a", "import os\nx = 'from a'\nprint(os.getpid())").stdout)
        second = run_ok(pool, "b", "import os\nprint(os.getpid())")
        assert len(processes_of(pool)) == 2  # the fork server and one worker
        again = run_ok(pool, "a", "print(x, os.getpid())")
        assert again.stdout.split()[:2] == ["from", "a"]
        assert int(again.stdout.split()[2]) not in {first_pid, int(second.stdout)}


def test_a_session_waits_while_all_workers_are_busy():
    with Sandbox(max_workers=1, limits=TEST_LIMITS) as pool:
        run_ok(pool, "a", "pass")
        slow = pool.submit("a", "import time\ntime.sleep(0.5)")
        time.sleep(0.1)
        waiting = pool.submit("b", "print('b ran')")
        assert waiting.result().stdout == "b ran\n"
        assert slow.done()


def test_a_closed_sandbox_answers_with_a_crashed_result():
    pool = Sandbox(max_workers=1, limits=TEST_LIMITS)
    pool.close()
    result = pool.execute("a", "print(1)")
    assert result.status == "crashed" and "closed" in result.note


def test_close_leaves_no_process_behind():
    pool = Sandbox(max_workers=2, limits=TEST_LIMITS)
    uids = [session_uid_and_worker_pid(pool, name)[0] for name in ("a", "b")]
    tree = processes_of(pool)
    assert len(tree) == 3  # the fork server and two workers
    pool.close()
    assert not any(is_alive(pid) for pid in tree)
    assert all(session_gone(uid, tree) for uid in uids)


def test_garbage_collection_leaves_no_process_behind():
    pool = Sandbox(max_workers=1, limits=TEST_LIMITS)
    uid, _ = session_uid_and_worker_pid(pool, "a")
    tree = processes_of(pool)
    # The thread that ran the call holds the pool until it ends.
    assert wait_until(lambda: not any(thread.name.startswith("sandbox-session")
                                      for thread in threading.enumerate()))
    del pool
    gc.collect()
    assert not any(is_alive(pid) for pid in tree)
    assert session_gone(uid, tree)


_CHILD_PROGRAM = """
import sys, time
from sandbox import Sandbox
pool = Sandbox(max_workers=1)
print(pool.execute("a", "import os\\nprint(os.getpid())").stdout, flush=True)
print(pool.session_dir("a").parent, flush=True)
sys.stdin.readline()  # the test has seen the processes
if sys.argv[1] == "hang":
    time.sleep(60)
"""


@pytest.mark.parametrize("ending", ["exit", "killed"])
def test_the_solver_exiting_or_dying_without_close_leaves_no_process_or_file_behind(ending):
    mode = "exit" if ending == "exit" else "hang"
    child = subprocess.Popen([sys.executable, "-c", _CHILD_PROGRAM, mode], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    worker_pid = int(child.stdout.readline())
    child.stdout.readline()  # the end of the code's output
    workspace = Path(child.stdout.readline().strip())
    assert workspace.is_dir()
    tree = descendants(child.pid)
    assert worker_pid in tree
    child.stdin.write("go on\n")
    child.stdin.flush()
    if ending == "killed":
        child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in tree), timeout_s=5)
    assert not workspace.exists()
