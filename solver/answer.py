"""Answers: the last `\\boxed{...}` of a solution, normalised to an integer.

Public, for scripts:
- `extract_boxed(text) -> str | None`: the content of the last `\\boxed{...}` (or `\\fbox{...}`)
  whose braces balance; `\\boxed 5` (no braces) gives "5". A trailing box cut off mid-way (a
  sample stopped by a deadline) is skipped in favour of the previous complete one.
- `to_integer(answer, modulus=1000) -> int | None`: an integer for answers that denote one
  ("70", "$1,000$", "70^\\circ", "\\text{70 cm}", "2^{10}", "\\frac{12}{4}", "70.0", "x = 70"),
  reduced modulo `modulus` (None or 0: no reduction); None for anything else (non-integer
  fractions, symbols, intervals, several numbers). Arithmetic is evaluated by a
  small whitelist evaluator, never by `eval`, with bounded exponents.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

_BOX_MARKERS = ("\\boxed", "\\fbox")
_MAX_EXPONENT = 4096
_MAX_DIGITS = 4096


def extract_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` in `text`, stripped; None if there is none."""
    for start in sorted(_marker_positions(text), reverse=True):
        content = _box_content(text, start)
        if content is not None:
            return content.strip()
    return None


def _marker_positions(text: str) -> list[int]:
    positions = []
    for marker in _BOX_MARKERS:
        positions.extend(m.end() for m in re.finditer(re.escape(marker) + r"(?![A-Za-z])", text))
    return positions


def _box_content(text: str, start: int) -> str | None:
    """Content after a box marker ending at `start`; None if unbalanced or empty."""
    rest = text[start:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        return _balanced(stripped)
    if rest[:1].isspace():  # `\boxed 5`: the argument runs to whitespace or `$`
        match = re.match(r"([^\s$]+)", stripped)
        return match.group(1) if match else None
    return None


def _balanced(text: str) -> str | None:
    """`text` starts with "{": the content up to its matching "}", or None."""
    depth = 0
    for i, ch in enumerate(text):
        if ch == "{" and not _escaped(text, i):
            depth += 1
        elif ch == "}" and not _escaped(text, i):
            depth -= 1
            if depth == 0:
                return text[1:i]
    return None


def _escaped(text: str, i: int) -> bool:
    return i > 0 and text[i - 1] == "\\"


# --- integer normalisation ------------------------------------------------------------------

_DROP = [
    r"\\left", r"\\right", r"\\displaystyle", r"\\!", r"\\,", r"\\;", r"\\:", r"\\ ", r"~",
    r"\{,\}", r"\$", r"\\%", r"%", r"\^\{?\\circ\}?", r"\\circ", r"\\degree",
]
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_ALLOWED = re.compile(r"^[0-9+\-*/().\s^]+$")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def to_integer(answer: str | int | None, modulus: int | None = 1000) -> int | None:
    """The integer `answer` denotes, reduced modulo `modulus`; None when it is not an integer."""
    if answer is None:
        return None
    value = _exact_value(str(answer)) if not isinstance(answer, int) else Fraction(answer)
    if value is None or value.denominator != 1:
        return None
    number = value.numerator
    return number % modulus if modulus else number


def _exact_value(text: str) -> Fraction | None:
    expression = _latex_to_arithmetic(text)
    if not expression or not _ALLOWED.match(expression):
        return None
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError):
        return None
    return _evaluate(tree.body)


def _latex_to_arithmetic(text: str) -> str:
    s = text.strip()
    s = re.sub(r"^\s*[a-zA-Z]\s*=\s*", "", s)  # "x = 5"
    s = _TEXT.sub(lambda m: _number_in_text(m.group(1)), s)
    for pattern in _DROP:
        s = re.sub(pattern, "", s)
    s = _THOUSANDS.sub("", s)
    for _ in range(4):  # nested fractions, innermost first
        s = _FRAC.sub(r"((\1)/(\2))", s)
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("{", "(").replace("}", ")")
    s = s.replace("^", "**").rstrip(".").strip()
    return s


def _number_in_text(text: str) -> str:
    """`\\text{70 degrees}` -> "70"; text without a number vanishes."""
    match = re.search(r"-?\d+(?:\.\d+)?", text)
    return match.group(0) if match else ""


def _evaluate(node: ast.AST) -> Fraction | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return _constant(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _evaluate(node.operand)
        return None if value is None else (value if isinstance(node.op, ast.UAdd) else -value)
    if isinstance(node, ast.BinOp):
        return _binary(node)
    return None


def _constant(value: int | float) -> Fraction | None:
    if isinstance(value, float):
        # "70.0" and "69.9999999" are integers; "70.5" is not.
        nearest = round(value)
        return Fraction(nearest) if abs(value - nearest) < 1e-6 else Fraction(value)
    return Fraction(value) if len(str(abs(value))) <= _MAX_DIGITS else None


def _binary(node: ast.BinOp) -> Fraction | None:
    left, right = _evaluate(node.left), _evaluate(node.right)
    if left is None or right is None:
        return None
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    if isinstance(node.op, ast.Div):
        return left / right if right != 0 else None
    if isinstance(node.op, ast.Pow):
        return _power(left, right)
    return None


def _power(base: Fraction, exponent: Fraction) -> Fraction | None:
    if exponent.denominator != 1 or abs(exponent) > _MAX_EXPONENT:
        return None
    if base == 0 and exponent < 0:
        return None
    if abs(base.numerator).bit_length() * abs(exponent.numerator) > _MAX_DIGITS * 4:
        return None
    return base ** int(exponent)
