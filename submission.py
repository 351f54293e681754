"""Solve a problems file: `python submission.py problems.csv` -> submission.csv (id,answer).

Reads the problems (CSV or parquet with `id` and `problem` or `question`, optionally `answer`),
runs N samples per problem through an engine with tool calls in a sandbox, stops each problem
early, votes, and writes one integer per problem. See README.md for every option.
Exit codes: 0 done; 1 the engine could not be loaded; 2 bad input or options; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

RUN_START_S = time.monotonic()  # the time limit counts from here: model loading is included


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="submission.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("problems", help="CSV or parquet file with columns id, problem (or question), optionally answer")
    p.add_argument("--out", default="submission.csv", help="where to write id,answer")
    p.add_argument("--run-log", default=None, help="append-only JSONL log of every sample (default: OUT.runlog.jsonl)")
    p.add_argument("--no-resume", action="store_true", help="solve every problem again even if the run log has it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--report", metavar="DIR", default=None, help="after the run, write the leaderboard, per-problem table and plots of the run log to DIR")
    p.add_argument("--gateway", action="store_true", help="Kaggle mode: serve predict(id_, question) to the competition's gateway (or a local stand-in over PROBLEMS)")
    p.add_argument("--num-problems", type=int, default=50, help="gateway mode: problems the gateway will send (for the time budget)")

    g = p.add_argument_group("engine")
    g.add_argument("--engine", default="hf", choices=("hf", "native", "trtllm", "replay"), help="generation backend")
    g.add_argument("--model", default=None, help="HF model directory or .gguf file (default: SmolLM2-135M-Instruct, fetched on first use)")
    g.add_argument("--device", default=None, help="hf: cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"), help="hf: weights dtype (default: bfloat16 on GPU, float32 on CPU)")
    g.add_argument("--fp8", action="store_true", help="native: FP8 weights for the linear layers where faster (Hopper/Ada GPUs)")
    g.add_argument("--kv-cache-dtype", default="auto", choices=("auto", "fp8"), help="native: KV cache in the model's dtype, or FP8 (e4m3, half the bytes)")
    g.add_argument("--shared-prefix-min-tokens", type=int, default=None,
                   help="native: shortest shared prompt whose KV decode reads once per step for all samples, not once per sample "
                        "(default 2048; 0: any)")
    g.add_argument("--drafter", default=None, help="native: ReDrafter drafter directory (from `python -m build.pipeline drafter export`) for speculative decoding")
    g.add_argument("--max-batch-size", type=int, default=None, help="requests generating at once (default: hf 64, trtllm the engine's)")
    g.add_argument("--replay-file", default=None, help="replay: JSONL of {id, completion}, one line per sample")
    g.add_argument("--engine-dir", default=None, help="trtllm: engine directory")
    g.add_argument("--tokenizer-dir", default=None, help="trtllm: HF tokenizer directory (default: the engine directory)")
    g.add_argument("--kv-cache-fraction", type=float, default=0.9, help="trtllm: share of free GPU memory for the KV cache")
    g.add_argument("--no-chunked-context", action="store_true", help="trtllm: disable chunked context")
    g.add_argument("--allow-identical-samples", action="store_true", help="trtllm: run N>1 samples on a greedy ReDrafter engine anyway")

    g = p.add_argument_group("sampling and stopping")
    g.add_argument("--num-samples", type=int, default=8, help="samples per problem (N)")
    g.add_argument("--stop-after", type=int, default=None, help="end a problem once K samples finished (default: all N)")
    g.add_argument("--consensus", default="4/5", help="end a problem once A of the first M answers agree: A/M, A, or off")
    g.add_argument("--max-new-tokens", type=int, default=2048, help="tokens after the prompt per sample, tool output included")
    g.add_argument("--temperature", type=float, default=0.6)
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--seed", type=int, default=0, help="run seed; each sample gets its own seed derived from it")
    g.add_argument("--answer-modulus", type=int, default=1000, help="answers are reduced modulo M; 0 keeps them whole")
    g.add_argument("--fallback-answer", type=int, default=0, help="answer when no sample answered or time ran out")

    g = p.add_argument_group("time")
    g.add_argument("--time-limit", type=float, default=None, help="seconds for the whole run, model loading included (default: none)")
    g.add_argument("--time-margin", type=float, default=None, help="seconds kept in reserve (default: 3%% of the limit, 1-60 s)")
    g.add_argument("--problem-time", type=float, default=None, help="base seconds per problem (default: an even share of the limit)")
    g.add_argument("--max-extra-time", type=float, default=None, help="most seconds a problem may draw from unused time (default: 60%% of the base)")

    g = p.add_argument_group("tool calls")
    g.add_argument("--no-tools", action="store_true", help="do not run the model's code")
    g.add_argument("--max-tool-calls", type=int, default=6, help="code runs per sample")
    g.add_argument("--tool-timeout", type=float, default=10.0, help="seconds per code run")
    g.add_argument("--tool-output-chars", type=int, default=1000, help="characters of stdout and of stderr fed back")
    g.add_argument("--sandbox-workers", type=int, default=8, help="code runs at once, across all samples")
    return p


def configs_from_args(args: argparse.Namespace):
    """Frozen configs from the parsed arguments; ValueError names the bad option."""
    from solver.budget import BudgetPolicy
    from solver.config import SolverConfig, ToolConfig
    from solver.engines.loader import EngineOptions
    from solver.stopping import Consensus

    tools = ToolConfig(
        enabled=not args.no_tools,
        max_calls=args.max_tool_calls,
        timeout_s=args.tool_timeout,
        max_output_chars=args.tool_output_chars,
        num_workers=args.sandbox_workers,
    )
    solver = SolverConfig(
        num_samples=args.num_samples,
        stop_after=args.stop_after,
        consensus=Consensus.parse(args.consensus),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        answer_modulus=args.answer_modulus or None,
        fallback_answer=args.fallback_answer,
        tools=tools,
    )
    policy = BudgetPolicy(args.time_limit, args.time_margin, args.problem_time, args.max_extra_time)
    engine = EngineOptions(
        name=args.engine,
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        max_batch_size=args.max_batch_size,
        replay_file=args.replay_file,
        fp8=args.fp8,
        drafter=args.drafter,
        kv_cache_dtype=args.kv_cache_dtype,
        shared_prefix_min_tokens=args.shared_prefix_min_tokens,
        engine_dir=args.engine_dir,
        tokenizer_dir=args.tokenizer_dir,
        kv_cache_fraction=args.kv_cache_fraction,
        chunked_context=not args.no_chunked_context,
        allow_identical_samples=args.allow_identical_samples,
    )
    return solver, policy, engine


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from solver.problems import InputError, read_problems

    try:
        solver_config, policy, engine_options = configs_from_args(args)
        problems = read_problems(args.problems)
    except (InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return solve(args, problems, solver_config, policy, engine_options)


def solve(args, problems, solver_config, policy, engine_options) -> int:
    from solver.engines.loader import EngineLoadError, RunShape, load_engine
    from solver.orchestrator import Orchestrator
    from solver.run import Runner
    from solver.runlog import RunLog

    try:
        engine, tokenizer = load_engine(engine_options, RunShape(solver_config.num_samples, solver_config.temperature, solver_config.top_p, solver_config.max_new_tokens))
    except EngineLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out_path = Path(args.out)
    runlog_path = Path(args.run_log or f"{out_path}.runlog.jsonl")
    with ExitStack() as stack:
        stack.callback(engine.close)
        tools = _open_sandbox(stack, solver_config, tokenizer)
        orchestrator = Orchestrator(engine, tokenizer, solver_config, tools)
        runner = Runner(orchestrator, RunLog(runlog_path), out_path, policy, solver_config.fallback_answer, resume=not args.no_resume, show_progress=not args.quiet)
        run_config = {"argv": sys.argv[1:], "engine": asdict(engine_options), "solver": _plain(asdict(solver_config)), "tools_active": orchestrator.tools_active}
        if args.gateway:
            return _serve_gateway(args, orchestrator, runlog_path, policy, run_config, out_path)
        try:
            summary = runner.run(problems, run_config, start_s=RUN_START_S)
        except KeyboardInterrupt:
            print(f"\ninterrupted: {out_path} holds the answers so far; run the same command again to resume.", file=sys.stderr)
            return 130
    _print_summary(summary, out_path, len(problems))
    if args.report:
        from solver.report import write_report

        written = write_report([runlog_path], args.report)
        print(f"report: {', '.join(str(path) for path in written.values())}", file=sys.stderr)
    return 0


def _serve_gateway(args, orchestrator, runlog_path: Path, policy, run_config: dict, out_path: Path) -> int:
    from solver.gateway import Gateway, serve
    from solver.runlog import RunLog

    gateway = Gateway(orchestrator, RunLog(runlog_path), policy, args.num_problems, start_s=RUN_START_S, run_config=run_config)
    serve(gateway.predict, args.problems, out_dir=out_path.parent)
    return 0


def _open_sandbox(stack: ExitStack, config, tokenizer):
    from solver.tokenizer import TOOL_CALL_END, single_token_id

    if not config.tools.enabled:
        return None
    if single_token_id(tokenizer, TOOL_CALL_END) is None:
        print(f"note: this model's tokenizer has no single {TOOL_CALL_END} token, so tool calls are off.", file=sys.stderr)
        return None
    from sandbox import Sandbox, SandboxLimits

    limits = SandboxLimits(timeout_s=config.tools.timeout_s, max_output_chars=config.tools.max_output_chars)
    return stack.enter_context(Sandbox(max_workers=config.tools.num_workers, limits=limits))


def _plain(value):
    """Dataclass dicts with objects (Consensus) made JSON-friendly."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def _print_summary(summary, out_path: Path, num_problems: int) -> None:
    parts = [f"wrote {out_path} ({num_problems} answers)", f"{summary.num_solved} solved now", f"{summary.num_resumed} resumed"]
    if summary.num_unsolved:
        parts.append(f"{summary.num_unsolved} out of time (fallback)")
    if summary.num_errors:
        parts.append(f"{summary.num_errors} failed (fallback; see the run log)")
    parts.append(f"{summary.wall_s:.1f} s")
    print(", ".join(parts), file=sys.stderr)
    if summary.accuracy is not None:
        print(f"accuracy: {summary.num_correct}/{summary.num_with_expected} = {summary.accuracy:.1%}")


if __name__ == "__main__":
    sys.exit(main())
