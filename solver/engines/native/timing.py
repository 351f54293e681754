"""Timing a GPU call as decode runs it: replayed from a CUDA graph."""

from __future__ import annotations

from collections.abc import Callable

import torch


def graph_time_ms(fns: list[Callable], x, repeats: int = 20) -> float:
    """Milliseconds per call, replayed from a CUDA graph as decode runs it, cycling through
    `fns` (the same linear of several layers: each call reads a weight the last ones did not)."""
    with torch.inference_mode():
        for fn in fns:
            fn(x)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(repeats):
                fns[i % len(fns)](x)
        graph.replay()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats
