"""The one interface every generation backend answers: add / extend / step / abort.

The solver drives an engine in the style of an LLM engine loop. It adds requests, calls
`step()` repeatedly to receive token deltas, and aborts requests it no longer needs. A
request that finished with finish_reason "stop" (it produced one of its stop token ids) stays
resumable: `extend()` appends tokens to it (for example the output of a tool call) and
generation continues from there, reusing whatever the backend has cached for the prefix.
`abort()` ends a request in any state and frees everything the engine holds for it.

Guarantees every backend gives:
- Every added request eventually yields exactly one delta with a `finish_reason`, unless it is
  aborted first; after `abort(request_id)` the engine yields nothing more for it.
- `token_ids` of a delta are new tokens only, in order; a stop token that ended the request is
  included as the last token of the final delta.
- Errors of one request come back as a delta with finish_reason "error" and a message, never
  as an exception from `step()`.

What an engine does not know: tool calls, answers, voting. Text-level checks live in the solver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length", "aborted", "error"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "aborted", "error")


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples. `max_tokens` counts generated tokens of this request (for an
    `extend`, of that continuation). temperature 0 means greedy."""

    max_tokens: int
    temperature: float = 0.6
    top_p: float = 0.95
    seed: int = 0
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Request:
    request_id: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams


@dataclass(frozen=True)
class Delta:
    """New tokens of one request since the last step; `finish_reason` is set on its last delta."""

    request_id: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    error: str | None = None

    @property
    def is_finished(self) -> bool:
        return self.finish_reason is not None


def check_token_ids(request_id: str, token_ids: tuple[int, ...] | list[int], vocab_size: int) -> None:
    """Refuse token ids a model with `vocab_size` entries cannot embed (ValueError)."""
    bad = [t for t in token_ids if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"request {request_id!r} has token ids outside a vocabulary of {vocab_size}: {bad[:5]}")


def check_new_request(request: Request, ids_in_use, vocab_size: int) -> None:
    """What `add` refuses (ValueError): an id in use, an empty prompt, ids the model cannot embed."""
    if request.request_id in ids_in_use:
        raise ValueError(f"request id {request.request_id!r} is already in use")
    if not request.prompt_token_ids:
        raise ValueError(f"request {request.request_id!r} has an empty prompt")
    check_token_ids(request.request_id, request.prompt_token_ids, vocab_size)


def check_extension(request_id: str, paused: bool, token_ids: tuple[int, ...], vocab_size: int) -> None:
    """What `extend` refuses (ValueError): a request that is not paused after a stop (or unknown),
    ids the model cannot embed."""
    if not paused:
        raise ValueError(f"request {request_id!r} is not paused after a stop; only such a request can be extended")
    check_token_ids(request_id, token_ids, vocab_size)


@runtime_checkable
class Engine(Protocol):
    """What the solver calls. Implementations live in `solver/engines/<name>.py`."""

    def add(self, request: Request) -> None:
        """Queue a new request. Its id must not be in use."""

    def extend(self, request_id: str, token_ids: tuple[int, ...], params: SamplingParams) -> None:
        """Resume a request that finished with "stop": append `token_ids` (not generated, e.g.
        tool output) and continue generating with `params`."""

    def step(self) -> list[Delta]:
        """Advance generation once; return the deltas produced. Never raises for a request's
        own failure. Returns [] when there is nothing to do."""

    def abort(self, request_id: str) -> None:
        """Stop the request if running and free its state. Idempotent; unknown ids are ignored."""

    def has_work(self) -> bool:
        """True while any request is queued or generating (paused requests do not count)."""

    def close(self) -> None:
        """Release engine resources (GPU memory, worker threads)."""


@dataclass
class EngineStats:
    """Counters a backend may expose for reports; all optional."""

    num_prefill_tokens: int = 0
    num_cached_prompt_tokens: int = 0
    num_decode_steps: int = 0
    extra: dict[str, float] = field(default_factory=dict)
