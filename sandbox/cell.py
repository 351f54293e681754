"""Running one cell of code in the current process, with plain Python semantics.

A cell is compiled as a module body named `<cell N>` (N counts the session's calls from 1) and
executed in the session's namespace, which is the `__main__` module's dictionary, so variables,
imports and functions persist and user classes pickle. Nothing is echoed: like `python file.py`
and unlike IPython, a final bare expression prints nothing; the code must `print`.

The error text is what `python` itself prints, minus the sandbox's own frames and minus the
`^^^^` position markers of Python 3.11+: `Traceback (most recent call last):`, one entry per frame
of the user's code (and of the libraries it called), the exception line. `sys.exit()` ends the
cell as `python` would end a script: code 0 or None is success, any other code is an error, a
string code is printed.

This module does not capture output, impose limits or catch what cannot be caught (a segfault,
`os._exit`); the worker around it does.
"""

from __future__ import annotations

import linecache
import traceback
from typing import Literal

CellStatus = Literal["ok", "error", "memory"]


def cell_filename(cell_number: int) -> str:
    return f"<cell {cell_number}>"


def run_cell(code: str, cell_number: int, namespace: dict) -> tuple[CellStatus, str]:
    """Execute `code` in `namespace`; return how it ended and the text to show on stderr."""
    filename = cell_filename(cell_number)
    # Registered so that tracebacks through this cell, now or in a later call, show its lines.
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    try:
        compiled = compile(code, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:  # ValueError: source with a NUL byte
        return "error", "".join(traceback.format_exception_only(type(error), error))
    try:
        exec(compiled, namespace)
    except SystemExit as exit_request:
        return _exit_outcome(exit_request.code)
    except BaseException as error:  # noqa: BLE001 -- everything the code raises is reported
        status: CellStatus = "memory" if isinstance(error, MemoryError) else "error"
        return status, format_user_traceback(error)
    return "ok", ""


def format_user_traceback(error: BaseException) -> str:
    """The traceback `python` would print for `error`, without the frame that ran the cell."""
    tb = error.__traceback__
    user_tb = tb.tb_next if tb is not None else None  # the first frame is run_cell's exec
    try:
        report = traceback.TracebackException(type(error), error, user_tb, compact=True)
        _drop_position_markers(report, seen=set())
        return "".join(report.format())
    except Exception:  # noqa: BLE001 -- a broken __str__ or MemoryError must not lose the error
        return f"{type(error).__name__}\n"


def _exit_outcome(code: object) -> tuple[CellStatus, str]:
    if code is None or code == 0:
        return "ok", ""
    if isinstance(code, int):
        return "error", ""
    return "error", f"{code}\n"


def _drop_position_markers(report: traceback.TracebackException, seen: set[int]) -> None:
    """Clear column data so that no `~~~^^^` line is printed; they repeat the source line."""
    if id(report) in seen:
        return
    seen.add(id(report))
    for frame in report.stack:
        frame.colno = None
        frame.end_colno = None
    for linked in (report.__cause__, report.__context__, *(getattr(report, "exceptions", None) or ())):
        if linked is not None:
            _drop_position_markers(linked, seen)
