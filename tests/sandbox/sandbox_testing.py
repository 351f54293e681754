"""Helpers for the sandbox tests: inspecting processes from outside, asking the code about itself."""

from __future__ import annotations

import os
import time

import pytest

from sandbox import Sandbox, SandboxLimits
from sandbox.processes import process_table

SECRET_NAME = "SANDBOX_TEST_SECRET"
SECRET_VALUE = "hunter2-do-not-leak"
TEST_LIMITS = SandboxLimits(timeout_s=5.0, memory_mb=512, max_processes=32, restore_timeout_s=5.0)


def run_ok(pool: Sandbox, session_id: str, code: str):
    result = pool.execute(session_id, code)
    assert result.status == "ok", result
    return result


def session_uid_and_worker_pid(pool: Sandbox, session_id: str) -> tuple[int, int]:
    """Asked of the code itself: no pid namespace, so its getpid() is the host's pid."""
    uid, pid = run_ok(pool, session_id, "import os\nprint(os.getuid(), os.getpid())").stdout.split()
    return int(uid), int(pid)


def session_gone(uid: int, pids) -> bool:
    """Every process of a session is gone: with root, none of its own uid is left; without
    root (sessions run as our own uid, like this test), none of `pids` is alive."""
    if uid != os.getuid():
        return pids_of_uid(uid) == set()
    return not any(is_alive(pid) for pid in pids)


def pids_of_uid(uid: int) -> set[int]:
    """Live (non-zombie) processes whose real uid is `uid`."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
            found.add(int(entry))
    return found


def descendants(pid: int) -> set[int]:
    """All live processes below `pid` in the process tree."""
    parent_of = {child: parent for child, (state, parent) in process_table().items() if state != "Z"}
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parent_of.items() if parent in frontier} - found
        found |= frontier
    return found


def processes_of(pool: Sandbox) -> set[int]:
    """The pool's fork server and every live process below it (workers, spares, their children).

    Unlike `descendants(os.getpid())`, this ignores the processes of other pools, such as the
    spares that the module's shared sandbox forks in the background.
    """
    server_pid = pool._server.pid
    return {server_pid} | descendants(server_pid)


def is_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["Uid"].split()[0])


def wait_until(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (own uid per session)")
