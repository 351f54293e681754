"""Finding the code of a tool call and formatting its output. Run: python -m pytest tests/solver/test_toolcall.py -q"""

import pytest

from solver.toolcall import extract_code, output_block


@pytest.mark.parametrize(
    "text, expected",
    [
        ("think <tool_call>\nprint(1)\n</tool_call>", "\nprint(1)\n"),
        ("<tool_call>a=1</tool_call> more <tool_call>\nprint(a)\n</tool_call>", "\nprint(a)\n"),  # the last call
        ("<tool_call>\n```python\nprint(2)\n```\n</tool_call>", "print(2)\n"),  # fences inside the tags
        ("<tool_call>\n```\nprint(3)\n```</tool_call>", "print(3)\n"),
        ("<tool_call>\nprint(4)\n```output\n4\n```\n</tool_call>", "\nprint(4)\n"),  # the model's own fake output
        ("<tool_call>\n   \n</tool_call>", None),  # empty code
        ("no opening tag </tool_call>", None),
        ("<tool_call>\n```python\n```\n</tool_call>", None),  # only fences
    ],
)
def test_extract_code(text, expected):
    assert extract_code(text) == expected


def test_output_block_has_the_exact_trained_bytes():
    assert output_block("Sum: 70\n") == "\n```output\nSum: 70\n```\n"
    assert output_block("a\n", "Traceback...\n") == "\n```output\na\nTraceback...\n```\n"
