"""A session worker: the process, forked from the warm fork server, that runs one session's cells.

It starts as a copy of the fork server (numpy and sympy already imported), isolates itself
(`isolation.apply`), goes once through a call's machinery without any code (`_rehearse`), says
hello with what isolation it got, then answers "run" requests one at a time until its control
socket closes. It may wait a while before its first request: spare workers are forked before their
session exists. Its stdout and stderr (file descriptors 1 and 2, which the
code's own subprocesses inherit) are pipes read by the solver process; its stdin is /dev/null.

Per call it guarantees: output written before the answer is already in the pipes when the answer
is sent; no process started by the call outlives it (leftovers are killed and reaped before the
answer, and counted in it); Python threads still running after the call are counted, so that the
solver can replace the worker. It does not enforce the wall-clock timeout or the output limit: the
solver process does, by killing the session's processes from outside.
"""

from __future__ import annotations

import builtins
import os
import resource
import signal
import socket
import sys
import time
import types
from typing import NoReturn

from sandbox import processes, protocol, syscalls
from sandbox.cell import run_cell
from sandbox.isolation import Isolation, apply
from sandbox.limits import SandboxLimits

_THREAD_GRACE_S = 0.05  # a thread that is just finishing is not a leftover


def run_worker(ctrl: socket.socket, stdout_fd: int, stderr_fd: int, spec: dict) -> NoReturn:
    """Become the worker described by `spec` (from a spawn request). Never returns."""
    try:
        _redirect_stdio(stdout_fd, stderr_fd)
        os.setsid()  # out of the fork server's process group and session
        limits = SandboxLimits(**spec["limits"])
        isolation = apply(spec["session_dir"], spec["uid"], limits)
        _die_with_parent(spec["server_pid"])
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
        _rehearse(isolation)
        protocol.send(ctrl, {"hello": isolation.to_json()})
        _serve(ctrl, isolation)
    finally:
        os._exit(0)


def _redirect_stdio(stdout_fd: int, stderr_fd: int) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    for source, target in ((devnull, 0), (stdout_fd, 1), (stderr_fd, 2)):
        os.dup2(source, target)
        os.close(source)


def _die_with_parent(server_pid: int) -> None:
    # Set after the uid change, which clears it. If the fork server already died, exit now.
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != server_pid:
        os._exit(0)


def _rehearse(isolation: Isolation) -> None:
    """Go once through a call's machinery, with no code and no output, before the hello.

    A new worker shares its memory with the fork server until it writes to it, so its first call
    would pay about 1 ms of copy-on-write faults. Here they are paid while the worker starts, which
    for a spare is in the background. Nothing of it reaches the code: its namespace, its cell
    numbers and its streams are made afresh by each call.
    """
    _arm_cpu_limit(1.0)  # re-armed by every call
    _reset_standard_streams()
    exec(compile("pass", "<rehearsal>", "exec", dont_inherit=True), {})  # noqa: S102
    _finish_output("")
    protocol.encode({"status": "ok", "stray_processes": _stop_stray_processes(isolation.user),
                     "stray_threads": _count_stray_threads()})


def _serve(ctrl: socket.socket, isolation: Isolation) -> None:
    namespace = _fresh_main_module().__dict__
    sys.argv = [""]
    while True:
        request = protocol.recv(ctrl)
        if request is None:
            return
        assert request.get("op") == "run", request
        protocol.send(ctrl, _run(request, namespace, isolation))


def _fresh_main_module() -> types.ModuleType:
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    return main


def _run(request: dict, namespace: dict, isolation: Isolation) -> dict:
    _arm_cpu_limit(float(request["cpu_s"]))
    _reset_standard_streams()
    status, error_text = run_cell(request["code"], int(request["cell"]), namespace)
    _finish_output(error_text)
    signal.setitimer(signal.ITIMER_REAL, 0)  # an alarm the code set must not fire in a later call
    return {
        "status": status,
        "stray_processes": _stop_stray_processes(own_uid=isolation.user),
        "stray_threads": _count_stray_threads(),
    }


def _arm_cpu_limit(cpu_s: float) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used_s = usage.ru_utime + usage.ru_stime
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (int(used_s + cpu_s) + 1, hard))


def _reset_standard_streams() -> None:
    """Fresh line-buffered text streams on fds 0-2, whatever the previous cell did to sys.std*."""
    sys.stdin = sys.__stdin__ = open(0, "r", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", errors="backslashreplace",
                                       buffering=1, closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace",
                                       buffering=1, closefd=False)


def _finish_output(error_text: str) -> None:
    streams = (sys.__stdout__, sys.__stderr__)
    for stream in streams:
        try:
            stream.flush()
        except (OSError, ValueError):  # the code closed the stream or its fd
            pass
    if error_text:
        try:
            os.write(2, error_text.encode("utf-8", errors="backslashreplace"))
        except OSError:
            pass


def _stop_stray_processes(own_uid: bool) -> int:
    """Kill and reap every process the call left behind; return how many were still running."""
    leftovers = processes.children()
    if not leftovers:
        return 0
    running = sum(not processes.is_zombie(pid) for pid in leftovers)
    processes.kill_descendants(own_uid)
    return running


def _count_stray_threads() -> int:
    deadline = time.monotonic() + _THREAD_GRACE_S
    while True:
        others = len(sys._current_frames()) - 1
        if others == 0 or time.monotonic() > deadline:
            return others
        time.sleep(0.002)
