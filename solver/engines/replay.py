"""Replay engine, for tests and demos: `--engine replay --replay-file FILE.jsonl`.

The file has one JSON object per line, `{"id": problem_id, "completion": text}`, one line per
sample; sample k of a problem replays that problem's k-th line (cycling when the file has fewer
lines than samples). Completions stream through `ScriptedEngine`: they stop after each
`</tool_call>` until the solver appends the real sandbox output, and the output block the file
recorded there is skipped, so what the model "sees" is what the code really printed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from .base import Request
from .scripted import ScriptedEngine


class ReplayFileError(ValueError):
    """The replay file is unusable; one sentence naming file and line."""


def read_replay_file(path: str | Path) -> dict[str, list[str]]:
    path = Path(path)
    if not path.is_file():
        raise ReplayFileError(f"{path}: replay file not found.")
    completions: dict[str, list[str]] = defaultdict(list)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReplayFileError(f"{path}: line {number} is not JSON ({exc.msg}).") from None
        if not isinstance(record, dict) or "id" not in record or not isinstance(record.get("completion"), str):
            raise ReplayFileError(f'{path}: line {number} needs {{"id": ..., "completion": "..."}}.')
        completions[str(record["id"])].append(record["completion"])
    return dict(completions)


def problem_and_index(request_id: str) -> tuple[str, int]:
    """The solver names requests `{problem_id}#{sample_index}`."""
    problem_id, _, index = request_id.rpartition("#")
    return problem_id, int(index)


def replay_engine(path: str | Path, tokenizer: PreTrainedTokenizerBase, tokens_per_step: int = 4) -> ScriptedEngine:
    completions = read_replay_file(path)

    def script(request: Request) -> str:
        problem_id, index = problem_and_index(request.request_id)
        texts = completions.get(problem_id)
        if not texts:
            raise LookupError(f"the replay file has no completion for problem {problem_id!r}")
        return texts[index % len(texts)]

    return ScriptedEngine(tokenizer, script, tokens_per_step=tokens_per_step)
