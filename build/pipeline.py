"""Entry point of the engine build: `python -m build.pipeline <step> ...`.

(Not `python -m build`: from the repository root that name is this package, and elsewhere it is
PyPA's `build` tool. `build.pipeline` is unambiguous.)

Steps, in order: `calibration`, `fp8`, `drafter train`, `drafter export`, `redrafter`. Each one:
1. is skipped when its manifest says it already completed for the same inputs and arguments
   (`--force` redoes it);
2. with `--dry-run`, prints what it would read, run and write, and any preflight problems, and
   stops;
3. otherwise runs its preflight checks and refuses to start on any problem, printing one sentence
   per problem;
4. does its work, then writes its manifest last.
Exit status: 0 done/skipped/dry-run, 1 the step failed while running, 2 bad arguments or a
preflight problem.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from build import calibration, fp8, manifest, redrafter
from build.drafter import export as drafter_export
from build.drafter import train as drafter_train
from build.plan import BuildError

STEPS: dict[str, tuple[ModuleType, str]] = {
    "calibration": (calibration, "FP8 calibration texts (parquet, `text` column) in the solver's exact prompt format"),
    "fp8": (fp8, "FP8 TensorRT-LLM checkpoint (quantize.py) and engine (trtllm-build)"),
    "drafter train": (drafter_train, "train the ReDrafter draft model on the base model's generations (PyTorch)"),
    "drafter export": (drafter_export, "write the drafter in the names/shapes TensorRT-LLM's converter reads"),
    "redrafter": (redrafter, "combined FP8+ReDrafter checkpoint and engine"),
}


def _add_step(subparsers, command: str, step: str) -> None:
    module, help_text = STEPS[step]
    parser = subparsers.add_parser(command, help=help_text, description=(module.__doc__ or "").split("\n\n")[0])
    module.add_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the commands and files this step would run/write, and preflight problems; do nothing")
    parser.add_argument("--force", action="store_true", help="redo the step even if its outputs are complete for these inputs")
    parser.set_defaults(step=step)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m build.pipeline",
        description="Build the TensorRT-LLM engines the solver loads: calibration -> fp8 -> drafter train -> drafter export -> redrafter.",
    )
    steps = parser.add_subparsers(required=True, metavar="step")
    _add_step(steps, "calibration", "calibration")
    _add_step(steps, "fp8", "fp8")
    drafter = steps.add_parser("drafter", help="ReDrafter draft model: `train` or `export`")
    drafter_steps = drafter.add_subparsers(required=True, metavar="action")
    _add_step(drafter_steps, "train", "drafter train")
    _add_step(drafter_steps, "export", "drafter export")
    _add_step(steps, "redrafter", "redrafter")
    return parser


def run_step(module: ModuleType, cfg, *, dry_run: bool, force: bool) -> int:
    plan = module.plan(cfg)
    complete = not force and manifest.is_complete(plan)
    if dry_run:
        print(plan.render())
        if complete:
            print(f"status: complete for these inputs ({plan.manifest_path}); a real run would skip it.")
            return 0
        problems = module.preflight_problems(cfg)
        for problem in problems:
            print(f"preflight: {problem}")
        print(f"status: dry run; {len(problems)} preflight problem(s) would stop a real run." if problems else "status: dry run; preflight passed.")
        return 0
    if complete:
        print(f"{plan.step}: already complete for these inputs ({plan.manifest_path}); skipping (--force redoes it).")
        return 0
    problems = module.preflight_problems(cfg)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    fingerprint = manifest.fingerprint(plan)  # of the inputs as they are when the step starts
    manifest.clear(plan)
    try:
        extra = module.execute(cfg)
    except BuildError as error:
        print(f"error: {plan.step}: {error}", file=sys.stderr)
        return 1
    manifest.write(plan, fingerprint, {"result": extra})
    print(f"{plan.step}: done; manifest {plan.manifest_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = STEPS[args.step][0]
    try:
        cfg = module.config_from_args(args)
    except ValueError as error:  # arguments that fail validation
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return run_step(module, cfg, dry_run=args.dry_run, force=args.force)
    except BuildError as error:  # unreadable inputs found while planning or checking
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
