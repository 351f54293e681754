"""Capturing a stream of unknown length in bounded memory, and cutting it for the result.

`StreamCapture` keeps the first and the last few kilobytes of a byte stream and counts the rest;
`cut_text` turns text longer than a limit into its beginning and end around `CUT_MARKER`. The
beginning shows what the code printed first, the end shows how it finished (the last line of a
traceback, the final answer of a loop).
"""

from __future__ import annotations

import codecs

CUT_MARKER = "<output cut>"
_BYTES_PER_CHAR = 4  # the worst case of UTF-8


def cut_text(text: str, max_chars: int) -> str:
    """`text` if it fits in `max_chars`, else its first and last characters around the marker."""
    if len(text) <= max_chars:
        return text
    head_chars = (max_chars + 1) // 2
    tail_chars = max_chars - head_chars
    tail = text[len(text) - tail_chars :] if tail_chars else ""
    return f"{text[:head_chars]}\n{CUT_MARKER}\n{tail}"


class StreamCapture:
    """Bytes of one stream: all of them while short, else a head and a rolling tail."""

    def __init__(self, max_chars: int) -> None:
        self._max_chars = max_chars
        self._keep_bytes = max_chars * _BYTES_PER_CHAR
        self._head = bytearray()
        self._tail = bytearray()
        self.total_bytes = 0

    def add(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        room = self._keep_bytes - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self._tail += chunk
            if len(self._tail) > self._keep_bytes:
                del self._tail[: len(self._tail) - self._keep_bytes]

    def text(self) -> str:
        """The stream as text, cut to `max_chars` with the marker where something was dropped."""
        if self.total_bytes == len(self._head) + len(self._tail):
            return cut_text(_decode(bytes(self._head + self._tail)), self._max_chars)
        head = _decode_prefix(bytes(self._head))
        tail = _decode_suffix(bytes(self._tail))
        head_chars = (self._max_chars + 1) // 2
        tail_chars = self._max_chars - head_chars
        tail_text = tail[len(tail) - tail_chars :] if tail_chars else ""
        return f"{head[:head_chars]}\n{CUT_MARKER}\n{tail_text}"


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _decode_prefix(data: bytes) -> str:
    """Decode a prefix of a stream, leaving out a character cut in half at its end."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data, final=False)


def _decode_suffix(data: bytes) -> str:
    """Decode a suffix of a stream, leaving out a character cut in half at its start."""
    start = 0
    while start < min(len(data), _BYTES_PER_CHAR) and data[start] & 0b1100_0000 == 0b1000_0000:
        start += 1
    return _decode(data[start:])
