"""Output capture and cutting keep bounded memory and show both ends of long output.

Run: python -m pytest tests/sandbox/test_output.py -q
"""

from __future__ import annotations

import pytest

from sandbox.output import CUT_MARKER, StreamCapture, cut_text


@pytest.mark.parametrize("text", ["", "short", "x" * 10])
def test_text_within_the_limit_is_unchanged(text):
    assert cut_text(text, 10) == text


@pytest.mark.parametrize(
    ("text", "max_chars", "expected"),
    [
        ("abcdefghijkl", 10, f"abcde\n{CUT_MARKER}\nhijkl"),
        ("abcdefghijkl", 5, f"abc\n{CUT_MARKER}\nkl"),
        ("abcdefghijkl", 1, f"a\n{CUT_MARKER}\n"),
    ],
)
def test_long_text_keeps_its_head_and_tail_around_the_marker(text, max_chars, expected):
    assert cut_text(text, max_chars) == expected


def test_capture_of_a_huge_stream_keeps_bounded_memory_and_both_ends():
    capture = StreamCapture(max_chars=100)
    capture.add(b"BEGIN")
    for _ in range(1000):
        capture.add(b"." * 100_000)
    capture.add(b"END")
    text = capture.text()
    assert capture.total_bytes == 100_000_008
    assert text.startswith("BEGIN") and text.endswith("END")
    assert CUT_MARKER in text and len(text) <= 100 + len(CUT_MARKER) + 2
    assert len(capture._head) + len(capture._tail) <= 800


def test_capture_that_kept_everything_cuts_exactly_like_cut_text():
    capture = StreamCapture(max_chars=10)
    for piece in (b"hello ", b"world, ", b"how are you"):
        capture.add(piece)
    assert capture.text() == cut_text("hello world, how are you", 10)


def test_capture_never_splits_a_multibyte_character():
    capture = StreamCapture(max_chars=3)
    data = "é" * 50 + "ü" * 50
    for byte in data.encode():
        capture.add(bytes([byte]))
    text = capture.text()
    assert "\ufffd" not in text
    assert text == f"éé\n{CUT_MARKER}\nü"
