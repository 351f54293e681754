"""CUDA graphs for decode: one graph per batch size, the batch padded up to the next one.

Static inputs live in buffers sized for the largest batch; `run` copies a step's inputs into
them and replays. The sampling inputs (temperature, top-p and each row's uniform draw) are
inputs too, so a decode graph can end with the sampled tokens (`sampling.sample_candidates`)
and a step costs one replay and one small copy back. So is `feed` (which rows take their input
token from the previous step's sampled tokens on the device; see `model_runner`). Padded rows
are greedy, feed token 0 at position 0 with a context of one token and write their K/V into the
scratch block 0, which no sequence owns, so they cannot touch real data.
The block-table buffer is as wide as the longest allowed sequence: the Triton decode kernel
reads only each row's real context, so the width costs nothing per step.

With `shared_decode` (the decode whose attention reads the positions every row shares once for
all rows, `DecodeMeta.shared_len`), each batch size gets a second graph of it, and a step with
a shared length (the model runner passes one only from `shared_prefix_min_tokens` on) replays
that one: its kernel settings suit long shared prompts, the first graph's short ones.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import torch

from .attention import DecodeMeta

Sampling = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # temperature, top_p, uniform [rows] float32
DecodeFn = Callable[[torch.Tensor, torch.Tensor, DecodeMeta, Sampling, torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]]


class DecodeGraphs:
    def __init__(self, decode: DecodeFn, batch_sizes: list[int], max_blocks_per_seq: int, device: torch.device,
                 shared_decode: DecodeFn | None = None) -> None:  # fmt: skip
        self.batch_sizes = batch_sizes
        largest = batch_sizes[-1]
        # input ids, feed, positions, slots: one buffer, so one copy per step
        self.ints = torch.zeros(4, largest, dtype=torch.int64, device=device)
        self.input_ids, self.feed, self.positions, self.slots = self.ints
        self.feed.fill_(-1)
        self.tables = torch.zeros(largest, max_blocks_per_seq, dtype=torch.int32, device=device)
        self.lens = torch.ones(largest, dtype=torch.int32, device=device)
        self.shared = torch.zeros(1, dtype=torch.int32, device=device) if shared_decode else None  # see DecodeMeta.shared_len
        self.sampling = torch.zeros(3, largest, dtype=torch.float32, device=device)  # temperature, top_p, uniform
        self.sampling[1] = 1.0
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor | tuple[torch.Tensor, ...]] = {}
        self.shared_graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.shared_outputs: dict[int, torch.Tensor | tuple[torch.Tensor, ...]] = {}
        variants = [(decode, None, self.graphs, self.outputs)]
        if shared_decode is not None:
            variants.append((shared_decode, self.shared, self.shared_graphs, self.shared_outputs))
        pool = None
        with torch.inference_mode():
            for size in reversed(batch_sizes):
                for fn, shared, graphs, outputs in variants:
                    meta = DecodeMeta(self.slots[:size], self.tables[:size], self.lens[:size], shared)
                    args = (self.input_ids[:size], self.positions[:size], meta, tuple(self.sampling[:, :size]), self.feed[:size])
                    fn(*args)  # warm up: compile kernels, allocate workspaces
                    torch.cuda.synchronize(device)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool):
                        outputs[size] = fn(*args)
                    pool = graph.pool()
                    graphs[size] = graph

    def fits(self, rows: int) -> bool:
        return rows <= self.batch_sizes[-1]

    def run(
        self,
        input_ids: list[int],
        positions: list[int],
        slots: list[int],
        tables: list[list[int]],
        lens: list[int],
        sampling: tuple[list[float], list[float], list[float]] | None = None,
        feed: list[int] | None = None,
        shared_len: int = 0,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        rows = len(input_ids)
        size = self.batch_sizes[bisect.bisect_left(self.batch_sizes, rows)]
        pad = size - rows
        # Every copy is from freshly pinned memory: it must not wait for queued GPU work (the
        # step before may still run), and a buffer reused before its copy ran would be a race.
        pinned = lambda values, dtype: torch.tensor(values, dtype=dtype, pin_memory=True)  # noqa: E731
        if sampling is not None:  # padded rows are greedy (temperature 0, top-p 1, uniform 0)
            values = [list(column) + [fill] * pad for column, fill in zip(sampling, (0.0, 1.0, 0.0))]
            self.sampling[:, :size].copy_(pinned(values, torch.float32), non_blocking=True)
        ints = [input_ids + [0] * pad, (feed or [-1] * rows) + [-1] * pad, positions + [0] * pad, slots + [0] * pad]
        self.ints[:, :size].copy_(pinned(ints, torch.int64), non_blocking=True)
        self.lens[:size].copy_(pinned(lens + [1] * pad, torch.int32), non_blocking=True)
        shared = self.shared is not None and shared_len > 0
        if shared:
            self.shared.copy_(pinned([shared_len], torch.int32), non_blocking=True)
        width = max(len(t) for t in tables)
        padded = [t + [0] * (width - len(t)) for t in tables] + [[0] * width] * pad
        self.tables[:size, :width].copy_(pinned(padded, torch.int32), non_blocking=True)
        (self.shared_graphs if shared else self.graphs)[size].replay()
        out = (self.shared_outputs if shared else self.outputs)[size]  # (logits, tokens), or (logits, hidden) with a drafter
        return tuple(o[:rows] for o in out) if isinstance(out, tuple) else out[:rows]
