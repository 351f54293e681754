"""The `drafter train` step: train a ReDrafter drafter over a frozen Hugging Face base model.

Reads solver run logs and/or OpenMathReasoning-style rows (`build.solutions`), encodes them with
the solver's exact prompt (`build.drafter.data`), loads the base model (bfloat16 on a GPU, float32
on a CPU) and runs `build.drafter.loop.train`.

The output directory holds the drafter in the export format (`config.json`,
`model.safetensors`, float32), `training.json` (arguments and last metrics) and
`metrics.jsonl` (one line per logging window).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from build import preflight
from build.drafter.data import Example, encode_example
from build.drafter.export import save_drafter
from build.drafter.loop import LoopConfig, train
from build.drafter.model import Drafter, DrafterConfig, num_parameters
from build.manifest import MANIFEST_NAME, jsonable
from build.plan import BuildError, Plan


@dataclass(frozen=True)
class TrainConfig:
    model_dir: Path
    data: tuple[Path, ...]
    output_dir: Path
    num_rows: int | None = None
    max_len: int = 2048
    num_draft_layers: int = 2
    exit_dim: int | None = None  # None: 2 * hidden size, no input_proj
    rnn: bool = True
    device: str = "auto"
    loop: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("give at least one --data file")
        if self.max_len < 3:
            raise ValueError("--max-len must be >= 3")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError("--device must be auto, cpu or cuda")
        if self.num_rows is not None and self.num_rows < 1:
            raise ValueError("--num-rows must be >= 1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    loop = LoopConfig()
    parser.add_argument("--model", type=Path, required=True, help="the base Hugging Face model directory (frozen)")
    parser.add_argument("--data", type=Path, action="append", required=True, help="solver run log (JSONL) or parquet/JSONL rows with `problem`, `generated_solution`; repeatable")
    parser.add_argument("--output", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--num-rows", type=int, default=None, help="use the first N (problem, solution) pairs; default all")
    parser.add_argument("--max-len", type=int, default=2048, help="tokens per example, prompt included; default %(default)s")
    parser.add_argument("--num-draft-tokens", type=int, default=loop.num_draft_tokens, help="draft tokens predicted per step (drafter_predict_n_tokens); default %(default)s")
    parser.add_argument("--num-draft-layers", type=int, default=2, help="residual blocks; default %(default)s")
    parser.add_argument("--exit-dim", type=int, default=None, help="residual block width; default 2 * hidden size (no input_proj)")
    parser.add_argument("--no-rnn", action="store_true", help="sum embeddings instead of the recurrent state")
    parser.add_argument("--batch-size", type=int, default=loop.batch_size, help="default %(default)s")
    parser.add_argument("--grad-accum-steps", type=int, default=loop.grad_accum_steps, help="default %(default)s")
    parser.add_argument("--learning-rate", type=float, default=loop.learning_rate, help="default %(default)s")
    parser.add_argument("--weight-decay", type=float, default=loop.weight_decay, help="default %(default)s")
    parser.add_argument("--warmup-ratio", type=float, default=loop.warmup_ratio, help="default %(default)s")
    parser.add_argument("--num-epochs", type=int, default=loop.num_epochs, help="default %(default)s")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    parser.add_argument("--top-k", type=int, default=loop.top_k, help="report redrafter{i}_top1..top{k}; default %(default)s")
    parser.add_argument("--log-every", type=int, default=loop.log_every, help="optimizer steps per metrics line; default %(default)s")
    parser.add_argument("--seed", type=int, default=loop.seed, help="default %(default)s")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda when available")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    loop = LoopConfig(
        num_draft_tokens=args.num_draft_tokens,
        batch_size=args.batch_size,
        grad_accum_steps=args.grad_accum_steps,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio,
        num_epochs=args.num_epochs,
        max_steps=args.max_steps,
        top_k=args.top_k,
        log_every=args.log_every,
        seed=args.seed,
    )
    return TrainConfig(
        model_dir=args.model,
        data=tuple(args.data),
        output_dir=args.output,
        num_rows=args.num_rows,
        max_len=args.max_len,
        num_draft_layers=args.num_draft_layers,
        exit_dim=args.exit_dim,
        rnn=not args.no_rnn,
        device=args.device,
        loop=loop,
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def drafter_config(cfg: TrainConfig, hidden_size: int, vocab_size: int) -> DrafterConfig:
    return DrafterConfig.for_base(
        hidden_size,
        vocab_size,
        exit_dim=cfg.exit_dim,
        num_draft_layers=cfg.num_draft_layers,
        rnn=cfg.rnn,
        num_draft_tokens=cfg.loop.num_draft_tokens,
    )


def plan(cfg: TrainConfig) -> Plan:
    params = {k: v for k, v in asdict(cfg).items() if k not in ("model_dir", "data", "output_dir")}
    return Plan(
        step="drafter train",
        inputs=(cfg.model_dir, *cfg.data),
        params=params,
        outputs=tuple(cfg.output_dir / name for name in ("config.json", "model.safetensors", "training.json")),
        manifest_path=cfg.output_dir / MANIFEST_NAME,
        actions=(
            f"train a {cfg.num_draft_layers}-layer drafter for {cfg.loop.num_draft_tokens} draft tokens over the "
            f"frozen model in {cfg.model_dir} (device {cfg.device}; bf16 autocast on GPU, float32 on CPU)",
        ),
    )


def _base_shape(model_dir: Path) -> tuple[int, int] | None:
    try:
        config = json.loads((model_dir / "config.json").read_text())
        return int(config["hidden_size"]), int(config["vocab_size"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def preflight_problems(cfg: TrainConfig) -> list[str]:
    problems = preflight.collect(
        preflight.file_problem(cfg.model_dir / "config.json", "--model", "the config of a Hugging Face model directory"),
        [preflight.file_problem(path, "--data", "a run log or a parquet/JSONL file") for path in cfg.data],
        preflight.writable_problem(cfg.output_dir, "--output"),
    )
    if cfg.device == "cuda" and not torch.cuda.is_available():
        problems.append("--device cuda was asked for but no CUDA GPU is visible (torch.cuda.is_available() is False).")
    shape = _base_shape(cfg.model_dir)
    if shape is not None:
        need = num_parameters(drafter_config(cfg, *shape)) * 4  # float32 checkpoint
        problems += preflight.collect(preflight.disk_problem(cfg.output_dir, need, "the drafter checkpoint"))
    return problems


def load_examples(cfg: TrainConfig, tokenizer) -> list[Example]:
    from build.solutions import read_solutions

    pairs = read_solutions(cfg.data, limit=cfg.num_rows)
    examples = [encode_example(tokenizer, p.problem, p.solution, cfg.max_len) for p in pairs]
    examples = [e for e in examples if e.has_targets]
    if not examples:
        raise BuildError(f"no trainable examples in {', '.join(map(str, cfg.data))} (solutions empty or cut off by --max-len).")
    return examples


def execute(cfg: TrainConfig) -> dict:
    from transformers import AutoModelForCausalLM

    from solver.tokenizer import load_tokenizer

    device = resolve_device(cfg.device)
    tokenizer = load_tokenizer(cfg.model_dir)
    examples = load_examples(cfg, tokenizer)
    base_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    base = AutoModelForCausalLM.from_pretrained(str(cfg.model_dir), dtype=base_dtype).to(device)
    base.requires_grad_(False).eval()
    torch.manual_seed(cfg.loop.seed)
    vocab_size = base.get_output_embeddings().weight.shape[0]
    drafter = Drafter(drafter_config(cfg, base.config.hidden_size, vocab_size)).to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    log_path = cfg.output_dir / "metrics.jsonl"
    log_path.unlink(missing_ok=True)
    print(f"drafter train: {len(examples)} examples, {cfg.loop.num_steps(len(examples))} steps on {device} ({base_dtype})")
    history = train(base, drafter, examples, cfg.loop, pad_id, device, log_path=log_path)
    save_drafter(drafter, cfg.output_dir, torch.float32)
    summary = {"num_examples": len(examples), "device": str(device), "final": history[-1], "config": jsonable(asdict(cfg))}
    (cfg.output_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    final = history[-1]
    print(f"drafter train: loss={final['loss']:.4f}, " + ", ".join(f"{k}={v:.4f}" for k, v in final.items() if "_top" in k))
    return {"final": history[-1]}
