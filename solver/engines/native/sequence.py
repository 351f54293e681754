"""One request's state in the native engine: its tokens, its KV blocks and its status.

A `Sequence` moves WAITING -> RUNNING -> (PAUSED -> WAITING -> RUNNING ...) -> FINISHED.
PAUSED means it produced a stop token and may be resumed by `extend`; it keeps its KV blocks
until then, unless the scheduler evicts them under memory pressure (it then re-prefills).

`token_ids` is every token of the sequence; the first `num_cached_tokens` of them have KV in
the cache. The last sampled token is never cached until it is fed in the next step.
With overlapped decode (see `engine`), `num_inflight` more tokens (0-2) are being sampled by
queued steps and are not in `token_ids` yet; each queued step has fed (and cached) the token
before its own, so `num_cached_tokens` can run ahead of `num_tokens - 1` by `num_inflight`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from solver.engines.base import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # queued for prefill (new, resumed by extend, or preempted)
    RUNNING = "running"  # decoding one token per step
    PAUSED = "paused"  # stopped on a stop token; resumable
    FINISHED = "finished"  # done for good; holds nothing


@dataclass(eq=False)
class Sequence:
    request_id: str
    params: SamplingParams
    generator: torch.Generator
    token_ids: list[int]
    status: SequenceStatus = SequenceStatus.WAITING
    num_cached_tokens: int = 0
    num_generated_tokens: int = 0  # of the current continuation; compared with max_tokens
    block_table: list[int] = field(default_factory=list)
    # Speculation only: the model's final-norm hidden state at the position that chose the last
    # token (the drafter's context), and the draft slots the scheduler reserved this step.
    draft_context: torch.Tensor | None = None
    num_lookahead_slots: int = 0
    num_inflight: int = 0  # tokens being sampled by queued decode steps (overlapped decode)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_uncached_tokens(self) -> int:
        return self.num_tokens - self.num_cached_tokens

    @property
    def last_token_id(self) -> int:
        return self.token_ids[-1]

