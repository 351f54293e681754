"""One sample of one problem: the single object early stop, voting and the run log read.

Status moves WAITING -> RUNNING -> (TOOL -> RUNNING)* -> DONE; `finish_reason` says why it ended:
"stop" (end of sequence), "length" (token limit), "error" (engine error), "aborted" (the problem
stopped early), "deadline" (the problem's time ran out).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field


class SampleStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    TOOL = "tool"
    DONE = "done"


@dataclass
class ToolCall:
    code: str
    status: str  # the sandbox's status, or "skipped" (no calls left) / "empty" (no code)
    wall_s: float  # from handing the code to the sandbox to having its result
    output: str  # the text fed back to the model, exactly
    num_tokens: int
    run_s: float = 0.0  # the code's own run time, as the sandbox measured it


@dataclass
class Sample:
    index: int
    seed: int
    request_id: str
    status: SampleStatus = SampleStatus.WAITING
    finish_reason: str | None = None
    error: str | None = None
    token_ids: list[int] = field(default_factory=list)  # everything after the prompt
    num_generated_tokens: int = 0
    num_tool_tokens: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)
    first_token_s: float | None = None
    finished_s: float | None = None
    text: str = ""
    boxed: str | None = None
    answer: int | None = None

    @property
    def is_done(self) -> bool:
        return self.status is SampleStatus.DONE

    @property
    def is_active(self) -> bool:
        return self.status in (SampleStatus.RUNNING, SampleStatus.TOOL)

    @property
    def num_tool_calls_made(self) -> int:
        return sum(1 for call in self.tool_calls if call.status != "skipped")

    def finish(self, reason: str, at_s: float, error: str | None = None) -> None:
        assert not self.is_done, f"{self.request_id} finished twice"
        self.status = SampleStatus.DONE
        self.finish_reason = reason
        self.finished_s = at_s
        self.error = error

    def record(self) -> dict:
        """The run-log form (see docs/runlog.md)."""
        return {
            "index": self.index,
            "seed": self.seed,
            "request_id": self.request_id,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "error": self.error,
            "boxed": self.boxed,
            "answer": self.answer,
            "num_generated_tokens": self.num_generated_tokens,
            "num_tool_tokens": self.num_tool_tokens,
            "first_token_s": self.first_token_s,
            "finished_s": self.finished_s,
            "tool_calls": [asdict(call) for call in self.tool_calls],
        }
