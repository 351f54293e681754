"""Timing a GPU call as decode runs it (replayed from a CUDA graph), and choosing the fastest of
several forms of one computation that agree with each other (the FP8 linears, the row kernels)."""

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


def agreeing_times(forms: dict[str, Callable[[], tuple[Callable[[], torch.Tensor], Callable[[], float]]]], tolerance: float) -> dict:
    """Time each form that agrees with the first: `forms[name]()` builds the form and returns
    (its output as a float tensor, its timer in ms). A form whose output differs from the first
    one's by more than `tolerance` (relative) is listed under "mismatch"; it, and a form that
    fails to build or run, time as infinite. Returns {name: ms, ..., "mismatch": [names]}."""
    times: dict = {}
    reference = None
    for name, build in forms.items():
        try:
            output, timer = build()
            with torch.inference_mode():
                got = output()
            reference = got if reference is None else reference
            if ((got - reference).norm() / reference.norm().clamp(min=1e-30)).item() > tolerance:
                times.setdefault("mismatch", []).append(name)
                times[name] = float("inf")
                continue
            times[name] = timer()
        except Exception:  # noqa: BLE001 - a form this cuBLAS / torch / Triton build does not offer
            times[name] = float("inf")
    return times


def with_choice(times: dict) -> dict:
    """`times` with "chosen": the fastest form (a "mismatch" list is not a form)."""
    timed = {k: v for k, v in times.items() if k != "mismatch"}
    return {**times, "chosen": min(timed, key=timed.get)}
