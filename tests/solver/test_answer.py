"""Answer extraction and integer normalisation, from tables of real-looking model outputs.

Run: python -m pytest tests/solver/test_answer.py -q
"""

import pytest

from solver.answer import extract_boxed, to_integer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{70}.", "70"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("first \\boxed{3}, then corrected: \\boxed{4}", "4"),  # several boxes: the last
        ("no box at all, the answer is 12", None),
        ("\\boxed{12", None),  # unbalanced
        ("earlier \\boxed{5} and then cut \\boxed{12", "5"),  # unbalanced last: previous complete one
        ("$\\boxed 5$", "5"),
        ("\\boxed{\\text{70 degrees}}", "\\text{70 degrees}"),
        ("\\boxed{ 1{,}000 }", "1{,}000"),
        ("\\fbox{8}", "8"),
        ("\\boxed{}", ""),
        ("\\boxedfoo{3}", None),  # another macro, not a box
        ("\\boxed{a\\{b\\}c}", "a\\{b\\}c"),  # escaped braces do not count
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "answer, modulus, expected",
    [
        ("70", 1000, 70),
        ("1070", 1000, 70),
        ("-3", 1000, 997),
        ("1{,}000", None, 1000),
        ("1,000", None, 1000),
        ("$42$", 1000, 42),
        ("70^\\circ", 1000, 70),
        ("\\text{70 degrees}", 1000, 70),
        ("2^{10}", None, 1024),
        ("\\frac{12}{4}", 1000, 3),
        ("\\dfrac{12}{5}", 1000, None),
        ("70.0", 1000, 70),
        ("x = 70", 1000, 70),
        ("3 \\cdot 5", None, 15),
        ("\\sqrt{2}", 1000, None),
        ("1, 2", 1000, None),
        ("(1, 2)", 1000, None),
        ("__import__('os').system('true')", 1000, None),  # never evaluated
        ("9^{9^{9}}", 1000, None),  # bounded exponent
        ("1/0", 1000, None),
        ("", 1000, None),
        (None, 1000, None),
        (17, 10, 7),
    ],
)
def test_to_integer(answer, modulus, expected):
    assert to_integer(answer, modulus) == expected
