"""Latency and throughput of the sandbox, beside a fresh interpreter per call measured in the same run.

    python bench/sandbox.py [--calls 500] [--fresh-calls 40] [--sympy-fresh-calls 12] [--sessions 64]

Prints p50/p99 latency of trivial code and of a sympy computation through `Sandbox.execute`
(warm session) and through `subprocess.run([sys.executable, "-c", code])`; the cost of a session's
first call, one at a time and for `--sessions` new sessions at once, with spare workers ready and
without spares (`spare_workers=0`: each first call forks its worker); and the throughput of many
sessions called concurrently; then a table with the ratios. Percentiles of few samples are rough:
p99 of 12 runs is their max.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import Future, wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import Sandbox  # noqa: E402

TRIVIAL = "x = 1 + 1"
# The factor cache is cleared so that every call does the work, as a fresh interpreter does.
SYMPY = "import sympy\nsympy.factor_cache.cache_clear()\nf = sympy.factorint(2**64 + 1)"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    return percentile(samples, 0.50) * 1e3, percentile(samples, 0.99) * 1e3


def time_sandbox(pool: Sandbox, session_id: str, code: str, calls: int) -> list[float]:
    assert pool.execute(session_id, code).status == "ok"  # warm: worker started, imports cached
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        result = pool.execute(session_id, code)
        samples.append(time.perf_counter() - started)
        assert result.status == "ok", result
    return samples


def time_fresh_interpreter(code: str, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        samples.append(time.perf_counter() - started)
    return samples


def wait_for_spares(pool: Sandbox, timeout_s: float = 60.0) -> None:
    """Until every slot that sessions leave free holds a ready spare (up to `spare_workers`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = pool.stats()
        if stats.spares_ready >= min(pool.spare_workers, pool.max_workers - stats.workers_live):
            return
        time.sleep(0.01)
    raise TimeoutError(f"spares not ready after {timeout_s} s: {pool.stats()}")


def time_concurrent_first_calls(pool: Sandbox, sessions: int) -> list[float]:
    """Latency of each of `sessions` first calls submitted at once (each from the same start)."""
    wait_for_spares(pool)
    names = [f"burst-{index}" for index in range(sessions)]
    done_at: dict[str, float] = {}

    def stamp(name: str):
        return lambda future: done_at.setdefault(name, time.perf_counter())

    started = time.perf_counter()
    futures: list[Future] = []
    for name in names:
        futures.append(pool.submit(name, TRIVIAL))
        futures[-1].add_done_callback(stamp(name))
    wait(futures)
    assert all(future.result().status == "ok" for future in futures)
    for name in names:
        pool.close_session(name)
    return [done_at[name] - started for name in names]


def time_first_calls(pool: Sandbox, sessions: int) -> list[float]:
    wait_for_spares(pool)
    samples = []
    for index in range(sessions):
        started = time.perf_counter()
        assert pool.execute(f"first-{index}", TRIVIAL).status == "ok"
        samples.append(time.perf_counter() - started)
        pool.close_session(f"first-{index}")
    return samples


def throughput(pool: Sandbox, sessions: int, calls_per_session: int) -> float:
    """Calls per second with `sessions` sessions each given `calls_per_session` calls at once."""
    names = [f"busy-{index}" for index in range(sessions)]
    wait([pool.submit(name, TRIVIAL) for name in names])  # start every worker first
    started = time.perf_counter()
    futures = [pool.submit(name, TRIVIAL) for _ in range(calls_per_session) for name in names]
    wait(futures)
    elapsed = time.perf_counter() - started
    assert all(future.result().status == "ok" for future in futures)
    return len(futures) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="sandbox calls per case")
    parser.add_argument("--fresh-calls", type=int, default=40, help="fresh interpreters, trivial")
    parser.add_argument("--sympy-fresh-calls", type=int, default=12, help="fresh interpreters, sympy")
    parser.add_argument("--sessions", type=int, default=64, help="concurrent sessions")
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    rows = []
    with Sandbox(max_workers=args.sessions) as pool:
        print(f"isolation: {pool.isolation}")
        burst = summary(time_concurrent_first_calls(pool, args.sessions))
        print(f"{args.sessions} first calls at once, spares ready: "
              f"p50 {burst[0]:.1f} ms p99 {burst[1]:.1f} ms")
        for label, code, fresh_calls in (("trivial", TRIVIAL, args.fresh_calls),
                                         ("sympy", SYMPY, args.sympy_fresh_calls)):
            ours = summary(time_sandbox(pool, label, code, args.calls))
            fresh = summary(time_fresh_interpreter(code, fresh_calls))
            print(f"{label}: sandbox p50 {ours[0]:.2f} ms p99 {ours[1]:.2f} ms ({args.calls} calls); "
                  f"fresh interpreter p50 {fresh[0]:.1f} ms p99 {fresh[1]:.1f} ms "
                  f"({fresh_calls} runs)")
            rows.append((label, ours, fresh))
        first = summary(time_first_calls(pool, 20))
        print(f"first call of a new session, one at a time, spares ready: "
              f"p50 {first[0]:.1f} ms p99 {first[1]:.1f} ms")
        print(f"workers: {pool.stats()}")
        calls_per_s = throughput(pool, args.sessions, calls_per_session=20)
        print(f"throughput, {args.sessions} concurrent sessions x 20 trivial calls: "
              f"{calls_per_s:.0f} calls/s")
    with Sandbox(max_workers=args.sessions, spare_workers=0) as pool:
        assert pool.execute("warm-up", TRIVIAL).status == "ok"  # the fork server's imports
        pool.close_session("warm-up")
        first_forked = summary(time_first_calls(pool, 20))
        burst_forked = summary(time_concurrent_first_calls(pool, args.sessions))
        print(f"without spares: first call one at a time p50 {first_forked[0]:.1f} ms "
              f"p99 {first_forked[1]:.1f} ms; {args.sessions} at once p50 {burst_forked[0]:.1f} ms "
              f"p99 {burst_forked[1]:.1f} ms")

    print()
    print("| code | sandbox p50 / p99 (ms) | fresh interpreter p50 / p99 (ms) | p50 ratio |")
    print("|---|---|---|---|")
    for label, ours, fresh in rows:
        print(f"| {label} | {ours[0]:.2f} / {ours[1]:.2f} | {fresh[0]:.1f} / {fresh[1]:.1f} | "
              f"{fresh[0] / ours[0]:.0f}x |")
    print(f"| first call of a session, one at a time | {first[0]:.1f} / {first[1]:.1f} "
          f"(no spares: {first_forked[0]:.1f} / {first_forked[1]:.1f}) | | |")
    print(f"| first calls of {args.sessions} new sessions at once | {burst[0]:.1f} / {burst[1]:.1f} "
          f"(no spares: {burst_forked[0]:.1f} / {burst_forked[1]:.1f}) | | |")
    print(f"| {args.sessions} concurrent sessions | {calls_per_s:.0f} calls/s | | |")


if __name__ == "__main__":
    main()
