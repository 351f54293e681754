"""The solver's own cost per generated token, with an engine that costs almost nothing.

The scripted engine streams tokens for 64 samples as fast as it can; every call into the engine
is timed, and whatever wall time is not spent inside the engine is the solver's: routing
deltas, sample state, stop rules, decoding and voting at the end. Goal: the solver keeps up
with at least 20,000 tokens/s in aggregate on one CPU core (under 50 us per token).

Run: python bench/solver_overhead.py [--samples 64] [--tokens 2000] [--tokens-per-step 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from solver.config import SolverConfig, ToolConfig  # noqa: E402
from solver.engines.scripted import ScriptedEngine  # noqa: E402
from solver.orchestrator import Orchestrator  # noqa: E402
from solver.problems import Problem  # noqa: E402
from solver.tokenizer import byte_tokenizer  # noqa: E402


class TimedEngine:
    """Forwards to an engine and adds up the seconds spent inside it."""

    def __init__(self, inner):
        self.inner, self.engine_s = inner, 0.0

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.engine_s += time.perf_counter() - started

        return timed


def measure(num_samples: int, num_tokens: int, tokens_per_step: int) -> dict:
    tokenizer = byte_tokenizer()
    completion = "Let me think. " * (num_tokens // 14) + "\\boxed{42}"
    engine = TimedEngine(ScriptedEngine(tokenizer, lambda request: completion, tokens_per_step=tokens_per_step))
    config = SolverConfig(num_samples=num_samples, max_new_tokens=num_tokens + 100, consensus=None, tools=ToolConfig(enabled=False))
    orchestrator = Orchestrator(engine, tokenizer, config)
    started = time.perf_counter()
    result = orchestrator.solve(Problem("bench", "What is 6 times 7?"))
    wall_s = time.perf_counter() - started
    assert result.answer == 42, result.votes
    tokens = result.num_generated_tokens
    solver_s = wall_s - engine.engine_s
    return {"tokens": tokens, "wall_s": wall_s, "engine_s": engine.engine_s, "solver_s": solver_s, "us_per_token": 1e6 * solver_s / tokens, "solver_tok_s": tokens / solver_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per sample")
    parser.add_argument("--tokens-per-step", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = [measure(args.samples, args.tokens, args.tokens_per_step) for _ in range(args.repeats)]
    best = min(runs, key=lambda r: r["us_per_token"])
    print(f"{args.samples} samples x ~{args.tokens} tokens, {args.tokens_per_step} token(s) per step, best of {args.repeats}")
    print(f"{'tokens':>8} {'wall s':>8} {'engine s':>9} {'solver s':>9} {'us/token':>9} {'solver tok/s':>13} {'goal':>12}")
    print(f"{best['tokens']:>8} {best['wall_s']:>8.3f} {best['engine_s']:>9.3f} {best['solver_s']:>9.3f} {best['us_per_token']:>9.2f} {best['solver_tok_s']:>13,.0f} {'>= 20,000':>12}")


if __name__ == "__main__":
    main()
