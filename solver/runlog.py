"""The run log: append-only JSON lines, one record per finished problem (docs/runlog.md).

Each record is written with one `write` of a whole line, flushed and fsynced, so a crash or
Ctrl-C loses at most the problem in flight. Reading tolerates a torn last line (skipped with a
warning) and skips any other unreadable line the same way: a damaged log never stops a run.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

VERSION = 1


class RunLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> list[dict]:
        """Every readable record, in file order."""
        if not self.path.exists():
            return []
        records = []
        with self.path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                record = _parse(line)
                if record is None:
                    print(f"warning: {self.path}: line {number} is not a complete record; ignored.", file=sys.stderr)
                elif record:
                    records.append(record)
        return records

    def solved(self) -> dict[str, dict]:
        """The last `problem` record of each problem id that ended without an error."""
        done: dict[str, dict] = {}
        for record in self.read():
            if _is_solved_problem(record):
                done[str(record["problem_id"])] = record
        return done

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self.path.open("ab") as handle:
            _end_torn_line(handle)
            handle.write(line.encode())
            handle.flush()
            os.fsync(handle.fileno())

    def start_run(self, config: dict) -> None:
        self.append({"kind": "run", "version": VERSION, "started_at": now_iso(), "config": config})


def _is_solved_problem(record: dict) -> bool:
    """A problem record that ended without an error and carries an integer answer."""
    answer = record.get("answer")
    return (
        record.get("kind") == "problem"
        and record.get("error") is None
        and "problem_id" in record
        and isinstance(answer, int)
        and not isinstance(answer, bool)
    )


def _parse(line: bytes) -> dict | None:
    """{} for a blank line, None for a broken one."""
    if not line.strip():
        return {}
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _end_torn_line(handle) -> None:
    """After a crash mid-write the file may end without a newline: start on a fresh line."""
    if handle.tell() == 0:
        return
    with open(handle.name, "rb") as reader:
        reader.seek(-1, os.SEEK_END)
        if reader.read(1) != b"\n":
            handle.write(b"\n")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
