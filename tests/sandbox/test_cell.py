"""One cell runs with plain Python semantics and reports errors as `python` would, minus our frames.

Run: python -m pytest tests/sandbox/test_cell.py -q
(in-process: no worker, no isolation)
"""

from __future__ import annotations

import pytest

from sandbox.cell import run_cell


@pytest.fixture
def namespace() -> dict:
    return {"__name__": "__main__"}


def test_error_traceback_shows_only_the_users_frames(namespace):
    status, text = run_cell("1/0", 1, namespace)
    assert status == "error"
    assert text == (
        "Traceback (most recent call last):\n"
        '  File "<cell 1>", line 1, in <module>\n'
        "    1/0\n"
        "ZeroDivisionError: division by zero\n"
    )


def test_traceback_through_a_function_of_an_earlier_cell_names_both_cells(namespace):
    assert run_cell("def f(x):\n    return 1 / x\n", 1, namespace) == ("ok", "")
    status, text = run_cell("y = f(0)", 2, namespace)
    assert status == "error"
    assert '  File "<cell 2>", line 1, in <module>\n    y = f(0)\n' in text
    assert '  File "<cell 1>", line 2, in f\n    return 1 / x\n' in text
    assert "sandbox" not in text and "^" not in text


def test_syntax_error_is_reported_like_python(namespace):
    status, text = run_cell("x = (", 3, namespace)
    assert status == "error"
    assert text.startswith('  File "<cell 3>", line 1\n')
    assert text.endswith("SyntaxError: '(' was never closed\n")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import sys; sys.exit()", ("ok", "")),
        ("import sys; sys.exit(0)", ("ok", "")),
        ("import sys; sys.exit(2)", ("error", "")),
        ("import sys; sys.exit('bye')", ("error", "bye\n")),
        ("exit()", ("ok", "")),
    ],
)
def test_sys_exit_ends_the_cell_as_it_would_end_a_script(namespace, code, expected):
    assert run_cell(code, 1, namespace) == expected


def test_a_final_bare_expression_is_not_echoed(namespace, capsys):
    assert run_cell("1 + 1", 1, namespace) == ("ok", "")
    assert capsys.readouterr().out == ""


def test_memory_error_gives_memory_status(namespace):
    status, text = run_cell("raise MemoryError", 1, namespace)
    assert status == "memory"
    assert text.endswith("MemoryError\n")


def test_definitions_and_imports_stay_in_the_namespace(namespace):
    run_cell("import math\nclass A:\n    k = 3\ndef g():\n    return A.k", 1, namespace)
    assert run_cell("assert g() == 3 and math.pi > 3", 2, namespace) == ("ok", "")
