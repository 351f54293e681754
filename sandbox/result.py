"""The value every call returns, whatever the code did: `ExecutionResult`.

Statuses, from the code's point of view:
- "ok": the cell ran to its end (a `sys.exit(0)` counts as an end).
- "error": it raised; `stderr` ends with the traceback of the user's code (no sandbox frames).
- "memory": it raised MemoryError (usually the `memory_mb` limit); the session survives.
- "timeout": it ran past `timeout_s` (or its CPU limit) and its processes were killed.
- "output_limit": it wrote more than `max_output_mb` and its processes were killed.
- "crashed": its worker process died (segfault, `os._exit`, killed), or the session was closed
  or the sandbox shut down before or during the call; `note` says which.

After "timeout", "output_limit" and "crashed" the session's state is restored by replaying its
successful cells in a fresh worker; `state_lost` is True when that was impossible, and the
session then starts from an empty namespace.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["ok", "error", "timeout", "memory", "output_limit", "crashed"]
STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "memory", "output_limit", "crashed")


@dataclass(frozen=True)
class ExecutionResult:
    """How one call ended. `stdout`/`stderr` are already cut to `max_output_chars` each.

    `wall_s` is the time the code ran (from sending it to the worker to its answer or its kill);
    it excludes waiting behind earlier calls of the session, starting a worker and replaying.
    `note` is empty unless the sandbox did something the code did not ask for (killed leftover
    processes, restarted the worker, lost the state); it is one plain sentence or two.
    """

    status: Status
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    state_lost: bool = False
    note: str = ""

    def __post_init__(self) -> None:
        assert self.status in STATUSES, self.status

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def crashed(note: str, wall_s: float = 0.0, state_lost: bool = False) -> ExecutionResult:
    """A call that did not run, or whose worker died, for a reason given in `note`."""
    return ExecutionResult(status="crashed", wall_s=wall_s, state_lost=state_lost, note=note)
