"""Run the Python code on stdin in a fresh sandbox session and print its result as JSON.

    python -m sandbox [--timeout S] [--memory-mb M] < code.py

Prints one JSON object (status, stdout, stderr, wall_s, state_lost, note) on stdout and exits 0
whatever the code did; a non-zero exit means the command line itself was wrong.
"""

from __future__ import annotations

import argparse
import json
import sys

from sandbox.limits import SandboxLimits
from sandbox.pool import Sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.splitlines()[0])
    defaults = SandboxLimits()
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, metavar="S",
                        help=f"wall-clock seconds (default {defaults.timeout_s:g})")
    parser.add_argument("--memory-mb", type=int, default=defaults.memory_mb, metavar="M",
                        help=f"address-space limit in MB (default {defaults.memory_mb})")
    args = parser.parse_args(argv)
    try:
        limits = SandboxLimits(timeout_s=args.timeout, memory_mb=args.memory_mb)
    except ValueError as error:
        parser.error(str(error))
    code = sys.stdin.read()
    with Sandbox(max_workers=1, limits=limits) as sandbox:
        result = sandbox.execute("cli", code)
    json.dump(result.to_json(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
