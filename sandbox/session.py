"""One session as the solver sees it: its worker, its successful cells, its queue of calls.

A session's calls run one at a time, in submission order, in the session's worker. The session
remembers every cell that ended "ok". When its worker is lost (timeout, output limit, crash,
threads left running, or eviction to make room for another session), a fresh worker replays those
cells with their output discarded, within `restore_timeout_s` in all. If a replayed cell does not
end "ok" again, or the time runs out, the state is declared lost: the history is cleared, the
session goes on in an empty namespace, and the result says `state_lost=True`.

Replay does not restore: what failed cells did before their exception; random draws and clock
readings (a replayed cell draws anew); effects outside the worker's memory (the session directory
is kept, so a replayed cell that appends to a file appends again).

A session gets its identity (uid and directory) once, from the pool, before its first call runs:
with a ready worker when the pool had a spare (`adopt`), else alone (`bind`), and then its first
call forks the worker. Either way the worker was forked for that identity and has run nothing else.

Threading: the pool's lock guards the bookkeeping fields (`queue`, `draining`, `running`,
`has_slot`, `closed`, `last_used_s`) and the identity; `lock` is held by whoever drives the
session's processes (the thread running its calls, an eviction, the final clean-up).
`kill_processes` needs neither, so that closing a session stops its running call at once.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

from sandbox.forkserver import ForkServer, SandboxError
from sandbox.handle import RunOutcome, WorkerHandle
from sandbox.identity import Identity
from sandbox.limits import SandboxLimits
from sandbox.result import ExecutionResult, crashed

CLOSED_BEFORE = "The session was closed before the call ran."
CLOSED_DURING = "The session was closed during the call; its processes were killed."


class SessionClosed(Exception):
    """The session was closed while this thread was working for it."""


@dataclass(frozen=True)
class Cell:
    number: int  # 1 for the session's first call; names the code `<cell N>` in tracebacks
    code: str
    timeout_s: float


@dataclass
class Call:
    code: str
    timeout_s: float
    future: Future


class Session:
    def __init__(self, session_id: str, server: ForkServer, limits: SandboxLimits) -> None:
        self.session_id = session_id
        self.identity: Identity | None = None
        self.workers_forked = 0  # by this session's own calls, for statistics
        self.lock = threading.Lock()
        self.queue: deque[Call] = deque()
        self.draining = False
        self.running = False
        self.has_slot = False
        self.closed = False
        self.last_used_s = time.monotonic()
        self._server = server
        self._limits = limits
        self._worker: WorkerHandle | None = None
        self._history: list[Cell] = []
        self._cells_started = 0
        self._ever_spawned = False

    @property
    def directory(self) -> Path | None:
        return self.identity.directory if self.identity is not None else None

    # ------------------------------------------------------------ called with the pool's lock held

    def bind(self, identity: Identity) -> None:
        """Give the session its uid and directory; its first call forks its worker. Once only."""
        assert self.identity is None
        self.identity = identity

    def adopt(self, identity: Identity, worker: WorkerHandle) -> None:
        """Give the session its identity with a ready worker forked for it (a spare). Once only."""
        self.bind(identity)
        self._worker = worker
        self._ever_spawned = True

    # ------------------------------------------------------------ called with `lock` held

    def execute(self, code: str, timeout_s: float) -> ExecutionResult:
        """Run one call. The caller holds `lock` and a worker slot for this session."""
        if self.closed:
            return crashed(CLOSED_BEFORE)
        try:
            lost_why = self._ensure_worker()
        except SessionClosed:
            return crashed(CLOSED_BEFORE)
        except SandboxError as error:
            return crashed(f"No worker could be started for the session: {error}.")
        self._cells_started += 1
        cell = Cell(self._cells_started, code, timeout_s)
        outcome = self._run(cell, self._limits.max_output_chars)
        result = self._conclude(cell, outcome)
        if lost_why:
            note = (f"The session's earlier state could not be restored ({lost_why}); "
                    "this code ran in a fresh namespace.")
            result = replace(result, state_lost=True, note=_join(note, result.note))
        return result

    def evict(self) -> None:
        """Give up the worker to make room for another session; replay restores it later."""
        self._drop_worker()

    def discard(self) -> None:
        """After `kill_processes` and close: release descriptors, remove the session directory."""
        assert self.closed
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()
        if self.identity is not None:
            shutil.rmtree(self.identity.directory, ignore_errors=True)

    # ------------------------------------------------------------ any thread, no lock

    def kill_processes(self) -> None:
        """SIGKILL the session's worker and everything it started, now."""
        if not self._ever_spawned:
            return
        worker = self._worker
        try:
            self._server.kill(self.identity.uid, worker.pid if worker is not None else None)
        except SandboxError:
            pass  # the fork server is gone, and with it (parent-death signal) every worker

    # ------------------------------------------------------------ internals

    def _run(self, cell: Cell, max_output_chars: int) -> RunOutcome:
        assert self._worker is not None
        return self._worker.run(cell.code, cell.number, cell.timeout_s,
                                cpu_s=self._limits.cpu_s_for(cell.timeout_s),
                                max_output_chars=max_output_chars,
                                max_output_bytes=self._limits.max_output_bytes)

    def _conclude(self, cell: Cell, outcome: RunOutcome) -> ExecutionResult:
        if self.closed:
            self._drop_worker()
            return crashed(CLOSED_DURING, wall_s=outcome.wall_s)
        notes = [_stray_note(outcome.stray_processes)] if outcome.stray_processes else []
        if outcome.status in ("ok", "error", "memory") and not outcome.stray_threads:
            if outcome.status == "ok":
                self._history.append(cell)
            return _result(outcome, outcome.status, notes, state_lost=False)
        if outcome.status in ("ok", "error", "memory"):  # threads left running: replace worker
            status = outcome.status
            notes.append(f"The code left {outcome.stray_threads} thread(s) running, so the "
                         "session's worker was replaced; the state is that before this call.")
        else:
            status, why = _failure(outcome, self._limits, cell.timeout_s)
            notes.append(why)
        try:
            lost_why = self._replace_worker()
        except SessionClosed:
            return crashed(CLOSED_DURING, wall_s=outcome.wall_s)
        if lost_why:
            notes.append(f"The session's variables were lost: {lost_why}.")
        elif self._history:
            notes.append(f"The session was restored by replaying its {len(self._history)} "
                         "successful cell(s).")
        return _result(outcome, status, notes, state_lost=bool(lost_why))

    def _ensure_worker(self) -> str:
        """Have a live worker with the session's state; return why the state was lost, if it was."""
        if self._worker is not None and not self._worker.is_dead:
            return ""
        self._drop_worker()
        return self._restore()

    def _replace_worker(self) -> str:
        self._drop_worker()
        try:
            return self._restore()
        except SandboxError as error:
            self._history.clear()
            return f"no new worker could be started ({error})"

    def _restore(self) -> str:
        """Start a worker and replay the history into it; return why that failed, or ""."""
        self._start_worker()
        deadline = time.monotonic() + self._limits.restore_timeout_s
        for cell in self._history:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                return self._give_up("replaying the earlier cells took too long")
            outcome = self._run(replace(cell, timeout_s=min(cell.timeout_s, remaining_s)), 1)
            if self.closed:
                raise SessionClosed
            if outcome.status != "ok" or outcome.stray_threads:
                return self._give_up(f"replaying cell {cell.number} ended with {outcome.status}")
        return ""

    def _give_up(self, why: str) -> str:
        self._history.clear()
        self._drop_worker()
        self._start_worker()
        return why

    def _start_worker(self) -> None:
        assert self.identity is not None, "the pool binds a session before its first call"
        self.identity.create_directory()
        self._worker = self._server.spawn(self.identity.uid, str(self.identity.directory))
        self._ever_spawned = True
        self.workers_forked += 1
        # The worker already runs as the session's uid here, so a close from now on kills it;
        # a close that came earlier is seen now.
        if self.closed:
            self._drop_worker()
            raise SessionClosed

    def _drop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            self._server.kill(self.identity.uid, worker.pid)
        except SandboxError:
            pass
        worker.close()


def _failure(outcome: RunOutcome, limits: SandboxLimits, timeout_s: float) -> tuple[str, str]:
    """Result status and note for an outcome after which the worker must be replaced."""
    if outcome.status == "timeout":
        return "timeout", f"The code ran longer than {timeout_s:g} s and was stopped."
    if outcome.status == "output_limit":
        return "output_limit", (f"The code wrote more than {limits.max_output_mb:g} MB of output "
                                "and was stopped.")
    if outcome.cpu_limit:
        return "timeout", f"The code used more than {limits.cpu_s_for(timeout_s):g} s of CPU time."
    return "crashed", f"{outcome.death[:1].upper()}{outcome.death[1:]}."


def _stray_note(count: int) -> str:
    return f"{count} background process(es) left running by the code were killed."


def _result(outcome: RunOutcome, status: str, notes: list[str], state_lost: bool) -> ExecutionResult:
    return ExecutionResult(status=status, stdout=outcome.stdout, stderr=outcome.stderr,
                           wall_s=outcome.wall_s, state_lost=state_lost, note=" ".join(notes))


def _join(*notes: str) -> str:
    return " ".join(note for note in notes if note)
