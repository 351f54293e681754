"""The drafter's interchange format: what TensorRT-LLM's ReDrafter converter reads, and back.

A drafter directory holds exactly:
- `config.json`: `hidden_size`, `exit_dim`, `num_draft_layers`, `rnn` (the keys
  `examples/redrafter/convert_checkpoint.py` uses), `vocab_size`, `num_lookback_tokens` (-1,
  unused, as Apple's DrafterConfig writes it), `model_type: recurrent_drafting_drafter`, plus
  `torch_dtype` and, when known, `drafter_predict_n_tokens` (the draft length it was trained
  for; the engine's `--redrafter_draft_len_per_beam` must not exceed it);
- `model.safetensors`: the tensors of `expected_shapes(config)`, names and shapes exact.

`load_drafter` reads such a directory back into a `Drafter` and refuses anything else with a
sentence naming the file and tensor. Guarantee: `load_drafter(save_drafter(d))` has the same
tensors as `d` (cast to the saved dtype).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from build import preflight
from build.manifest import MANIFEST_NAME
from build.drafter.model import MODEL_TYPE, Drafter, DrafterConfig, num_parameters
from build.plan import BuildError, Plan

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def expected_shapes(config: DrafterConfig) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, as TensorRT-LLM's converter reads them (out_features first)."""
    hidden, width, vocab, layers = config.hidden_size, config.exit_dim, config.vocab_size, config.num_draft_layers
    shapes: dict[str, tuple[int, ...]] = {}
    if config.has_input_proj:
        shapes["input_proj.weight"] = (width, 2 * hidden)
        shapes["input_proj.bias"] = (width,)
    for i in range(layers):
        shapes[f"lm_head.{i}.linear.weight"] = (width, width)
        shapes[f"lm_head.{i}.linear.bias"] = (width,)
    shapes[f"lm_head.{layers}.weight"] = (vocab, width)
    if config.rnn:
        shapes["rnn_u.weight"] = (hidden, hidden)
        shapes["rnn_u.bias"] = (hidden,)
        shapes["rnn_w.weight"] = (hidden, hidden)
    return shapes


def config_json(config: DrafterConfig, dtype: torch.dtype) -> dict:
    data = {
        "model_type": MODEL_TYPE,
        "hidden_size": config.hidden_size,
        "exit_dim": config.exit_dim,
        "num_draft_layers": config.num_draft_layers,
        "rnn": config.rnn,
        "vocab_size": config.vocab_size,
        "num_lookback_tokens": -1,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
    if config.num_draft_tokens is not None:
        data["drafter_predict_n_tokens"] = config.num_draft_tokens
    return data


def config_from_json(data: dict, where: Path) -> DrafterConfig:
    missing = [key for key in ("hidden_size", "exit_dim", "num_draft_layers", "rnn", "vocab_size") if key not in data]
    if missing:
        raise BuildError(f"{where}: drafter config lacks {', '.join(missing)}.")
    if data.get("model_type", MODEL_TYPE) != MODEL_TYPE:
        raise BuildError(f"{where}: model_type is {data['model_type']!r}, not {MODEL_TYPE!r}.")
    return DrafterConfig(
        vocab_size=int(data["vocab_size"]),
        hidden_size=int(data["hidden_size"]),
        exit_dim=int(data["exit_dim"]),
        num_draft_layers=int(data["num_draft_layers"]),
        rnn=bool(data["rnn"]),
        num_draft_tokens=data.get("drafter_predict_n_tokens"),
    )


def read_config(directory: Path) -> DrafterConfig:
    path = directory / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise BuildError(f"{path}: drafter config does not exist.") from error
    except json.JSONDecodeError as error:
        raise BuildError(f"{path}: drafter config is not valid JSON ({error.msg}).") from error
    return config_from_json(data, path)


def save_drafter(drafter: Drafter, directory: Path, dtype: torch.dtype = torch.bfloat16) -> None:
    from safetensors.torch import save_file

    state = {name: tensor.detach().to("cpu", dtype).contiguous() for name, tensor in drafter.state_dict().items()}
    expected = expected_shapes(drafter.config)
    assert {name: tuple(t.shape) for name, t in state.items()} == expected, "drafter names drifted from the export table"
    directory.mkdir(parents=True, exist_ok=True)
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / CONFIG_FILE).write_text(json.dumps(config_json(drafter.config, dtype), indent=2) + "\n")


def load_drafter(directory: Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> Drafter:
    """A drafter directory (ours or Apple's layout) -> Drafter, in `dtype` or as stored."""
    from safetensors.torch import load_file

    config = read_config(directory)
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise BuildError(f"{path}: drafter weights do not exist.")
    state = load_file(str(path))
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BuildError(
            f"{path}: tensor names do not match the drafter config (missing: {missing or 'none'}; "
            f"unexpected: {unexpected or 'none'})."
        )
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise BuildError(f"{path}: tensor {name} has shape {tuple(state[name].shape)}, expected {shape}.")
    stored = next(iter(state.values())).dtype
    drafter = Drafter(config).to(dtype or stored)
    drafter.load_state_dict(state)
    return drafter.to(device)


@dataclass(frozen=True)
class ExportConfig:
    checkpoint_dir: Path  # output of `drafter train`
    output_dir: Path
    dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {tuple(DTYPES)}")
        if self.checkpoint_dir.absolute() == self.output_dir.absolute():
            raise ValueError("--checkpoint and --output must differ")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="output directory of `drafter train`")
    parser.add_argument("--output", type=Path, required=True, help="drafter directory for the redrafter step (config.json + model.safetensors)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bfloat16", help="must equal the base checkpoint's dtype; default %(default)s")


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    return ExportConfig(args.checkpoint, args.output, args.dtype)


def plan(cfg: ExportConfig) -> Plan:
    return Plan(
        step="drafter export",
        inputs=(cfg.checkpoint_dir / CONFIG_FILE, cfg.checkpoint_dir / WEIGHTS_FILE),
        params={"dtype": cfg.dtype},
        outputs=(cfg.output_dir / CONFIG_FILE, cfg.output_dir / WEIGHTS_FILE),
        manifest_path=cfg.output_dir / MANIFEST_NAME,
        actions=(f"load and validate the drafter in {cfg.checkpoint_dir}; cast to {cfg.dtype}; write TensorRT-LLM's names and shapes",),
    )


def preflight_problems(cfg: ExportConfig) -> list[str]:
    problems = preflight.collect(
        preflight.file_problem(cfg.checkpoint_dir / CONFIG_FILE, "--checkpoint", "written by `python -m build.pipeline drafter train`"),
        preflight.file_problem(cfg.checkpoint_dir / WEIGHTS_FILE, "--checkpoint", "written by `python -m build.pipeline drafter train`"),
        preflight.writable_problem(cfg.output_dir, "--output"),
    )
    if not problems:
        config = read_config(cfg.checkpoint_dir)
        need = num_parameters(config) * DTYPES[cfg.dtype].itemsize
        problems += preflight.collect(preflight.disk_problem(cfg.output_dir, need, "the exported drafter"))
    return problems


def execute(cfg: ExportConfig) -> dict:
    drafter = load_drafter(cfg.checkpoint_dir)
    save_drafter(drafter, cfg.output_dir, DTYPES[cfg.dtype])
    print(f"drafter export: wrote {cfg.output_dir / WEIGHTS_FILE} ({num_parameters(drafter.config):,} parameters, {cfg.dtype})")
    return {"num_parameters": num_parameters(drafter.config)}
