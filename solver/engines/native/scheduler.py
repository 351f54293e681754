"""Which sequences run in the next step, and what happens when KV memory runs out.

A step is either a prefill step (chunks of waiting sequences, first in first out, at most
`max_num_batched_tokens` tokens, long prompts split over steps) or, when nothing waits, a decode
step (every running sequence, one token each). Prefill goes first so new and resumed samples
join the batch at once.

When blocks run out the scheduler never overwrites anything; in order it:
1. evicts the KV of paused sequences (oldest pause first): they re-prefill on `extend`;
2. preempts the most recently admitted running sequence: its blocks are freed and it goes back
   to the front of the queue with all its tokens, to be re-prefilled later (recompute);
3. a waiting sequence that cannot fit even with nothing else running is `failed`.
A sequence's sampled tokens and generator state survive preemption, so its output is the same.

With speculation (`num_lookahead` > 0) a decode step is a verify step: each running sequence is
given blocks for `num_lookahead` draft tokens past its last token when they are free
(`seq.num_lookahead_slots`), else for its own tokens only (it then decodes without drafts
this step rather than preempting anyone).
With overlapped decode a sequence also gets a slot for each token still being sampled
(`seq.num_inflight`); the engine lands its queued steps before a step that could preempt.
"""

from __future__ import annotations

from collections import deque

from .block_manager import DEFER, BlockManager
from .config import EngineConfig
from .model_runner import Chunk
from .sequence import Sequence, SequenceStatus


class Scheduler:
    def __init__(self, config: EngineConfig, block_manager: BlockManager, num_lookahead: int = 0, max_model_len: int | None = None) -> None:
        self.config = config
        self.num_lookahead = num_lookahead
        self.max_model_len = max_model_len  # drafts never reach past it
        self.block_manager = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.paused: list[Sequence] = []  # oldest pause first
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> tuple[list[Chunk], list[Sequence], list[Sequence]]:
        """(prefill chunks, decode sequences, failed sequences); at most one of the first two
        is non-empty."""
        failed: list[Sequence] = []
        chunks = self._schedule_prefill(failed)
        if chunks:
            return chunks, [], failed
        return [], self._schedule_decode(), failed

    def _schedule_prefill(self, failed: list[Sequence]) -> list[Chunk]:
        chunks: list[Chunk] = []
        budget = self.config.max_num_batched_tokens
        while self.waiting and budget > 0 and len(self.running) + len(chunks) < self.config.max_num_seqs:
            seq = self.waiting[0]
            reserved = self.block_manager.allocate(seq) if not seq.block_table else self.block_manager.grow(seq)
            if reserved == DEFER:
                break
            if not reserved:
                if self._evict_paused():
                    continue
                if self.running or chunks:
                    break  # wait for running sequences to finish and free blocks
                failed.append(self.waiting.popleft())
                continue
            num_tokens = min(seq.num_uncached_tokens, budget)
            chunk = Chunk(seq, seq.num_cached_tokens, seq.num_cached_tokens + num_tokens)
            self.block_manager.commit(seq, chunk.end)
            chunks.append(chunk)
            budget -= num_tokens
            if not chunk.is_last:
                break  # the rest of this prompt in the next step
            self.waiting.popleft()
        return chunks

    def _schedule_decode(self) -> list[Sequence]:
        scheduled: list[Sequence] = []
        queue = deque(self.running)
        while queue:
            seq = queue.popleft()
            seq.num_lookahead_slots = 0
            lookahead = min(self.num_lookahead, (self.max_model_len or seq.num_tokens) - seq.num_tokens)
            if lookahead > 0 and self.block_manager.grow(seq, lookahead):
                seq.num_lookahead_slots = lookahead
                scheduled.append(seq)
                continue
            while not self.block_manager.grow(seq, seq.num_inflight):
                if self._evict_paused():
                    continue
                victim = queue.pop() if queue else seq
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                scheduled.append(seq)
        self.running = list(scheduled)  # a copy: finishing a sequence edits `running`
        return scheduled

    def _evict_paused(self) -> bool:
        for seq in self.paused:
            if seq.block_table:
                self.block_manager.free(seq)
                return True
        return False

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    # -- transitions reported by the engine after sampling ------------------------------------

    def start_running(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)

    def pause(self, seq: Sequence) -> None:
        self._remove(seq)
        seq.status = SequenceStatus.PAUSED
        self.paused.append(seq)

    def finish(self, seq: Sequence) -> None:
        self._remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED

    def resume(self, seq: Sequence) -> None:
        self.paused.remove(seq)
        self.add(seq)

    def _remove(self, seq: Sequence) -> None:
        for queue in (self.running, self.paused):
            if seq in queue:
                queue.remove(seq)
        if seq in self.waiting:
            self.waiting.remove(seq)
