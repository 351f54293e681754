"""Tool calls in the model's text: find the code, format what goes back. Pure functions.

The OpenMath models write Python between `<tool_call>` and `</tool_call>` and were trained to
read the result as `\\n```output\\n{stdout}{stderr}```\\n` right after the closing tag (the
"qwen" format of NeMo-Skills' `format_code_output`, tags from its `openmath` code tags). The
sandbox cuts each stream to the configured number of characters, keeping its beginning and its
end (where a traceback says what went wrong) around an `<output cut>` marker.

Malformed calls are handled here, not crashed on: a closing tag with no opening tag or no code
gives an explanatory output, markdown fences inside the tags are removed, and a fake
```output block the model wrote inside the tags is dropped before running the code.
"""

from __future__ import annotations

import re

from .tokenizer import TOOL_CALL_END, TOOL_CALL_START

NO_CODE_MESSAGE = "No code found between <tool_call> and </tool_call>; nothing was run."
NO_CALLS_LEFT_MESSAGE = (
    "You have used all your code executions, so this code was not run. "
    "Continue solving the problem without code."
)
STATE_LOST_MESSAGE = "The variables and imports of earlier code runs were lost; define them again.\n"

_OPENING_FENCE = re.compile(r"^\s*```[A-Za-z0-9_+-]*[ \t]*\n")
_CLOSING_FENCE = re.compile(r"\n?```\s*$")
_FAKE_OUTPUT = re.compile(r"```output\b")


def extract_code(text: str) -> str | None:
    """The code of the tool call that `text` ends with (text ends at `</tool_call>`); None
    when there is no opening tag before it or the code is blank."""
    end = text.rfind(TOOL_CALL_END)
    if end < 0:
        return None
    start = text.rfind(TOOL_CALL_START, 0, end)
    if start < 0:
        return None
    code = text[start + len(TOOL_CALL_START) : end]
    code = _drop_fake_output(code)
    code = _strip_fences(code)
    return code if code.strip() else None


def _drop_fake_output(code: str) -> str:
    match = _FAKE_OUTPUT.search(code)
    return code[: match.start()] if match else code


def _strip_fences(code: str) -> str:
    opening = _OPENING_FENCE.match(code)
    if not opening:
        return code
    return _CLOSING_FENCE.sub("\n", code[opening.end() :])


def output_block(stdout: str, stderr: str = "") -> str:
    """The exact text appended after `</tool_call>`."""
    return f"\n```output\n{stdout}{stderr}```\n"


def timeout_text(timeout_s: float) -> str:
    return f"Execution timed out after {timeout_s:g} seconds\n"
