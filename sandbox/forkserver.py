"""The warm parent of all workers, and the solver's side of talking to it.

`ForkServer` (in the solver process) starts one fork-server process: a fresh interpreter with a
scrubbed environment that imports numpy, sympy and common standard modules once, then waits for
requests on a Unix socket:
- "spawn": fork a worker for a session. The solver receives the worker's control socket, its
  stdout and stderr pipes, and an exit-status pipe on which the fork server, the worker's parent,
  writes the wait status when it reaps it (so the solver learns of a segfault or a kill at once).
- "kill": SIGKILL a session's worker and every process of the session's uid (a helper process
  switches to that uid and calls kill(-1), which Linux applies atomically: a fork bomb cannot
  outrun it). Without root, the worker's process group is killed instead.

Guarantees: a worker dies when the fork server dies (parent-death signal); the fork server kills
every worker and every process of their uids, removes the sandbox's directory, then exits, when
the solver closes the socket or dies (end of stream). The fork server never runs user code and never reads anything a worker
wrote. Not covered: a solver that forks (e.g. multiprocessing's "fork" start method) keeps the
socket open in its children, so the fork server then outlives the solver until they exit.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

from sandbox import isolation, processes, protocol, syscalls
from sandbox.handle import WorkerHandle
from sandbox.limits import SandboxLimits
from sandbox.worker import run_worker

WARM_MODULES = (
    "numpy", "sympy", "mpmath", "math", "cmath", "fractions", "decimal", "itertools",
    "functools", "collections", "heapq", "bisect", "random", "statistics", "re", "string",
    "json", "operator", "copy", "time", "datetime", "typing", "dataclasses", "numbers",
    "array", "struct", "textwrap", "pprint", "subprocess", "threading", "signal", "ctypes",
    "pickle", "hashlib", "concurrent.futures", "multiprocessing", "networkx",
)
_STATUS = struct.Struct(">i")
_HELLO_TIMEOUT_S = 60.0  # the fork server's first message, sent before its imports
_WORKER_HELLO_TIMEOUT_S = 30.0
_KILL_DEADLINE_S = 2.0  # a process stuck in the kernel (D state) may take longer to die
_QUIET_S = 0.02  # a background request waits until no other one came for this long,
_MAX_DEFER_S = 0.25  # but no longer than this, so that it cannot starve


class SandboxError(Exception):
    """The sandbox's own machinery failed (not the user's code)."""


# ---------------------------------------------------------------- solver side


class ForkServer:
    """Handle to the fork-server process. Thread-safe; restarts the process if it died.

    Requests are served one at a time. Background ones (forking and killing spare workers) give
    way to the others: they start once no other request came for `_QUIET_S` (or after
    `_MAX_DEFER_S`), so that a burst of closes or calls does not queue behind them. A background
    request that already started may still delay another one by its own length (a few ms).
    """

    def __init__(self, limits: SandboxLimits, workspace: Path) -> None:
        self._limits = limits
        self._workspace = workspace  # removed by the fork server when it stops
        # Re-entrant: garbage collection may run the pool's finalizer, which calls `close`, in a
        # thread of the spares that is in the middle of a request.
        self._lock = threading.RLock()
        self._closed = False
        self._traffic = threading.Condition()  # guards the two fields below
        self._foreground_requests = 0  # waiting or in progress
        self._last_foreground_s = float("-inf")
        self._start()

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parent.parent)
        bootstrap = (f"import sys; sys.path.insert(0, {package_root!r}); "
                     "from sandbox.forkserver import serve; "
                     f"serve({theirs.fileno()}, {package_root!r}, {str(self._workspace)!r})")
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-c", bootstrap],
            pass_fds=(theirs.fileno(),),
            env=isolation.base_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,  # a Ctrl-C in the solver's terminal is not for it
        )
        theirs.close()
        self._sock = ours
        self._isolation: isolation.Isolation | None = None

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def isolation(self) -> isolation.Isolation:
        """What every worker will get (probed once by the fork server at start)."""
        with self._turn(background=False):
            return self._hello()

    def spawn(self, uid: int, session_dir: str, background: bool = False) -> WorkerHandle:
        """A new worker for the session with this uid and directory, ready to run code.

        Restarts the fork-server process if it died, unless `close` was called: then it raises.
        """
        spec = {"uid": uid, "session_dir": session_dir, "limits": asdict(self._limits)}
        with self._turn(background):
            if self._closed:
                raise SandboxError("the sandbox is closed")
            if self._process.poll() is not None:
                self._sock.close()
                self._start()
            expected = self._hello()
            reply, fds = self._request({"op": "spawn", "spec": spec}, max_fds=4)
        if "pid" not in reply or len(fds) != 4:
            for fd in fds:
                os.close(fd)
            raise SandboxError(f"spawn failed: {reply.get('error', reply)}")
        handle = WorkerHandle(reply["pid"], uid, *fds)
        got = handle.wait_hello(_WORKER_HELLO_TIMEOUT_S)
        if got is None or not got.covers(expected):
            self.kill(uid, handle.pid, background)
            handle.close()
            raise SandboxError(f"worker did not start with the expected isolation: {got}")
        return handle

    def kill(self, uid: int, pid: int | None, background: bool = False) -> None:
        """SIGKILL the worker `pid` and every other process of the session; returns when done."""
        with self._turn(background):
            if self._process.poll() is None:
                self._request({"op": "kill", "uid": uid, "pid": pid}, max_fds=0)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the fork server; it kills every worker and their processes first."""
        with self._traffic:
            self._closed = True  # from now on nothing restarts it
            self._traffic.notify_all()  # background requests stop waiting, and fail
        with self._lock:
            self._sock.close()
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    @contextlib.contextmanager
    def _turn(self, background: bool) -> Iterator[None]:
        """Hold the lock for one request; a background one first waits for a quiet moment."""
        if background:
            self.wait_until_quiet()
        else:
            with self._traffic:
                self._foreground_requests += 1
        try:
            with self._lock:
                yield
        finally:
            if not background:
                with self._traffic:
                    self._foreground_requests -= 1
                    self._last_foreground_s = time.monotonic()
                    self._traffic.notify_all()

    def wait_until_quiet(self) -> None:
        """Return once no foreground request came for `_QUIET_S`, or after `_MAX_DEFER_S`."""
        give_up_s = time.monotonic() + _MAX_DEFER_S
        with self._traffic:
            while not self._closed:
                now_s = time.monotonic()
                idle_s = now_s - self._last_foreground_s
                if now_s >= give_up_s or (self._foreground_requests == 0 and idle_s >= _QUIET_S):
                    return
                self._traffic.wait(min(_QUIET_S, give_up_s - now_s))

    def _hello(self) -> isolation.Isolation:
        if self._isolation is None:
            self._sock.settimeout(_HELLO_TIMEOUT_S)
            try:
                message = protocol.recv(self._sock)
            except OSError as error:
                raise SandboxError(f"the fork server did not start: {error}") from None
            finally:
                self._sock.settimeout(None)
            if message is None or "hello" not in message:
                raise SandboxError("the fork server did not start")
            self._isolation = isolation.Isolation.from_json(message["hello"])
        return self._isolation

    def _request(self, message: protocol.Message, max_fds: int) -> tuple[protocol.Message, list[int]]:
        try:
            protocol.send(self._sock, message)
            reply, fds = protocol.recv_with_fds(self._sock, max_fds)
        except OSError as error:
            raise SandboxError(f"fork server unreachable: {error}") from None
        if reply is None:
            raise SandboxError("the fork server exited")
        return reply, fds


# ---------------------------------------------------------------- fork-server process


def serve(sock_fd: int, package_root: str, workspace: str) -> NoReturn:
    """Entry point of the fork-server process."""
    if sys.path and sys.path[0] == package_root:
        del sys.path[0]  # the code in workers has no business importing the solver
    sock = socket.socket(fileno=sock_fd)
    probed = _probe_isolation()
    protocol.send(sock, {"hello": probed.to_json()})
    _warm_up()
    _Server(sock, own_uids=probed.user).run()
    shutil.rmtree(workspace, ignore_errors=True)  # also when the solver was killed
    os._exit(0)


def _probe_isolation() -> isolation.Isolation:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, json.dumps(isolation.probe().to_json()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return isolation.Isolation.from_json(json.loads(data))


def _warm_up() -> None:
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) the warm objects in workers


class _Server:
    def __init__(self, sock: socket.socket, own_uids: bool) -> None:
        self._sock = sock
        self._own_uids = own_uids
        self._workers: dict[int, tuple[int, int]] = {}  # pid -> (uid, write end of status pipe)
        self._uids_to_sweep: set[int] = set()
        self._wakeup_read, self._wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the selector
        # Adopt what a dying worker leaves behind, to reap it (root) or kill it (no root).
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ)
        self._selector.register(self._wakeup_read, selectors.EVENT_READ)

    def run(self) -> None:
        while True:
            ready = self._selector.select(timeout=None if self._own_uids else 0.5)
            for key, _ in ready:
                if key.fileobj is self._sock:
                    request = protocol.recv(self._sock)
                    if request is None:
                        self._shutdown()
                        return
                    self._handle(request)
                else:
                    _drain(self._wakeup_read)
            self._reap()
            if not self._own_uids:
                self._kill_adopted()

    def _handle(self, request: protocol.Message) -> None:
        if request["op"] == "spawn":
            self._spawn(request["spec"])
        elif request["op"] == "kill":
            self._kill(int(request["uid"]), request.get("pid"))
            protocol.send(self._sock, {"ok": True})
        else:
            protocol.send(self._sock, {"error": f"unknown op {request['op']!r}"})

    def _spawn(self, spec: dict) -> None:
        ctrl_ours, ctrl_theirs = socket.socketpair()
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        status_read, status_write = os.pipe()
        try:
            pid = os.fork()
        except OSError as error:
            for fd in (out_read, out_write, err_read, err_write, status_read, status_write):
                os.close(fd)
            ctrl_ours.close()
            ctrl_theirs.close()
            protocol.send(self._sock, {"error": f"fork: {error}"})
            return
        if pid == 0:
            try:  # never return into the fork server's loop from a child
                self._forget_in_child()
                for fd in (out_read, err_read, status_read, status_write):
                    os.close(fd)
                ctrl_ours.close()
                run_worker(ctrl_theirs, out_write, err_write, {**spec, "server_pid": os.getppid()})
            finally:
                os._exit(1)
        for fd in (out_write, err_write):
            os.close(fd)
        ctrl_theirs.close()
        uid = int(spec["uid"])
        self._workers[pid] = (uid, status_write)
        self._uids_to_sweep.add(uid)
        fds = (ctrl_ours.fileno(), out_read, err_read, status_read)
        protocol.send(self._sock, {"pid": pid}, fds=fds)
        ctrl_ours.close()
        for fd in (out_read, err_read, status_read):
            os.close(fd)

    def _forget_in_child(self) -> None:
        """In a new worker: drop everything of the fork server's."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self._selector.close()
        self._sock.close()
        os.close(self._wakeup_read)
        os.close(self._wakeup_write)
        for _, status_write in self._workers.values():
            os.close(status_write)

    def _kill(self, uid: int, pid: int | None) -> None:
        if pid in self._workers:  # not reaped yet, so the pid cannot belong to anyone else
            os.kill(pid, signal.SIGKILL)
            if not self._own_uids:
                _killpg_quietly(pid)
                # Return once it is gone, as with own uids: reap it (it is our child).
                deadline = time.monotonic() + _KILL_DEADLINE_S
                self._reap_while(lambda: pid in self._workers and time.monotonic() < deadline)
        if self._own_uids:
            self._kill_all_of_uid(uid)
            if all(worker_uid != uid for worker_uid, _ in self._workers.values()):
                self._uids_to_sweep.discard(uid)

    def _kill_all_of_uid(self, uid: int) -> None:
        """Kill every process of `uid`; return once they are all gone, zombies reaped."""
        helper = _spawn_uid_killer(uid, _KILL_DEADLINE_S)
        # The dead re-parent to us (we are a subreaper), and the helper waits until they are
        # reaped, so keep reaping while it works.
        self._reap_while(lambda: _is_running(helper))

    def _reap_while(self, busy: Callable[[], bool]) -> None:
        while busy():
            self._reap()
            time.sleep(0.0002)

    def _reap(self) -> None:
        """Collect exited children; tell the solver how its workers ended."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self._workers.pop(pid, None)
            if worker is not None:
                _, status_write = worker
                try:
                    os.write(status_write, _STATUS.pack(status))
                except OSError:  # the solver already closed its end
                    pass
                os.close(status_write)

    def _kill_adopted(self) -> None:
        for pid in processes.children():
            if pid not in self._workers:
                _killpg_quietly(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _shutdown(self) -> None:
        # A snapshot: workers that exit meanwhile (their solver side closed) are reaped by _kill.
        for pid, (uid, _) in list(self._workers.items()):
            self._kill(uid, pid)
        for uid in list(self._uids_to_sweep):
            self._kill_all_of_uid(uid)
        self._reap()


def _spawn_uid_killer(uid: int, deadline_s: float) -> int:
    """Fork a helper that becomes `uid` and SIGKILLs every process of it until none is left.

    kill(-1) reaches every process of the caller's uid but the caller, atomically (a fork in
    progress is aborted), so one round kills them all. The helper still waits until they are
    also reaped, since zombies count against the uid's RLIMIT_NPROC that the next worker needs.
    """
    assert uid > 0
    helper = os.fork()
    if helper == 0:
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (2, 2))  # the helper and one probe child
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            deadline = time.monotonic() + deadline_s
            while True:
                os.kill(-1, signal.SIGKILL)
                if _alone_in_uid() or time.monotonic() > deadline:
                    break
                time.sleep(0.0005)
        finally:
            os._exit(0)
    return helper


def _alone_in_uid() -> bool:
    """True when the caller is the only process of its uid, given RLIMIT_NPROC = 2.

    The kernel allows a child only if the uid then has at most 2 processes. The probe child is
    a vfork that fails at once in exec (a directory is not executable), so it costs microseconds
    and leaves nothing behind: EAGAIN means someone else still counts, any other error means the
    child existed and is gone.
    """
    try:
        os.posix_spawn("/", ["/"], {})
    except BlockingIOError:
        return False
    except OSError:
        return True
    raise AssertionError("exec of a directory succeeded")


def _is_running(child: int) -> bool:
    try:
        return os.waitpid(child, os.WNOHANG)[0] == 0
    except ChildProcessError:  # already collected by the caller's reaping
        return False


def _killpg_quietly(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
