"""Finding and stopping the processes a worker (or the fork server) is responsible for.

Both run as "child subreapers" (PR_SET_CHILD_SUBREAPER): a descendant orphaned by its parent's
death, even one that called setsid() after a double fork, is re-parented to them instead of to
init. So "my children" is every live descendant's way back to me, and killing children until
none are left stops a whole tree.
"""

from __future__ import annotations

import os
import signal
import time


def children(pid: int | None = None) -> list[int]:
    """Direct children of `pid` (default: this process), including zombies."""
    pid = os.getpid() if pid is None else pid
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as listing:
                found += [int(child) for child in listing.read().split()]
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN, or pid is gone
        return _children_by_scan(pid)
    return found


def is_zombie(pid: int) -> bool:
    """True for a zombie, and for a process that is gone."""
    fields = _stat_fields(pid)
    return not fields or fields[0] == "Z"


def process_table() -> dict[int, tuple[str, int]]:
    """State letter and parent pid of every process /proc lists (zombies included)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and len(fields := _stat_fields(int(entry)) or ()) > 1:
            table[int(entry)] = (fields[0], int(fields[1]))
    return table


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first, then the parent pid)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()
    except OSError:
        return None


def reap_children() -> None:
    """Collect every child that has exited, without waiting for the others."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_descendants(own_uid: bool, deadline_s: float = 2.0) -> None:
    """SIGKILL this process's descendants and reap them (needs a subreaper, see module doc).

    With `own_uid` (the caller runs under a uid no other process shares) one kill(-1) stops them
    all atomically: Linux sends it to every process of the uid except the caller, and a fork
    cannot slip between. Without it, descendants are killed level by level, and one that forks
    faster than it is killed may survive until `deadline_s` runs out.
    """
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        live = [child for child in children() if not is_zombie(child)]
        reap_children()
        if not live:
            return
        if own_uid:
            assert os.getuid() != 0, "kill(-1) as root would kill the machine"
            os.kill(-1, signal.SIGKILL)
        else:
            for child in live:
                _kill_quietly(child)
        time.sleep(0.001)


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _children_by_scan(pid: int) -> list[int]:
    return [child for child, (_, parent) in process_table().items() if parent == pid]
