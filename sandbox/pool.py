"""`Sandbox`: many sessions of untrusted Python, run in parallel by a bounded pool of workers.

    with Sandbox(max_workers=8) as sandbox:
        result = sandbox.execute("sample-3", "x = 2**10\\nprint(x)", timeout_s=5)

Sessions appear on first use and keep their state until `close_session`. Each call is queued on
its session; a thread per busy session runs the session's calls in order, so a slow call holds up
only later calls of the same session. At most `max_workers` worker processes exist: a session
that needs one when all are taken evicts the least recently used idle session's worker (that
session's state comes back by replay at its next call), or waits while all workers are busy.

Guarantees: `execute`, `submit` and `close_session` are thread-safe; `execute` never raises for
anything the code does, and its futures always resolve to an `ExecutionResult` (a future cancelled
by its owner stays cancelled); `close_session` resolves the session's queued calls to "crashed"
results, kills its running call at once (that call resolves to "crashed") and removes the session
directory; `close()`, the context manager's exit, garbage collection and interpreter exit all stop
the fork server, which kills every worker and every process they started.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from concurrent.futures import Future, InvalidStateError
from pathlib import Path

from sandbox.forkserver import ForkServer
from sandbox.isolation import Isolation
from sandbox.limits import SandboxLimits
from sandbox.result import ExecutionResult, crashed
from sandbox.session import CLOSED_BEFORE, Call, Session

_UID_BLOCK = 1 << 16  # one session uid per session in a block of otherwise unused uids


class Sandbox:
    """A pool of warm, isolated Python workers, one per active session."""

    def __init__(self, max_workers: int = 8, limits: SandboxLimits | None = None) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.limits = limits if limits is not None else SandboxLimits()
        self.max_workers = max_workers
        self._root = Path(tempfile.mkdtemp(prefix="sandbox-"))
        self._root.chmod(0o711)  # session uids may pass through, not list
        self._server = ForkServer(self.limits, self._root)
        self._uid_base = _unused_uid_block()
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)
        self._sessions: dict[str, Session] = {}
        self._sessions_created = 0
        self._workers_live = 0
        self._closed = False
        self._finalizer = weakref.finalize(self, _release, self._server, self._root)

    # ------------------------------------------------------------ public API

    @property
    def isolation(self) -> Isolation:
        """The protections every worker gets on this machine (waits for the fork server)."""
        return self._server.isolation

    @property
    def network_isolated(self) -> bool:
        """True when code runs in its own network namespace (nothing reachable)."""
        return self.isolation.network

    def execute(self, session_id: str, code: str, timeout_s: float | None = None) -> ExecutionResult:
        """Run `code` in the session and wait for its result. Never raises for what the code does."""
        return self.submit(session_id, code, timeout_s).result()

    def submit(self, session_id: str, code: str, timeout_s: float | None = None) -> Future:
        """Queue `code` on the session; the future resolves to its `ExecutionResult`."""
        timeout_s = self.limits.timeout_s if timeout_s is None else timeout_s
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if not isinstance(code, str):
            raise TypeError(f"code must be str, got {type(code).__name__}")
        future: Future = Future()
        with self._lock:
            if self._closed:
                future.set_result(crashed("The sandbox is closed."))
                return future
            session = self._sessions.get(session_id) or self._new_session(session_id)
            session.queue.append(Call(code, timeout_s, future))
            start_thread = not session.draining
            session.draining = True
        if start_thread:
            threading.Thread(target=self._drain, args=(session,), daemon=True,
                             name=f"sandbox-session-{session_id}").start()
        return future

    def close_session(self, session_id: str) -> None:
        """Forget the session: cancel its queued calls, kill its running call, remove its files."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
            if session is None:
                return
            session.closed = True
            queued = list(session.queue)
            session.queue.clear()
            if session.has_slot:
                session.has_slot = False
                self._workers_live -= 1
            self._slot_freed.notify_all()
        for call in queued:
            _resolve(call.future, crashed(CLOSED_BEFORE))
        session.kill_processes()
        with session.lock:  # the running call, if any, sees the kill and winds up
            session.discard()

    def session_dir(self, session_id: str) -> Path | None:
        """Where the session's files are, as seen from the solver (inside it is the working dir)."""
        with self._lock:
            session = self._sessions.get(session_id)
        return session.directory if session is not None else None

    def close(self) -> None:
        """Close every session and stop the fork server. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            session_ids = list(self._sessions)
        for session_id in session_ids:
            self.close_session(session_id)
        self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ internals

    def _new_session(self, session_id: str) -> Session:
        self._sessions_created += 1
        number = self._sessions_created
        uid = self._uid_base + 1 + (number - 1) % (_UID_BLOCK - 1)
        session = Session(session_id, uid, self._root / f"{number:06d}", self._server, self.limits)
        self._sessions[session_id] = session
        return session

    def _drain(self, session: Session) -> None:
        """Run the session's queued calls in order; the thread ends when the queue is empty."""
        while True:
            with self._lock:
                if not session.queue:
                    session.draining = False
                    return
                call = session.queue.popleft()
                session.running = True
            try:
                if call.future.set_running_or_notify_cancel():
                    _resolve(call.future, self._run(session, call))
            finally:
                with self._lock:
                    session.running = False
                    session.last_used_s = time.monotonic()
                    self._slot_freed.notify_all()

    def _run(self, session: Session, call: Call) -> ExecutionResult:
        with session.lock:
            if not self._take_slot(session):
                return crashed(CLOSED_BEFORE)
            try:
                return session.execute(call.code, call.timeout_s)
            except Exception as error:  # noqa: BLE001 -- the boundary: a bug here must not raise
                session.kill_processes()
                return crashed(f"Internal sandbox error: {error!r}.")

    def _take_slot(self, session: Session) -> bool:
        """Make sure the session may have a worker; False if it was closed meanwhile."""
        victim = None
        with self._lock:
            while not session.has_slot:
                if session.closed:
                    return False
                if self._workers_live < self.max_workers:
                    self._workers_live += 1
                    session.has_slot = True
                elif (victim := self._idle_slot_holder()) is not None:
                    victim.has_slot = False  # the slot passes from victim to session
                    session.has_slot = True
                else:
                    self._slot_freed.wait()
        if victim is not None:
            with victim.lock:
                victim.evict()
        return True

    def _idle_slot_holder(self) -> Session | None:
        idle = [s for s in self._sessions.values() if s.has_slot and not s.running]
        return min(idle, key=lambda s: s.last_used_s, default=None)


def _resolve(future: Future, result: ExecutionResult) -> None:
    try:
        future.set_result(result)
    except InvalidStateError:  # cancelled by its owner
        pass


def _release(server: ForkServer, root: Path) -> None:
    """Stop the fork server (which kills all workers and their processes), remove the files."""
    server.close()
    shutil.rmtree(root, ignore_errors=True)


def _unused_uid_block() -> int:
    """The first uid of a random block of 65536 uids that no account on this machine uses.

    Session uids are private: a kill(-1) as one of them must reach only that session's processes.
    """
    taken = [entry.pw_uid for entry in pwd.getpwall()]
    while True:
        base = (16 + secrets.randbelow(1 << 14)) * _UID_BLOCK  # between 2**20 and about 2**30
        if not any(base <= uid < base + _UID_BLOCK for uid in taken) and base != os.getuid():
            return base
