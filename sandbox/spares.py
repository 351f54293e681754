"""Spare workers: forked ahead of need, so that a new session's first call does not wait for a fork.

A spare is a worker forked exactly as a session's own worker is (same fork server, same isolation
and limits) for a fresh `Identity` of its own: its uid and its private directory are chosen when it
is forked and go with it to the session that takes it. Until then it has run nothing. Spares sit in
the pool's free worker slots: the pool says how many it wants (`set_target`), and background
threads fork towards that number, so forks happen on no caller's thread.

Guarantees: `take` never hands out a spare that died, hung up or said anything since its hello; a
spare is handed out at most once and never comes back (a used worker is killed, not recycled);
spares given up (`retire_one`, or found dead by `take`) are killed in the background. After
`stop`, nothing more is forked and the ready spares' descriptors are closed; their processes die
with the fork server, which the pool closes next.
Not covered: a spare that dies between `take` and its first call is found dead by that call, which
then reports "crashed" (its session starts a new worker, as after any crash).

Threading: the pool's lock guards every field. `changed`, the pool's condition on it, is notified
whenever a slot frees up or a spare becomes ready; the forking threads wait on a condition of their
own, so that the pool's frequent notifications do not wake them. Every method but `stop` is called
with the lock held; `stop` may be called from any thread, even one that holds it (a finalizer).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass

from sandbox.forkserver import ForkServer, SandboxError
from sandbox.handle import WorkerHandle
from sandbox.identity import Identities, Identity

_FORKING_THREADS = 2  # one asks the fork server while the other's worker isolates itself
_POLL_S = 0.5  # how soon a thread notices `stop` when it could not be notified
_RETRY_S = 1.0  # pause after a failed fork, so that a broken fork server is not hammered


@dataclass
class Spare:
    identity: Identity
    worker: WorkerHandle

    def release(self) -> None:
        """Close the solver's side and remove the directory. The process must be dead or dying."""
        self.worker.close()
        shutil.rmtree(self.identity.directory, ignore_errors=True)


class Spares:
    """Ready, unassigned workers, each with its own uid and directory."""

    def __init__(self, server: ForkServer, identities: Identities, lock: threading.Lock,
                 changed: threading.Condition) -> None:
        self._server = server
        self._identities = identities
        self._changed = changed
        self._work = threading.Condition(lock)  # a spare is wanted or to be killed, or stop
        self._ready: deque[Spare] = deque()
        self._to_kill: list[Spare] = []  # to be killed by a forking thread
        self._forking = 0
        self._target = 0
        self._retry_at_s = 0.0
        self._stopped = False
        self.forked = 0  # since the start, for statistics
        self.taken = 0
        for index in range(_FORKING_THREADS):
            threading.Thread(target=self._keep_forking, daemon=True,
                             name=f"sandbox-spares-{index}").start()

    # ------------------------------------------------------------ called with the pool's lock

    @property
    def ready(self) -> int:
        return len(self._ready)

    @property
    def forking(self) -> int:
        return self._forking

    @property
    def count(self) -> int:
        """Worker slots that spares occupy: ready ones and those being forked."""
        return len(self._ready) + self._forking

    def set_target(self, count: int) -> None:
        """Keep `count` spares. Fewer ones are forked up to it; more are kept until taken."""
        if count > self._target:
            self._work.notify_all()
        self._target = count

    def take(self) -> Spare | None:
        """A ready spare, now the caller's along with its slot; None when none is ready."""
        while self._ready:
            spare = self._ready.popleft()
            if spare.worker.is_idle_and_alive():
                self.taken += 1
                self._work.notify_all()  # one fewer spare: if the target stays, fork another
                return spare
            self._give_up(spare)
        return None

    def retire_one(self) -> bool:
        """Give up a ready spare (it is killed in the background); True if there was one."""
        if not self._ready:
            return False
        self._give_up(self._ready.popleft())
        return True

    # ------------------------------------------------------------ any thread

    def stop(self) -> None:
        """Fork no more spares; close the ready ones' descriptors now or, failing the lock, soon."""
        self._stopped = True
        if not self._work.acquire(timeout=_POLL_S):  # held by this very thread, or stuck
            return  # the forking threads see `_stopped` within _POLL_S and clean up
        try:
            self._work.notify_all()
            leftovers = self._take_leftovers()
        finally:
            self._work.release()
        for spare in leftovers:
            spare.release()

    # ------------------------------------------------------------ forking threads

    def _keep_forking(self) -> None:
        """Fork spares while fewer exist than wanted, kill given-up ones; end at `stop`.

        Each job waits for a quiet moment at the fork server first, and only then takes its slot:
        meanwhile a session that needs a worker finds the slot free and forks its own at once.
        """
        while self._wait_for_work():
            self._server.wait_until_quiet()
            for spare in self._take_to_kill():
                self._kill(spare)
            identity = self._reserve_slot()
            if identity is not None:
                self._add(self._fork(identity))
        with self._work:
            leftovers = self._take_leftovers()
        for spare in leftovers:
            spare.release()

    def _wait_for_work(self) -> bool:
        """Wait until a spare is wanted or one is to be killed; False once stopped."""
        with self._work:
            while not self._stopped and not self._to_kill and not self._wants_one():
                self._work.wait(_POLL_S)
            return not self._stopped

    def _take_to_kill(self) -> list[Spare]:
        with self._work:
            to_kill, self._to_kill = self._to_kill, []
        return to_kill

    def _reserve_slot(self) -> Identity | None:
        """An identity for a new spare, its directory made and its slot taken; None if none is
        wanted now. Under the lock, so that no directory appears after `stop` held it: the pool
        removes the sandbox's directory next."""
        with self._work:
            if self._stopped or not self._wants_one():
                return None
            identity = self._identities.next()
            try:
                identity.create_directory()
            except OSError:
                self._retry_at_s = time.monotonic() + _RETRY_S
                return None
            self._forking += 1
        return identity

    def _wants_one(self) -> bool:
        return self.count < self._target and time.monotonic() >= self._retry_at_s

    def _fork(self, identity: Identity) -> Spare | None:
        try:
            worker = self._server.spawn(identity.uid, str(identity.directory), background=True)
        except SandboxError:
            shutil.rmtree(identity.directory, ignore_errors=True)
            return None
        return Spare(identity, worker)

    def _add(self, spare: Spare | None) -> None:
        with self._changed:
            self._forking -= 1
            if spare is None:
                self._retry_at_s = time.monotonic() + _RETRY_S
            elif self._stopped:
                self._to_kill.append(spare)
            else:
                self._ready.append(spare)
                self.forked += 1
            self._changed.notify_all()  # a spare is ready, or its slot is free again

    def _kill(self, spare: Spare) -> None:
        try:
            self._server.kill(spare.identity.uid, spare.worker.pid, background=True)
        except SandboxError:
            pass  # the fork server is gone, and with it (parent-death signal) the spare
        spare.release()

    def _give_up(self, spare: Spare) -> None:
        self._to_kill.append(spare)
        self._work.notify_all()  # a forking thread must kill it
        self._changed.notify_all()  # its slot is free

    def _take_leftovers(self) -> list[Spare]:
        leftovers = [*self._ready, *self._to_kill]
        self._ready.clear()
        self._to_kill.clear()
        return leftovers
