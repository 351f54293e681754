"""What tool calls cost the solver: added latency per call, and wall time against no tools.

The scripted engine streams 64 samples (a step costs `--step-ms`, like a memory-bound decode
step whatever the batch); each sample makes 3 tool calls of trivial code, run by the real
sandbox. Two shapes of the same workload: "staggered", where samples think for different
lengths between calls as real samples do (8 lengths, so calls arrive 8 at a time), and
"lockstep", where all 64 samples call in the same engine step (a burst of 64 calls at once on
this machine's cores: the worst case). The solver's added latency for a call is the time from the engine step that ended
the sample at `</tool_call>` to the engine being asked to continue it, minus the code's own run
time as the sandbox measured it. A second workload runs code that sleeps 0.5 s: the batch's
wall time should grow by about one sleep per round of calls, not by one per call.

Run: python bench/tool_calls.py [--samples 64] [--calls 3] [--step-ms 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox import Sandbox, SandboxLimits  # noqa: E402
from solver.config import SolverConfig, ToolConfig  # noqa: E402
from solver.engines.replay import problem_and_index  # noqa: E402
from solver.engines.scripted import ScriptedEngine  # noqa: E402
from solver.orchestrator import Orchestrator  # noqa: E402
from solver.problems import Problem  # noqa: E402
from solver.tokenizer import byte_tokenizer  # noqa: E402


class StampedEngine:
    """Forwards to an engine; stamps when a request stopped and when it was extended."""

    def __init__(self, inner):
        self.inner, self.stopped_at, self.extended_at = inner, {}, {}

    def step(self):
        deltas = self.inner.step()
        now = time.perf_counter()
        for delta in deltas:
            if delta.finish_reason == "stop":
                self.stopped_at.setdefault(delta.request_id, []).append(now)
        return deltas

    def extend(self, request_id, token_ids, params):
        self.extended_at.setdefault(request_id, []).append(time.perf_counter())
        return self.inner.extend(request_id, token_ids, params)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def completion(code: str, num_calls: int, thinking_repeats: int) -> str:
    thinking = "Let me compute this step by step. " * thinking_repeats
    calls = "".join(f"{thinking}<tool_call>\n{code}\n</tool_call>" for _ in range(num_calls))
    return calls + thinking + "\\boxed{2}"


def run(args, code: str, tools: Sandbox | None, staggered: bool = True) -> tuple[float, list[list[float]]]:
    tokenizer = byte_tokenizer()
    texts = [completion(code, args.calls, 3 + (index % 8 if staggered else 0)) for index in range(args.samples)]
    script = lambda request: texts[problem_and_index(request.request_id)[1]]  # noqa: E731
    engine = StampedEngine(ScriptedEngine(tokenizer, script, tokens_per_step=4, step_delay_s=args.step_ms / 1000))
    config = SolverConfig(num_samples=args.samples, consensus=None, max_new_tokens=10_000, tools=ToolConfig(enabled=tools is not None, num_workers=args.samples))
    started = time.perf_counter()
    result = Orchestrator(engine, tokenizer, config, tools).solve(Problem("bench", "What is 1+1?"))
    wall_s = time.perf_counter() - started
    assert result.answer == 2, result.votes
    added_ms: list[list[float]] = [[] for _ in range(args.calls)]  # by round
    for sample in result.samples:
        assert tools is None or [c.status for c in sample.tool_calls] == ["ok"] * args.calls, sample.tool_calls
        stamps = zip(sample.tool_calls, engine.stopped_at.get(sample.request_id, []), engine.extended_at.get(sample.request_id, []))
        for round_index, (call, stop, extend) in enumerate(stamps):
            added_ms[round_index].append(1000 * (extend - stop - call.run_s))
    return wall_s, added_ms


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--step-ms", type=float, default=5.0, help="cost of one engine step")
    args = parser.parse_args()
    results = {}
    with Sandbox(max_workers=args.samples, limits=SandboxLimits(timeout_s=10)) as sandbox:
        run(args, "x = 1 + 1", sandbox)  # warm-up: the fork server's imports, the spare workers
        for shape, staggered in (("staggered", True), ("lockstep", False)):
            results[shape] = [run(args, code, tools, staggered) for code, tools in
                              (("x = 1 + 1", None), ("print(1 + 1)", sandbox), ("import time; time.sleep(0.5)", sandbox))]
    num_calls = args.samples * args.calls
    print(f"{args.samples} samples x {args.calls} tool calls, engine step {args.step_ms:g} ms, {args.samples} sandbox workers")
    print(f"{'workload':<34} {'wall s':>8} {'vs no tools':>12}")
    for shape, ((no_tools_s, _), (trivial_s, _), (sleep_s, _)) in results.items():
        print(f"{shape + ': no tool calls':<34} {no_tools_s:>8.2f}")
        print(f"{shape + ': trivial code':<34} {trivial_s:>8.2f} {trivial_s - no_tools_s:>+11.2f}s")
        print(f"{shape + ': code sleeping 0.5 s':<34} {sleep_s:>8.2f} {sleep_s - no_tools_s:>+11.2f}s  (vs trivial {sleep_s - trivial_s:+.2f} s; one sleep per round: +{0.5 * args.calls:.1f} s, per call: +{0.5 * num_calls:.0f} s)")
    print("solver's added latency per call, excluding the code's run time (goal: p50 < 10 ms):")
    print(f"{'calls':<34} {'n':>4} {'p50 ms':>8} {'p99 ms':>8}")
    for shape, (_, (_, added_ms), _) in results.items():
        every = [ms for by_round in added_ms for ms in by_round]
        print(f"{shape + ': all':<34} {len(every):>4} {percentile(every, 50):>8.2f} {percentile(every, 99):>8.2f}")
        for round_index, by_round in enumerate(added_ms):
            label = f"{shape}: " + ("first call (new session)" if round_index == 0 else f"call {round_index + 1}")
            print(f"{label:<34} {len(by_round):>4} {percentile(by_round, 50):>8.2f} {percentile(by_round, 99):>8.2f}")


if __name__ == "__main__":
    main()
