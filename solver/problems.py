"""Problems in, answers out: reading and checking the problems file, writing the submission.

Input: CSV (UTF-8, a BOM is fine) or parquet with an `id` column and a `problem` column
(`question` is accepted too, as AIMO-2's reference file names it), optionally `answer`
(integers; blank for unknown). Every check runs before any generation starts; a bad file gives
`InputError` with one sentence naming the file, the row (1-based, header not counted) and the
column.

Output: a CSV `id,answer`, one integer per input row, in input order, written atomically
(a temporary file renamed over the target), so a crash never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

PROBLEM_COLUMNS = ("problem", "question")


class InputError(ValueError):
    """A problem with the user's input file; the message is one sentence for the user."""


@dataclass(frozen=True)
class Problem:
    id: str
    text: str
    expected_answer: int | None = None

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def read_problems(path: str | Path) -> list[Problem]:
    path = Path(path)
    frame = _read_frame(path)
    id_column, text_column = _columns(path, frame)
    ids = _ids(path, frame[id_column].to_list())
    texts = _texts(path, text_column, frame[text_column].to_list())
    expected = _answers(path, frame["answer"].to_list()) if "answer" in frame.columns else [None] * len(ids)
    if not ids:
        raise InputError(f"{path}: the file has no problems (no data rows).")
    return [Problem(i, t, a) for i, t, a in zip(ids, texts, expected)]


def _read_frame(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: problems file not found.")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            return pl.read_parquet(path)
        except Exception as exc:  # polars raises several unrelated types for corrupt files
            raise InputError(f"{path}: not a readable parquet file ({exc.__class__.__name__}).") from exc
    if suffix in (".csv", ".tsv", ".txt"):
        return _read_csv(path)
    raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv or .parquet.")


def _read_csv(path: Path) -> pl.DataFrame:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line} is not valid UTF-8 (byte {exc.start}); save the file as UTF-8.") from exc
    try:
        # Every column as text: types are checked here, with row numbers, not guessed by the reader.
        return pl.read_csv(io.StringIO(text), infer_schema=False, separator="\t" if path.suffix.lower() == ".tsv" else ",")
    except Exception as exc:  # polars' parse errors have no common base class
        raise InputError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]}).") from exc


def _columns(path: Path, frame: pl.DataFrame) -> tuple[str, str]:
    columns = frame.columns
    if "id" not in columns:
        raise InputError(f"{path}: missing column 'id' (columns found: {', '.join(columns) or 'none'}).")
    text_column = next((c for c in PROBLEM_COLUMNS if c in columns), None)
    if text_column is None:
        raise InputError(f"{path}: missing column 'problem' (or 'question'); columns found: {', '.join(columns)}.")
    return "id", text_column


def _ids(path: Path, values: list) -> list[str]:
    ids: list[str] = []
    first_row: dict[str, int] = {}
    for row, value in enumerate(values, start=1):
        text = "" if value is None else str(value).strip()
        if not text:
            raise InputError(f"{path}: row {row}, column 'id' is empty.")
        if text in first_row:
            raise InputError(f"{path}: row {row}, column 'id': duplicate id {text!r} (first seen in row {first_row[text]}).")
        first_row[text] = row
        ids.append(text)
    return ids


def _texts(path: Path, column: str, values: list) -> list[str]:
    texts = []
    for row, value in enumerate(values, start=1):
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{path}: row {row}, column {column!r} is empty.")
        texts.append(value.strip())
    return texts


def _answers(path: Path, values: list) -> list[int | None]:
    return [_answer(path, row, value) for row, value in enumerate(values, start=1)]


def _answer(path: Path, row: int, value: object) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InputError(f"{path}: row {row}, column 'answer' must be an integer, got {value!r}.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{path}: row {row}, column 'answer' must be an integer, got {text!r}.") from None


def write_answers(path: str | Path, problems: list[Problem], answers: dict[str, int], fallback: int) -> None:
    """Write `id,answer` for every problem in input order; problems without an answer get `fallback`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame(
        {"id": [p.id for p in problems], "answer": [answers.get(p.id, fallback) for p in problems]},
        schema={"id": pl.String, "answer": pl.Int64},
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        frame.write_csv(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
