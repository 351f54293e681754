"""Worked solutions: (problem, solution) pairs for calibration and drafter training.

Two sources, told apart by content, never by file name:
- tables in the style of nvidia/OpenMathReasoning: rows with string fields `problem` and
  `generated_solution`, as parquet (recognised by its `PAR1` magic bytes) or JSON lines;
- the solver's run logs (docs/runlog.md): JSON lines with a `kind` field. Every sample of a
  `problem` record with non-empty `text` and a finish reason other than `error` gives one pair
  (the text is exactly what the model generated after `solver.prompt.prompt_text`); `run`
  records and other kinds are skipped.

Guarantees: pairs come in file order, files in the order given; reading stops after `limit`
pairs. A torn last line of a JSON-lines file (a crash while appending) is skipped with a warning,
as the solver does. Any other malformed line, or a row missing a field, is a `BuildError` naming
the file, line/row and field.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from build.plan import BuildError

PARQUET_MAGIC = b"PAR1"
TABLE_FIELDS = ("problem", "generated_solution")


@dataclass(frozen=True)
class Solution:
    problem: str
    solution: str
    source: str  # "file:line" or "file:row", for messages


def is_parquet(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == PARQUET_MAGIC


def _table_pair(record: dict, where: str) -> Solution:
    for name in TABLE_FIELDS:
        value = record.get(name)
        if not isinstance(value, str) or not value:
            raise BuildError(f"{where}: field `{name}` is missing or not a non-empty string.")
    return Solution(record["problem"], record["generated_solution"], where)


def _runlog_pairs(record: dict, where: str) -> Iterator[Solution]:
    if record.get("kind") != "problem":
        return
    problem = record.get("problem")
    if not isinstance(problem, str) or not problem:
        raise BuildError(f"{where}: run-log field `problem` is missing or empty.")
    samples = record.get("samples")
    if not isinstance(samples, list):
        raise BuildError(f"{where}: run-log field `samples` is missing or not a list.")
    for index, sample in enumerate(samples):
        text = sample.get("text") if isinstance(sample, dict) else None
        if not isinstance(text, str):
            raise BuildError(f"{where}: run-log field `samples[{index}].text` is missing.")
        if text and sample.get("finish_reason") != "error":
            yield Solution(problem, text, f"{where} sample {index}")


def _jsonl_pairs(path: Path) -> Iterator[Solution]:
    lines = path.read_text(encoding="utf-8").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number - 1 == last:
                print(f"warning: {where}: ignoring torn last line ({error.msg}).", file=sys.stderr)
                return
            raise BuildError(f"{where}: line is not valid JSON ({error.msg}).") from error
        if not isinstance(record, dict):
            raise BuildError(f"{where}: line is not a JSON object.")
        if "kind" in record:
            yield from _runlog_pairs(record, where)
        else:
            yield _table_pair(record, where)


def _parquet_pairs(path: Path, limit: int | None) -> Iterator[Solution]:
    import polars as pl

    schema = pl.read_parquet_schema(path)
    for name in TABLE_FIELDS:
        if name not in schema:
            raise BuildError(f"{path}: parquet file has no column `{name}`.")
    frame = pl.scan_parquet(path).select(TABLE_FIELDS)
    if limit is not None:
        frame = frame.head(limit)
    for row_index, row in enumerate(frame.collect().iter_rows(named=True)):
        yield _table_pair(row, f"{path}:row {row_index}")


def read_solutions(paths: tuple[Path, ...], limit: int | None = None) -> list[Solution]:
    """The first `limit` pairs (all when None) from `paths`, in order."""
    pairs: list[Solution] = []
    for path in paths:
        if not path.is_file():
            raise BuildError(f"{path}: input file does not exist.")
        remaining = None if limit is None else limit - len(pairs)
        source = _parquet_pairs(path, remaining) if is_parquet(path) else _jsonl_pairs(path)
        for pair in source:
            if remaining is not None and len(pairs) >= limit:
                break
            pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    return pairs
