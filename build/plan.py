"""What one build step will do, said before it does it.

A `Plan` is a pure description: the inputs and parameters that decide the step's outputs (they
are fingerprinted for skipping, see `build.manifest`), the files and folders it writes, the
external commands it runs in order, and the in-process work it does. `--dry-run` prints it; a
real run executes it. `BuildError` is the one exception a step raises for a problem the user can
fix; its message is one sentence.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class BuildError(Exception):
    """A problem with the user's inputs or environment, stated in one sentence."""


@dataclass(frozen=True)
class Command:
    """One external program: argv, run without a shell; `name` is what messages call it
    (default: the program's file name)."""

    argv: tuple[str, ...]
    name: str = ""

    def __post_init__(self) -> None:
        assert self.argv and all(isinstance(arg, str) for arg in self.argv), self.argv
        if not self.name:
            object.__setattr__(self, "name", Path(self.argv[0]).name)

    def shell(self) -> str:
        """The command as it can be pasted into a POSIX shell."""
        return shlex.join(self.argv)


@dataclass(frozen=True)
class Plan:
    step: str
    inputs: tuple[Path, ...]  # files/folders whose content decides the outputs
    params: Mapping[str, Any]  # arguments that decide the outputs (JSON-serialisable)
    outputs: tuple[Path, ...]  # files/folders the step leaves behind
    manifest_path: Path  # written last, once every output is complete
    commands: tuple[Command, ...] = ()  # external programs, in order
    actions: tuple[str, ...] = ()  # in-process work, for --dry-run
    notes: tuple[str, ...] = ()  # consequences the user should read

    def render(self) -> str:
        lines = [f"step: {self.step}"]
        lines += [f"reads:  {path}" for path in self.inputs]
        lines += [f"runs in-process: {action}" for action in self.actions]
        lines += [f"runs:   {command.shell()}" for command in self.commands]
        lines += [f"writes: {path}" for path in self.outputs]
        lines.append(f"writes: {self.manifest_path} (last, marks the step complete)")
        lines += [f"note:   {note}" for note in self.notes]
        return "\n".join(lines)


def run_commands(commands: tuple[Command, ...]) -> None:
    """Run each command in order, its output going straight to the terminal."""
    for command in commands:
        print(f"$ {command.shell()}", flush=True)
        try:
            completed = subprocess.run(command.argv, check=False)
        except FileNotFoundError as error:
            raise BuildError(f"Cannot start `{command.argv[0]}`: {error.strerror}.") from error
        if completed.returncode != 0:
            raise BuildError(
                f"`{command.name}` exited with status {completed.returncode}; its own output above says why."
            )
