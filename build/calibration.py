"""The FP8 calibration set: in-domain texts exactly as the engine will see them.

Each text is `solver.prompt.training_text(tokenizer, problem, solution)`: the solver's own prompt
(`solver.prompt.prompt_text`, the model's chat template with an empty system message and the
`generic/math` user text), the solution as the assistant turn, and the template's end-of-turn
marker. The output folder holds `data.parquet` with one `text` column; TensorRT-LLM's
`quantize.py --calib_dataset DIR` loads such a folder with `datasets.load_dataset(DIR,
split="train")` and reads its `text` column.

Not done here: tokenization or truncation (quantize.py cuts each text to
`--calib_max_seq_length` tokens itself).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from build import preflight
from build.manifest import MANIFEST_NAME
from build.plan import Plan
from build.solutions import read_solutions
from solver.prompt import training_text

DATA_FILE = "data.parquet"


@dataclass(frozen=True)
class CalibrationConfig:
    model_dir: Path  # the Hugging Face model whose tokenizer/chat template formats the texts
    inputs: tuple[Path, ...]
    output_dir: Path
    num_rows: int = 4096

    def __post_init__(self) -> None:
        if self.num_rows < 1:
            raise ValueError(f"--num-rows must be >= 1, got {self.num_rows}")
        if not self.inputs:
            raise ValueError("give at least one --input file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="Hugging Face model directory (its tokenizer and chat template are used)")
    parser.add_argument("--input", type=Path, action="append", required=True, help="parquet or JSONL rows with `problem` and `generated_solution`, or a solver run log; repeatable")
    parser.add_argument("--output", type=Path, required=True, help=f"output directory; receives {DATA_FILE} with a `text` column")
    parser.add_argument("--num-rows", type=int, default=4096, help="number of texts (first rows of the inputs, in order; default 4096)")


def config_from_args(args: argparse.Namespace) -> CalibrationConfig:
    return CalibrationConfig(args.model, tuple(args.input), args.output, args.num_rows)


def calibration_texts(tokenizer: PreTrainedTokenizerBase, pairs) -> list[str]:
    return [training_text(tokenizer, pair.problem, pair.solution) for pair in pairs]


def plan(cfg: CalibrationConfig) -> Plan:
    return Plan(
        step="calibration",
        inputs=(*cfg.inputs, *_tokenizer_files(cfg.model_dir)),
        params={"num_rows": cfg.num_rows},
        outputs=(cfg.output_dir / DATA_FILE,),
        manifest_path=cfg.output_dir / MANIFEST_NAME,
        actions=(
            f"read the first {cfg.num_rows} (problem, solution) pairs; format each with "
            f"solver.prompt.training_text using the tokenizer of {cfg.model_dir}",
        ),
    )


def _tokenizer_files(model_dir: Path) -> tuple[Path, ...]:
    # The chat template decides the text, the weights do not: fingerprint only these.
    names = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
    return tuple(model_dir / name for name in names if (model_dir / name).exists()) or (model_dir,)


def preflight_problems(cfg: CalibrationConfig) -> list[str]:
    return preflight.collect(
        preflight.dir_problem(cfg.model_dir, "--model", "a Hugging Face model directory with a tokenizer"),
        [preflight.file_problem(path, "--input", "a parquet or JSONL file") for path in cfg.inputs],
        preflight.writable_problem(cfg.output_dir, "--output"),
        preflight.disk_problem(cfg.output_dir, 256 * 2**20, "the calibration parquet"),
    )


def execute(cfg: CalibrationConfig) -> dict:
    from solver.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.model_dir)
    pairs = read_solutions(cfg.inputs, limit=cfg.num_rows)
    texts = calibration_texts(tokenizer, pairs)
    write_parquet(texts, cfg.output_dir / DATA_FILE)
    if len(texts) < cfg.num_rows:
        print(f"calibration: the inputs hold only {len(texts)} pairs (asked for {cfg.num_rows}).")
    print(f"calibration: wrote {len(texts)} texts to {cfg.output_dir / DATA_FILE}")
    return {"num_rows": len(texts)}


def write_parquet(texts: list[str], path: Path) -> None:
    import polars as pl

    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"text": texts}, schema={"text": pl.String}).write_parquet(path)


def count_rows(calibration_dir: Path) -> int | None:
    """Texts in a calibration set: from its manifest, else from the parquet file; None when
    neither can be read (e.g. a TensorRT-LLM environment without polars and a hand-made set)."""
    try:
        return int(json.loads((calibration_dir / MANIFEST_NAME).read_text())["result"]["num_rows"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        pass
    try:
        import polars as pl
    except ImportError:
        return None
    return pl.scan_parquet(calibration_dir / DATA_FILE).select(pl.len()).collect().item()
