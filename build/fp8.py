"""The FP8 engine: quantize a Hugging Face checkpoint with the calibration set, then build it.

Two commands, both TensorRT-LLM's own:
1. `python {examples}/quantization/quantize.py --qformat fp8 ...` writes an FP8 TensorRT-LLM
   checkpoint (`config.json` + `rank{i}.safetensors`) to `--checkpoint-dir`. That script is a thin
   command line over `tensorrt_llm.quantization.quantize_and_export`; we run the script rather
   than import the function because the function's keyword arguments change between releases
   while the script's flags are the documented interface, and the redrafter step needs the same
   examples checkout anyway.
2. `trtllm-build --gemm_plugin fp8 ...` turns that checkpoint into the engine in `--engine-dir`.

The intermediate checkpoint is kept: the redrafter step converts it, with the drafter, into the
combined FP8+ReDrafter checkpoint. Needs a GPU with FP8 (H100/L4/Ada); this module only describes
and launches the commands.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from build import calibration, manifest, preflight, trtllm
from build.plan import Plan, run_commands
from build.trtllm import EngineLimits

KV_CACHE_DTYPES = ("fp8", "int8")
QUANTIZE_SCRIPT = "quantization/quantize.py"


@dataclass(frozen=True)
class Fp8Config:
    model_dir: Path
    calibration_dir: Path
    checkpoint_dir: Path
    engine_dir: Path
    trtllm_examples: Path
    tp_size: int = 1
    calib_size: int = 4096
    calib_max_seq_length: int = 512
    kv_cache_dtype: str | None = None  # None: KV cache in --dtype
    dtype: str = "bfloat16"
    limits: EngineLimits = field(default_factory=EngineLimits)
    workers: int | None = None  # None: tp_size

    def __post_init__(self) -> None:
        if self.tp_size < 1 or self.calib_size < 1 or self.calib_max_seq_length < 1:
            raise ValueError("--tp-size, --calib-size and --calib-max-seq-length must be >= 1")
        if self.kv_cache_dtype not in (None, *KV_CACHE_DTYPES):
            raise ValueError(f"--kv-cache-dtype must be one of {KV_CACHE_DTYPES}")
        if self.dtype not in trtllm.DTYPES:
            raise ValueError(f"--dtype must be one of {trtllm.DTYPES}")
        if self.checkpoint_dir.absolute() == self.engine_dir.absolute():
            raise ValueError("--checkpoint-dir and --engine-dir must differ")

    @property
    def num_workers(self) -> int:
        return self.workers or self.tp_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="Hugging Face model directory (BF16 weights)")
    parser.add_argument("--calibration", type=Path, required=True, help="output directory of the calibration step (holds data.parquet)")
    parser.add_argument("--checkpoint-dir", type=Path, required=True, help="where the FP8 TensorRT-LLM checkpoint goes (kept: the redrafter step reads it)")
    parser.add_argument("--engine-dir", type=Path, required=True, help="where the FP8 engine goes")
    trtllm.add_trtllm_arguments(parser)
    parser.add_argument("--calib-size", type=int, default=4096, help="calibration texts used; default %(default)s")
    parser.add_argument("--calib-max-seq-length", type=int, default=512, help="tokens of each calibration text used; default %(default)s (quantize.py's)")
    parser.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default=None, help="quantize the KV cache too (default: keep it in --dtype)")
    parser.add_argument("--dtype", choices=trtllm.DTYPES, default="bfloat16", help="dtype of the unquantized parts; default %(default)s")
    trtllm.add_engine_arguments(parser)


def config_from_args(args: argparse.Namespace) -> Fp8Config:
    return Fp8Config(
        model_dir=args.model,
        calibration_dir=args.calibration,
        checkpoint_dir=args.checkpoint_dir,
        engine_dir=args.engine_dir,
        trtllm_examples=args.trtllm_examples,
        tp_size=args.tp_size,
        calib_size=args.calib_size,
        calib_max_seq_length=args.calib_max_seq_length,
        kv_cache_dtype=args.kv_cache_dtype,
        dtype=args.dtype,
        limits=trtllm.engine_limits_from_args(args),
        workers=args.workers,
    )


def quantize_command(cfg: Fp8Config):
    kv_cache = ("--kv_cache_dtype", cfg.kv_cache_dtype) if cfg.kv_cache_dtype else ()
    return trtllm.example_command(
        cfg.trtllm_examples,
        QUANTIZE_SCRIPT,
        "--model_dir", str(cfg.model_dir),
        "--qformat", "fp8",
        *kv_cache,
        "--dtype", cfg.dtype,
        "--calib_dataset", str(cfg.calibration_dir),
        "--calib_size", str(cfg.calib_size),
        "--calib_max_seq_length", str(cfg.calib_max_seq_length),
        "--tp_size", str(cfg.tp_size),
        "--output_dir", str(cfg.checkpoint_dir),
    )


def engine_command(cfg: Fp8Config):
    return trtllm.build_command(cfg.checkpoint_dir, cfg.engine_dir, cfg.limits, cfg.num_workers)


def checkpoint_outputs(checkpoint_dir: Path, tp_size: int) -> tuple[Path, ...]:
    return (checkpoint_dir / "config.json", *(checkpoint_dir / f"rank{r}.safetensors" for r in range(tp_size)))


def quantize_plan(cfg: Fp8Config) -> Plan:
    """The quantize stage alone, with its own manifest in the checkpoint directory, so that a
    failed engine build does not redo the calibration."""
    return Plan(
        step="fp8 quantize",
        inputs=(cfg.model_dir, cfg.calibration_dir / calibration.DATA_FILE),
        params={
            "tp_size": cfg.tp_size,
            "calib_size": cfg.calib_size,
            "calib_max_seq_length": cfg.calib_max_seq_length,
            "kv_cache_dtype": cfg.kv_cache_dtype,
            "dtype": cfg.dtype,
        },
        outputs=checkpoint_outputs(cfg.checkpoint_dir, cfg.tp_size),
        manifest_path=cfg.checkpoint_dir / manifest.MANIFEST_NAME,
        commands=(quantize_command(cfg),),
    )


def plan(cfg: Fp8Config) -> Plan:
    quantize = quantize_plan(cfg)
    return Plan(
        step="fp8",
        inputs=quantize.inputs,
        params={**quantize.params, "limits": vars(cfg.limits)},
        outputs=(
            *quantize.outputs,
            cfg.engine_dir / "config.json",
            *(cfg.engine_dir / f"rank{rank}.engine" for rank in range(cfg.tp_size)),
        ),
        manifest_path=cfg.engine_dir / manifest.MANIFEST_NAME,
        commands=(*quantize.commands, engine_command(cfg)),
        notes=(f"the quantize command is skipped when {cfg.checkpoint_dir} already holds its output for these inputs.",),
    )


def fp8_bytes(model_dir: Path) -> int:
    """Estimated size of the FP8 checkpoint (and, about the same, of its engine): one byte per
    weight, except the embedding table and LM head, which stay in 16 bits."""
    bf16_bytes = trtllm.dir_bytes(model_dir, "*.safetensors")
    try:
        config = json.loads((model_dir / "config.json").read_text())
        vocab_by_hidden = int(config["vocab_size"]) * int(config["hidden_size"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        vocab_by_hidden = 0
    return bf16_bytes // 2 + 2 * vocab_by_hidden


def preflight_problems(cfg: Fp8Config) -> list[str]:
    problems = preflight.collect(
        preflight.gpu_problem(cfg.tp_size, "the fp8 step"),
        preflight.trtllm_problems(),
        preflight.example_script_problem(cfg.trtllm_examples, QUANTIZE_SCRIPT),
        preflight.file_problem(cfg.model_dir / "config.json", "--model", "the config of a Hugging Face model directory"),
        preflight.file_problem(cfg.calibration_dir / calibration.DATA_FILE, "--calibration", "written by `python -m build.pipeline calibration`"),
        preflight.writable_problem(cfg.checkpoint_dir, "--checkpoint-dir"),
        preflight.writable_problem(cfg.engine_dir, "--engine-dir"),
        preflight.disk_problem(cfg.engine_dir, int(2.1 * fp8_bytes(cfg.model_dir)), "the FP8 checkpoint and engine"),
    )
    if (cfg.calibration_dir / calibration.DATA_FILE).is_file():
        rows = calibration.count_rows(cfg.calibration_dir)
        if rows is not None and rows < cfg.calib_size:
            problems.append(
                f"--calib-size {cfg.calib_size} exceeds the {rows} texts in "
                f"{cfg.calibration_dir / calibration.DATA_FILE}; lower it or rebuild the calibration set."
            )
    return problems


def execute(cfg: Fp8Config) -> dict:
    manifest.run_once(quantize_plan(cfg))
    run_commands((engine_command(cfg),))
    return {}
