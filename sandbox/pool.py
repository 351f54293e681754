"""`Sandbox`: many sessions of untrusted Python, run in parallel by a bounded pool of workers.

    with Sandbox(max_workers=8) as sandbox:
        result = sandbox.execute("sample-3", "x = 2**10\\nprint(x)", timeout_s=5)

Sessions appear on first use and keep their state until `close_session`. Each call is queued on
its session; a thread per busy session runs the session's calls in order, so a slow call holds up
only later calls of the same session. At most `max_workers` worker processes exist, spares
included. Free worker slots hold up to `spare_workers` spares, forked in the background, so that
a new session's first call takes a ready worker instead of waiting for a fork. A session that
needs a worker when all slots are taken uses a spare's slot, evicts the least recently used idle
session's worker (that session's state comes back by replay at its next call), or waits while
all workers are busy.

Guarantees: `execute`, `submit` and `close_session` are thread-safe; `execute` never raises for
anything the code does, and its futures always resolve to an `ExecutionResult` (a future cancelled
by its owner stays cancelled); `close_session` resolves the session's queued calls to "crashed"
results, kills its running call at once (that call resolves to "crashed") and removes the session
directory; `close()`, the context manager's exit, garbage collection and interpreter exit all stop
the fork server, which kills every worker (spares included) and every process they started. A
worker serves one session only: a closed session's worker is killed, never handed to another.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path

from sandbox.forkserver import ForkServer
from sandbox.identity import Identities
from sandbox.isolation import Isolation
from sandbox.limits import SandboxLimits
from sandbox.result import ExecutionResult, crashed
from sandbox.session import CLOSED_BEFORE, Call, Session
from sandbox.spares import Spares


@dataclass(frozen=True)
class SandboxStats:
    """A snapshot of the pool's workers, for tests and benchmarks."""

    workers_live: int  # worker slots held by sessions
    spares_ready: int  # forked, idle, not handed to a session yet
    spares_forked: int  # since the start
    spares_taken: int  # handed to new sessions since the start
    call_forks: int  # workers forked while a call waited: no spare was ready, or after a loss


class Sandbox:
    """A pool of warm, isolated Python workers, one per active session."""

    def __init__(self, max_workers: int = 8, limits: SandboxLimits | None = None,
                 spare_workers: int | None = None) -> None:
        """`spare_workers` (default `max_workers`) caps the spares kept in free worker slots."""
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        spare_workers = max_workers if spare_workers is None else spare_workers
        if not 0 <= spare_workers <= max_workers:
            raise ValueError(f"spare_workers must be between 0 and max_workers ({max_workers}), "
                             f"got {spare_workers}")
        self.limits = limits if limits is not None else SandboxLimits()
        self.max_workers = max_workers
        self.spare_workers = spare_workers
        self._root = Path(tempfile.mkdtemp(prefix="sandbox-"))
        self._root.chmod(0o711)  # session uids may pass through, not list
        self._server = ForkServer(self.limits, self._root)
        self._identities = Identities(self._root)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a slot freed up or a spare got ready
        self._sessions: dict[str, Session] = {}
        self._workers_live = 0
        self._call_forks = 0
        self._closed = False
        self._spares = Spares(self._server, self._identities, self._lock, self._changed)
        self._finalizer = weakref.finalize(self, _release, self._server, self._root, self._spares)
        with self._lock:
            self._update_spare_target()

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

    def prepare(self, session_ids: Iterable[str]) -> int:
        """Give ready spares to these sessions now, ahead of their first calls. Never waits.

        Returns how many sessions got one. The others (no spare was ready, or the session already
        had its worker or its first call) start as usual at their first call. A prepared session
        holds its worker slot until it is closed or, idle, evicted like any other.
        """
        adopted = 0
        with self._lock:
            for session_id in session_ids:
                if self._closed:
                    break
                session = self._sessions.get(session_id) or self._new_session(session_id)
                if session.identity is None and self._adopt_spare(session):
                    adopted += 1
        return adopted

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
                self._update_spare_target()
            self._changed.notify_all()
        for call in queued:
            _resolve(call.future, crashed(CLOSED_BEFORE))
        session.kill_processes()
        with session.lock:  # the running call, if any, sees the kill and winds up
            session.discard()

    def session_dir(self, session_id: str) -> Path | None:
        """Where the session's files are, as seen from the solver (inside it is the working dir).

        None for an unknown session, and for one whose first call has not started yet (its
        directory is chosen then, or by `prepare`).
        """
        with self._lock:
            session = self._sessions.get(session_id)
            return session.directory if session is not None else None

    def stats(self) -> SandboxStats:
        """How many workers and spares there are now, and how many were forked so far."""
        with self._lock:
            return SandboxStats(workers_live=self._workers_live, spares_ready=self._spares.ready,
                                spares_forked=self._spares.forked, spares_taken=self._spares.taken,
                                call_forks=self._call_forks)

    def close(self) -> None:
        """Close every session and stop the fork server. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            session_ids = list(self._sessions)
        self._spares.stop()  # before closing sessions frees slots that it would fork into
        for session_id in session_ids:
            self.close_session(session_id)
        self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ internals

    def _new_session(self, session_id: str) -> Session:
        session = Session(session_id, self._server, self.limits)
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
                    self._changed.notify_all()

    def _run(self, session: Session, call: Call) -> ExecutionResult:
        with session.lock:
            if not self._take_slot(session):
                return crashed(CLOSED_BEFORE)
            forks_before = session.workers_forked
            try:
                return session.execute(call.code, call.timeout_s)
            except Exception as error:  # noqa: BLE001 -- the boundary: a bug here must not raise
                session.kill_processes()
                return crashed(f"Internal sandbox error: {error!r}.")
            finally:
                if session.workers_forked != forks_before:
                    with self._lock:
                        self._call_forks += session.workers_forked - forks_before

    def _take_slot(self, session: Session) -> bool:
        """Make sure the session has an identity and may have a worker; False if it was closed.

        In order of preference: a ready spare (for a session without a worker identity yet), a
        free slot, a ready spare's slot (the spare is killed), the slot of a spare being forked
        (wait for it), an idle session's slot (that session is evicted); else wait.
        """
        victim = None
        with self._lock:
            while not session.has_slot:
                if session.closed:
                    return False
                if session.identity is None and self._adopt_spare(session):
                    break
                if self._workers_live + self._spares.count < self.max_workers:
                    self._hold_slot(session)
                elif self._spares.retire_one():
                    self._hold_slot(session)
                elif self._spares.forking:
                    self._changed.wait()
                elif (victim := self._idle_slot_holder()) is not None:
                    victim.has_slot = False  # the slot passes from victim to session
                    session.has_slot = True
                else:
                    self._changed.wait()
            if session.identity is None:
                session.bind(self._identities.next())
        if victim is not None:
            with victim.lock:
                victim.evict()
        return True

    def _adopt_spare(self, session: Session) -> bool:
        """Hand a ready spare, with its slot, uid and directory, to the session (lock held)."""
        spare = self._spares.take()
        if spare is None:
            return False
        session.adopt(spare.identity, spare.worker)
        self._hold_slot(session)
        return True

    def _hold_slot(self, session: Session) -> None:
        self._workers_live += 1
        session.has_slot = True
        self._update_spare_target()

    def _update_spare_target(self) -> None:
        """Spares fill the slots sessions do not hold, up to `spare_workers` (lock held)."""
        self._spares.set_target(min(self.spare_workers, self.max_workers - self._workers_live))

    def _idle_slot_holder(self) -> Session | None:
        idle = [s for s in self._sessions.values() if s.has_slot and not s.running]
        return min(idle, key=lambda s: s.last_used_s, default=None)


def _resolve(future: Future, result: ExecutionResult) -> None:
    try:
        future.set_result(result)
    except InvalidStateError:  # cancelled by its owner
        pass


def _release(server: ForkServer, root: Path, spares: Spares) -> None:
    """Stop forking spares and stop the fork server (which kills all workers, spares included,
    and their processes); remove the files."""
    spares.stop()
    server.close()
    shutil.rmtree(root, ignore_errors=True)
