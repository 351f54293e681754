"""The solver's side of one worker process: send it a cell, collect its output, notice its death.

A `WorkerHandle` owns four descriptors: the control socket (requests out, answers in), the read
ends of the worker's stdout and stderr pipes, and the exit-status pipe that the fork server writes
when it reaps the worker. `run` watches all four with one selector until the answer arrives, the
worker dies, the deadline passes or the output passes its limit, whichever is first.

It never kills anything: the session does, through the fork server, because only that reaches
every process of the session. Everything read from a worker is treated as hostile: JSON frames of
bounded size, validated fields, output kept in bounded memory.
"""

from __future__ import annotations

import os
import select
import selectors
import signal
import socket
import struct
import time
from dataclasses import dataclass
from typing import Literal

from sandbox import protocol
from sandbox.isolation import Isolation
from sandbox.output import StreamCapture

RunStatus = Literal["ok", "error", "memory", "timeout", "output_limit", "died"]
_WORKER_STATUSES = ("ok", "error", "memory")
_CHUNK_BYTES = 1 << 16
_DEATH_NOTICE_S = 5.0  # how long to wait for the exit status of a worker that hung up


@dataclass(frozen=True)
class RunOutcome:
    """What happened to one cell, seen from outside the worker.

    "timeout" and "output_limit" leave the worker running (the caller must kill it); "died"
    means the worker is gone, `death` says how, and `cpu_limit` whether its CPU time ran out.
    """

    status: RunStatus
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    stray_processes: int = 0
    stray_threads: int = 0
    death: str = ""
    cpu_limit: bool = False


class WorkerHandle:
    """One worker, as received from the fork server. Not thread-safe: one caller at a time."""

    def __init__(self, pid: int, uid: int, ctrl_fd: int, stdout_fd: int, stderr_fd: int,
                 status_fd: int) -> None:
        self.pid = pid
        self.uid = uid
        self._ctrl = socket.socket(fileno=ctrl_fd)
        self._output_fds = (stdout_fd, stderr_fd)
        self._status_fd = status_fd
        for fd in (stdout_fd, stderr_fd, status_fd):
            os.set_blocking(fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._ctrl, selectors.EVENT_READ)
        for fd in (stdout_fd, stderr_fd, status_fd):
            self._selector.register(fd, selectors.EVENT_READ)
        self._frames = protocol.FrameReader()
        self._messages: list[protocol.Message] = []
        self._open_outputs = set(self._output_fds)
        self._exit_known = False
        self._exit_status: int | None = None
        self._broken = ""
        self._closed = False

    @property
    def is_dead(self) -> bool:
        return self._exit_known

    def is_idle_and_alive(self) -> bool:
        """True unless the worker said something, hung up or died since its last answer (no wait).

        A process's descriptors close as it exits, before anyone reaps it, so a worker that was
        killed reads as dead here as soon as it is no longer running.
        """
        if self._exit_known or self._broken or self._messages or self._closed:
            return False
        poller = select.poll()  # not select.select: descriptors may be numbered above 1023
        for fd in (self._ctrl.fileno(), self._status_fd):
            poller.register(fd, select.POLLIN)
        return not poller.poll(0)

    def wait_hello(self, timeout_s: float) -> Isolation | None:
        """The isolation the worker reports once it is ready; None if it never got there."""
        captures = self._new_captures(max_chars=1)
        event = self._pump(time.monotonic() + timeout_s, captures, max_output_bytes=1 << 20)
        if event != "message":
            return None
        message = self._messages.pop(0)
        try:
            return Isolation.from_json(message["hello"])
        except (KeyError, TypeError, ValueError):
            return None

    def run(self, code: str, cell_number: int, timeout_s: float, cpu_s: float,
            max_output_chars: int, max_output_bytes: int) -> RunOutcome:
        """Run one cell; return when it ended, the worker died or a limit was reached."""
        self._drain_outputs(self._new_captures(max_chars=1))  # nothing from before this call
        captures = self._new_captures(max_output_chars)
        request = {"op": "run", "code": code, "cell": cell_number, "cpu_s": cpu_s}
        started = time.monotonic()
        deadline = started + timeout_s
        try:
            protocol.send(self._ctrl, request)
        except OSError:  # it hung up: it is dead or dying
            deadline = min(deadline, started + _DEATH_NOTICE_S)
        event = self._pump(deadline, captures, max_output_bytes)
        wall_s = time.monotonic() - started
        if event in ("message", "died"):
            self._drain_outputs(captures)
        stdout, stderr = (captures[fd].text() for fd in self._output_fds)
        if event == "message":
            return self._answer(self._messages.pop(0), stdout, stderr, wall_s)
        if event == "died":
            death, cpu_limit = self._death()
            return RunOutcome("died", stdout, stderr, wall_s, death=death, cpu_limit=cpu_limit)
        return RunOutcome(event, stdout, stderr, wall_s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._selector.close()
        self._ctrl.close()
        for fd in (*self._output_fds, self._status_fd):
            os.close(fd)

    def _new_captures(self, max_chars: int) -> dict[int, StreamCapture]:
        return {fd: StreamCapture(max_chars) for fd in self._output_fds}

    def _answer(self, message: protocol.Message, stdout: str, stderr: str, wall_s: float) -> RunOutcome:
        status = message.get("status")
        processes, threads = message.get("stray_processes"), message.get("stray_threads")
        well_formed = isinstance(processes, int) and isinstance(threads, int)
        if status not in _WORKER_STATUSES or not well_formed:
            self._broken = "the worker sent a malformed answer"
            return RunOutcome("died", stdout, stderr, wall_s, death=self._broken)
        return RunOutcome(status, stdout, stderr, wall_s, stray_processes=processes,
                          stray_threads=threads)

    def _pump(self, deadline: float, captures: dict[int, StreamCapture], max_output_bytes: int) -> str:
        """Read whatever arrives until an event: "message", "died", "timeout" or "output_limit"."""
        while True:
            if self._messages:
                return "message"
            if self._exit_known or self._broken:
                return "died"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            for key, _ in self._selector.select(remaining):
                if key.fileobj is self._ctrl:
                    self._read_control()
                elif key.fd == self._status_fd:
                    self._read_exit_status()
                else:
                    self._read_output(key.fd, captures[key.fd])
            if sum(capture.total_bytes for capture in captures.values()) > max_output_bytes:
                return "output_limit"

    def _read_control(self) -> None:
        try:
            data = self._ctrl.recv(_CHUNK_BYTES)
        except OSError:
            data = b""
        if not data:  # hung up; its exit status follows
            self._selector.unregister(self._ctrl)
            return
        try:
            self._messages += self._frames.feed(data)
        except protocol.ProtocolError as error:
            self._broken = f"the worker broke the protocol ({error})"

    def _read_exit_status(self) -> None:
        data = os.read(self._status_fd, struct.calcsize(">i"))
        self._selector.unregister(self._status_fd)
        self._exit_known = True
        self._exit_status = struct.unpack(">i", data)[0] if len(data) == 4 else None

    def _read_output(self, fd: int, capture: StreamCapture) -> None:
        for _ in range(16):  # bounded, so the other descriptors get their turn
            try:
                chunk = os.read(fd, _CHUNK_BYTES)
            except BlockingIOError:
                return
            if not chunk:
                self._selector.unregister(fd)
                self._open_outputs.discard(fd)
                return
            capture.add(chunk)

    def _drain_outputs(self, captures: dict[int, StreamCapture]) -> None:
        for fd in tuple(self._open_outputs):
            while fd in self._open_outputs:
                try:
                    chunk = os.read(fd, _CHUNK_BYTES)
                except BlockingIOError:
                    break
                if not chunk:
                    self._selector.unregister(fd)
                    self._open_outputs.discard(fd)
                    break
                captures[fd].add(chunk)

    def _death(self) -> tuple[str, bool]:
        if self._broken:
            return self._broken, False
        status = self._exit_status
        if status is None:
            return "the worker process disappeared", False
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = f"signal {number}"
            return f"the worker process was killed by {name}", number == signal.SIGXCPU
        return f"the worker process exited with code {os.WEXITSTATUS(status)}", False
