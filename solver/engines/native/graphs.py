"""CUDA graphs for decode: one graph per batch size, the batch padded up to the next one.

Static inputs live in buffers sized for the largest batch; `run` copies a step's inputs into
them and replays. The sampling inputs (temperature, top-p and each row's uniform draw) are
inputs too, so a decode graph can end with the sampled tokens (`sampling.sample_candidates`)
and a step costs one replay and one small copy back. Padded rows are greedy, feed token 0 at
position 0 with a context of one token and write their K/V into the scratch block 0, which no
sequence owns, so they cannot touch real data.
The block-table buffer is as wide as the longest allowed sequence: the Triton decode kernel
reads only each row's real context, so the width costs nothing per step.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import torch

from .attention import DecodeMeta

Sampling = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # temperature, top_p, uniform [rows] float32
DecodeFn = Callable[[torch.Tensor, torch.Tensor, DecodeMeta, Sampling], torch.Tensor | tuple[torch.Tensor, ...]]


class DecodeGraphs:
    def __init__(self, decode: DecodeFn, batch_sizes: list[int], max_blocks_per_seq: int, device: torch.device) -> None:
        self.batch_sizes = batch_sizes
        largest = batch_sizes[-1]
        self.input_ids = torch.zeros(largest, dtype=torch.int64, device=device)
        self.positions = torch.zeros(largest, dtype=torch.int64, device=device)
        self.slots = torch.zeros(largest, dtype=torch.int64, device=device)
        self.tables = torch.zeros(largest, max_blocks_per_seq, dtype=torch.int32, device=device)
        self.lens = torch.ones(largest, dtype=torch.int32, device=device)
        self.sampling = torch.zeros(3, largest, dtype=torch.float32, device=device)  # temperature, top_p, uniform
        self.sampling[1] = 1.0
        self.host_tables = torch.zeros(largest, max_blocks_per_seq, dtype=torch.int32, pin_memory=True)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor | tuple[torch.Tensor, ...]] = {}
        pool = None
        with torch.inference_mode():
            for size in reversed(batch_sizes):
                meta = DecodeMeta(self.slots[:size], self.tables[:size], self.lens[:size])
                args = (self.input_ids[:size], self.positions[:size], meta, tuple(self.sampling[:, :size]))
                decode(*args)  # warm up: compile kernels, allocate workspaces
                torch.cuda.synchronize(device)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self.outputs[size] = decode(*args)
                pool = graph.pool()
                self.graphs[size] = graph

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
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        rows = len(input_ids)
        size = self.batch_sizes[bisect.bisect_left(self.batch_sizes, rows)]
        pad = size - rows
        if sampling is not None:  # padded rows are greedy (temperature 0, top-p 1, uniform 0)
            values = [list(column) + [fill] * pad for column, fill in zip(sampling, (0.0, 1.0, 0.0))]
            self.sampling[:, :size].copy_(torch.tensor(values, dtype=torch.float32), non_blocking=True)
        self.input_ids[:size].copy_(torch.tensor(input_ids + [0] * pad), non_blocking=True)
        self.positions[:size].copy_(torch.tensor(positions + [0] * pad), non_blocking=True)
        self.slots[:size].copy_(torch.tensor(slots + [0] * pad), non_blocking=True)
        self.lens[:size].copy_(torch.tensor(lens + [1] * pad, dtype=torch.int32), non_blocking=True)
        width = max(len(t) for t in tables)
        host = self.host_tables[:size, :width]
        host.zero_()
        for i, table in enumerate(tables):
            host[i, : len(table)] = torch.tensor(table, dtype=torch.int32)
        self.tables[:size, :width].copy_(host, non_blocking=True)
        self.graphs[size].replay()
        out = self.outputs[size]  # (logits, tokens), or (logits, hidden) when a drafter is attached
        return tuple(o[:rows] for o in out) if isinstance(out, tuple) else out[:rows]
