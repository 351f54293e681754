"""The combined FP8+ReDrafter engine: the FP8 base checkpoint plus the exported drafter.

Two TensorRT-LLM commands:
1. `python {examples}/redrafter/convert_checkpoint.py --base_model_checkpoint_dir ...` merges the
   FP8 checkpoint of the fp8 step with the drafter (`drafter export`) into one checkpoint; the
   drafter stays in `--dtype` (TensorRT-LLM excludes it from quantization).
2. `trtllm-build ... --speculative_decoding_mode explicit_draft_tokens --max_beam_width 1`.

Sampling: by default the checkpoint is converted with `--redrafter_no_greedy_search`, so the
engine samples with each request's temperature and seed and N samples of one problem differ.
`--greedy` converts without it: the engine then ignores temperature and every sample of a
problem is identical, which defeats majority voting. Either way the engine ignores top-p, top-k,
min-p and penalties (ReDrafter's decoding mode has no such layers).

Beams and draft length are fixed at build time; the draft length per beam must not exceed the
number of tokens the drafter was trained to predict.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from build import manifest, preflight, trtllm
from build.drafter import export
from build.plan import BuildError, Plan, run_commands
from build.trtllm import EngineLimits

CONVERT_SCRIPT = "redrafter/convert_checkpoint.py"
SUPPORTED_ARCHITECTURES = ("QWenForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM")  # convert_checkpoint's REDRAFTER_MAP
GREEDY_NOTE = "--greedy: the engine ignores temperature, so all N samples of a problem are identical (majority voting gains nothing)."
SAMPLING_NOTE = "sampling (--redrafter_no_greedy_search): each request's temperature and seed apply, so the N samples differ; top-p/top-k/min-p are ignored by ReDrafter engines."


@dataclass(frozen=True)
class RedrafterConfig:
    base_checkpoint_dir: Path  # the FP8 TensorRT-LLM checkpoint of the fp8 step
    drafter_dir: Path  # output of `drafter export`
    checkpoint_dir: Path  # combined checkpoint (output)
    engine_dir: Path
    trtllm_examples: Path
    tp_size: int = 1
    dtype: str = "bfloat16"
    num_beams: int = 1
    draft_len_per_beam: int = 3
    greedy: bool = False
    limits: EngineLimits = field(default_factory=EngineLimits)
    workers: int | None = None

    def __post_init__(self) -> None:
        if min(self.tp_size, self.num_beams, self.draft_len_per_beam) < 1:
            raise ValueError("--tp-size, --num-beams and --draft-len-per-beam must be >= 1")
        if self.dtype not in trtllm.DTYPES:
            raise ValueError(f"--dtype must be one of {trtllm.DTYPES}")
        if self.checkpoint_dir.absolute() in (self.engine_dir.absolute(), self.base_checkpoint_dir.absolute()):
            raise ValueError("--checkpoint-dir must differ from --engine-dir and --base-checkpoint")

    @property
    def num_workers(self) -> int:
        return self.workers or self.tp_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-checkpoint", type=Path, required=True, help="the FP8 TensorRT-LLM checkpoint written by the fp8 step (--checkpoint-dir there)")
    parser.add_argument("--drafter", type=Path, required=True, help="drafter directory written by `drafter export`")
    parser.add_argument("--checkpoint-dir", type=Path, required=True, help="where the combined FP8+ReDrafter checkpoint goes")
    parser.add_argument("--engine-dir", type=Path, required=True, help="where the combined engine goes")
    trtllm.add_trtllm_arguments(parser)
    parser.add_argument("--dtype", choices=trtllm.DTYPES, default="bfloat16", help="drafter dtype; must equal the base checkpoint's; default %(default)s")
    parser.add_argument("--num-beams", type=int, default=1, help="draft beams per step (--redrafter_num_beams); default %(default)s")
    parser.add_argument("--draft-len-per-beam", type=int, default=3, help="draft tokens per beam (--redrafter_draft_len_per_beam), at most the drafter's trained count; default %(default)s")
    parser.add_argument("--greedy", action="store_true", help="greedy drafting: the engine ignores temperature and ALL N SAMPLES OF A PROBLEM ARE IDENTICAL; default off (--redrafter_no_greedy_search)")
    trtllm.add_engine_arguments(parser)


def config_from_args(args: argparse.Namespace) -> RedrafterConfig:
    return RedrafterConfig(
        base_checkpoint_dir=args.base_checkpoint,
        drafter_dir=args.drafter,
        checkpoint_dir=args.checkpoint_dir,
        engine_dir=args.engine_dir,
        trtllm_examples=args.trtllm_examples,
        tp_size=args.tp_size,
        dtype=args.dtype,
        num_beams=args.num_beams,
        draft_len_per_beam=args.draft_len_per_beam,
        greedy=args.greedy,
        limits=trtllm.engine_limits_from_args(args),
        workers=args.workers,
    )


def convert_command(cfg: RedrafterConfig):
    sampling = () if cfg.greedy else ("--redrafter_no_greedy_search",)
    return trtllm.example_command(
        cfg.trtllm_examples,
        CONVERT_SCRIPT,
        "--base_model_checkpoint_dir", str(cfg.base_checkpoint_dir),
        "--drafter_model_dir", str(cfg.drafter_dir),
        "--output_dir", str(cfg.checkpoint_dir),
        "--dtype", cfg.dtype,
        "--tp_size", str(cfg.tp_size),
        "--redrafter_num_beams", str(cfg.num_beams),
        "--redrafter_draft_len_per_beam", str(cfg.draft_len_per_beam),
        *sampling,
    )


def engine_command(cfg: RedrafterConfig):
    speculative = ("--speculative_decoding_mode", "explicit_draft_tokens", "--max_beam_width", "1")
    return trtllm.build_command(cfg.checkpoint_dir, cfg.engine_dir, cfg.limits, cfg.num_workers, speculative)


def convert_plan(cfg: RedrafterConfig) -> Plan:
    """The conversion stage alone, with its own manifest in the combined checkpoint directory."""
    return Plan(
        step="redrafter convert",
        inputs=(cfg.base_checkpoint_dir, cfg.drafter_dir / export.CONFIG_FILE, cfg.drafter_dir / export.WEIGHTS_FILE),
        params={
            "tp_size": cfg.tp_size,
            "dtype": cfg.dtype,
            "num_beams": cfg.num_beams,
            "draft_len_per_beam": cfg.draft_len_per_beam,
            "greedy": cfg.greedy,
        },
        outputs=(cfg.checkpoint_dir / "config.json", *(cfg.checkpoint_dir / f"rank{r}.safetensors" for r in range(cfg.tp_size))),
        manifest_path=cfg.checkpoint_dir / manifest.MANIFEST_NAME,
        commands=(convert_command(cfg),),
    )


def plan(cfg: RedrafterConfig) -> Plan:
    convert = convert_plan(cfg)
    return Plan(
        step="redrafter",
        inputs=convert.inputs,
        params={**convert.params, "limits": vars(cfg.limits)},
        outputs=(
            *convert.outputs,
            cfg.engine_dir / "config.json",
            *(cfg.engine_dir / f"rank{rank}.engine" for rank in range(cfg.tp_size)),
        ),
        manifest_path=cfg.engine_dir / manifest.MANIFEST_NAME,
        commands=(*convert.commands, engine_command(cfg)),
        notes=(GREEDY_NOTE if cfg.greedy else SAMPLING_NOTE,),
    )


def checkpoint_problems(cfg: RedrafterConfig) -> list[str]:
    """The base checkpoint must be a TensorRT-LLM checkpoint of a supported model, with this TP
    size and dtype, and match the drafter's hidden size, vocabulary and draft length."""
    base = trtllm.read_checkpoint_config(cfg.base_checkpoint_dir)
    if base is None:
        return [f"--base-checkpoint: {cfg.base_checkpoint_dir / 'config.json'} is missing or unreadable; run the fp8 step first."]
    problems = []
    architecture = base.get("architecture")
    if architecture not in SUPPORTED_ARCHITECTURES:
        problems.append(f"--base-checkpoint: architecture {architecture!r} has no ReDrafter model in TensorRT-LLM (supported: {', '.join(SUPPORTED_ARCHITECTURES)}).")
    base_tp = base.get("mapping", {}).get("tp_size", 1)
    if base_tp != cfg.tp_size:
        problems.append(f"--base-checkpoint was written for tp_size {base_tp}, but --tp-size is {cfg.tp_size}; they must match.")
    if base.get("dtype") not in (None, cfg.dtype):
        problems.append(f"--dtype {cfg.dtype} differs from the base checkpoint's dtype {base['dtype']}; TensorRT-LLM requires them equal.")
    try:
        drafter = export.read_config(cfg.drafter_dir)
    except BuildError as error:
        return problems + [str(error)]
    for key, value in (("hidden_size", drafter.hidden_size), ("vocab_size", drafter.vocab_size)):
        if key in base and base[key] != value:
            problems.append(f"--drafter has {key} {value} but the base checkpoint has {base[key]}; train the drafter on this base model.")
    trained = drafter.num_draft_tokens
    if trained is not None and cfg.draft_len_per_beam > trained:
        problems.append(f"--draft-len-per-beam {cfg.draft_len_per_beam} exceeds the {trained} tokens the drafter was trained to predict.")
    for name, size in (("vocab_size", drafter.vocab_size), ("exit_dim", drafter.exit_dim), ("hidden_size", drafter.hidden_size)):
        if size % cfg.tp_size:
            problems.append(f"the drafter's {name} {size} is not divisible by --tp-size {cfg.tp_size}.")
    return problems


def preflight_problems(cfg: RedrafterConfig) -> list[str]:
    need = 2.1 * (trtllm.dir_bytes(cfg.base_checkpoint_dir) + trtllm.dir_bytes(cfg.drafter_dir))
    return preflight.collect(
        preflight.gpu_problem(cfg.tp_size, "the redrafter step"),
        preflight.trtllm_problems(),
        preflight.example_script_problem(cfg.trtllm_examples, CONVERT_SCRIPT),
        preflight.file_problem(cfg.drafter_dir / export.WEIGHTS_FILE, "--drafter", "written by `python -m build.pipeline drafter export`"),
        checkpoint_problems(cfg),
        preflight.writable_problem(cfg.checkpoint_dir, "--checkpoint-dir"),
        preflight.writable_problem(cfg.engine_dir, "--engine-dir"),
        preflight.disk_problem(cfg.engine_dir, int(need), "the combined checkpoint and engine"),
    )


def execute(cfg: RedrafterConfig) -> dict:
    print(f"redrafter: {GREEDY_NOTE if cfg.greedy else SAMPLING_NOTE}")
    manifest.run_once(convert_plan(cfg))
    run_commands((engine_command(cfg),))
    return {"greedy": cfg.greedy}
