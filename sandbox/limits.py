"""Limits on what one call of untrusted code may use; validated once, passed down unchanged.

Every limit is per session worker (the process that runs a session's cells) and, where the kernel
applies it per process, per process that the code starts. `timeout_s` can be overridden per call;
the others are fixed for the life of a `Sandbox`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxLimits:
    """What a call may use before the sandbox stops it.

    - `timeout_s`: wall-clock seconds per call; past it the session's processes are killed and the
      call ends with status "timeout".
    - `memory_mb`: address-space limit (RLIMIT_AS) of every process of the session. The warm
      worker already maps about 180 MB of it (Python, numpy, sympy).
    - `cpu_s`: CPU seconds per call and process (RLIMIT_CPU, re-armed before each call); None means
      the call's `timeout_s`. Exceeding it ends the call with status "timeout".
    - `file_size_mb`: largest file the code may write (RLIMIT_FSIZE); a larger write fails with
      `OSError: [Errno 27] File too large` inside the code.
    - `max_processes`: processes and threads the session may have at once (RLIMIT_NPROC on the
      session's own uid; applied only when the sandbox runs as root).
    - `max_output_chars`: characters of each stream (stdout, stderr) kept in the result; longer
      output keeps its beginning and end around an `<output cut>` marker.
    - `max_output_mb`: stdout plus stderr a call may write in all; past it the call is stopped
      with status "output_limit" (a runaway print loop should not run until the timeout).
    - `restore_timeout_s`: wall-clock seconds allowed for replaying a session's cells into a fresh
      worker after its worker was lost; past it the state is declared lost.
    """

    timeout_s: float = 10.0
    memory_mb: int = 2048
    cpu_s: float | None = None
    file_size_mb: int = 64
    max_processes: int = 64
    max_output_chars: int = 1000
    max_output_mb: float = 8.0
    restore_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _require_positive("timeout_s", self.timeout_s)
        _require_positive("memory_mb", self.memory_mb)
        if self.cpu_s is not None:
            _require_positive("cpu_s", self.cpu_s)
        _require_positive("file_size_mb", self.file_size_mb)
        _require_positive("max_processes", self.max_processes)
        _require_positive("max_output_chars", self.max_output_chars)
        _require_positive("max_output_mb", self.max_output_mb)
        _require_positive("restore_timeout_s", self.restore_timeout_s)

    def cpu_s_for(self, timeout_s: float) -> float:
        """CPU seconds allowed to a call that has `timeout_s` of wall time."""
        return self.cpu_s if self.cpu_s is not None else timeout_s

    @property
    def max_output_bytes(self) -> int:
        return int(self.max_output_mb * 1_000_000)


def _require_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"SandboxLimits.{name} must be > 0, got {value!r}")
