"""Completion records: a step whose outputs exist for the same inputs and arguments is skipped.

Each step writes `build_manifest.json` into its main output folder as its very last action. The
manifest holds a fingerprint of the step's inputs and parameters; a later run with the same
fingerprint, whose outputs all exist, has nothing to do. A run that starts work deletes the old
manifest first, so a crash half-way never leaves outputs that look complete.

Fingerprint of an input file: its path relative to the input, its size, and its content (SHA-256)
for files up to 64 MiB; for larger files (model weights) the modification time stands in for the
content, so fingerprinting a 30 GB checkpoint takes milliseconds. Not covered: a large file
rewritten with identical size and a forged modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from build.plan import Plan, run_commands

MANIFEST_NAME = "build_manifest.json"
MANIFEST_VERSION = 1
CONTENT_HASH_MAX_BYTES = 64 * 2**20


def _file_digest(path: Path) -> str:
    stat = path.stat()
    if stat.st_size > CONTENT_HASH_MAX_BYTES:
        return f"size={stat.st_size},mtime_ns={stat.st_mtime_ns}"
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
    return f"size={stat.st_size},sha256={digest.hexdigest()}"


def _input_entries(path: Path) -> list[tuple[str, str]]:
    if path.is_file():
        return [(str(path), _file_digest(path))]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
        return [(f"{path}/{p.relative_to(path)}", _file_digest(p)) for p in files]
    return [(str(path), "missing")]


def jsonable(value: Any) -> Any:
    """`value` with Paths as strings and tuples as lists, for JSON."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def fingerprint(plan: Plan) -> str:
    """SHA-256 over the step name, its parameters and its inputs' identities."""
    entries: list[tuple[str, str]] = []
    for path in plan.inputs:
        entries.extend(_input_entries(path))
    payload = {"step": plan.step, "params": jsonable(dict(plan.params)), "inputs": entries}
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def read(plan: Plan) -> dict[str, Any] | None:
    try:
        return json.loads(plan.manifest_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_complete(plan: Plan) -> bool:
    """True when the manifest matches this plan's fingerprint and every output exists."""
    record = read(plan)
    if record is None or record.get("version") != MANIFEST_VERSION:
        return False
    if record.get("fingerprint") != fingerprint(plan):
        return False
    return all(path.exists() for path in plan.outputs)


def clear(plan: Plan) -> None:
    plan.manifest_path.unlink(missing_ok=True)


def write(plan: Plan, fingerprint_hex: str, extra: dict[str, Any] | None = None) -> None:
    """Write the manifest atomically (temporary file, then rename)."""
    record = {
        "version": MANIFEST_VERSION,
        "step": plan.step,
        "fingerprint": fingerprint_hex,
        "params": jsonable(dict(plan.params)),
        "inputs": [str(path) for path in plan.inputs],
        "outputs": [str(path) for path in plan.outputs],
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    plan.manifest_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan.manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, plan.manifest_path)


def run_once(plan: Plan) -> None:
    """Run a stage's commands unless its manifest says they already completed for these inputs
    (e.g. the FP8 checkpoint when only the engine build failed); record completion last."""
    if is_complete(plan):
        print(f"{plan.step}: already complete for these inputs ({plan.manifest_path}); skipping.")
        return
    fingerprint_hex = fingerprint(plan)
    clear(plan)
    run_commands(plan.commands)
    write(plan, fingerprint_hex)
