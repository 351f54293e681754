"""Messages between the solver process, the fork server and the workers: length-prefixed JSON.

JSON, never pickle: a worker runs untrusted code that can write anything to its socket, and the
solver must be able to read that without executing it. A frame is a 4-byte big-endian length and
that many bytes of UTF-8 JSON encoding one object. File descriptors travel beside a frame as
SCM_RIGHTS ancillary data on Unix sockets.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

Message = dict[str, Any]

MAX_FRAME_BYTES = 64 << 20  # requests carry the code
MAX_ANSWER_BYTES = 1 << 20  # what a worker may send in one frame; more is a violation
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def encode(message: Message) -> bytes:
    payload = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(payload)) + payload


def send(sock: socket.socket, message: Message, fds: tuple[int, ...] = ()) -> None:
    """Send one frame (and `fds` with it). Blocking."""
    data = encode(message)
    if fds:
        sent = socket.send_fds(sock, [data], list(fds))
        data = data[sent:]
    if data:
        sock.sendall(data)


def recv(sock: socket.socket) -> Message | None:
    """Receive one frame; None when the peer closed the socket. Blocking."""
    message, _ = recv_with_fds(sock, max_fds=0)
    return message


def recv_with_fds(sock: socket.socket, max_fds: int) -> tuple[Message | None, list[int]]:
    """Receive one frame and the descriptors sent with it; (None, []) at end of stream."""
    fds: list[int] = []
    header = bytearray()
    while len(header) < _HEADER.size:
        if max_fds:
            chunk, new_fds, _, _ = socket.recv_fds(sock, _HEADER.size - len(header), max_fds)
            fds += new_fds
        else:
            chunk = sock.recv(_HEADER.size - len(header))
        if not chunk:
            return None, fds
        header += chunk
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {length} bytes")
    payload = bytearray()
    while len(payload) < length:
        chunk = sock.recv(length - len(payload))
        if not chunk:
            return None, fds
        payload += chunk
    return _decode(bytes(payload)), fds


class FrameReader:
    """Reassembles frames from bytes that arrive in arbitrary pieces (a non-blocking reader)."""

    def __init__(self, max_frame_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > self._max_frame_bytes:
                raise ProtocolError(f"frame of {length} bytes")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            messages.append(_decode(bytes(self._buffer[_HEADER.size : end])))
            del self._buffer[:end]
        return messages


def _decode(payload: bytes) -> Message:
    try:
        message = json.loads(payload)
    except ValueError as error:
        raise ProtocolError(f"not JSON: {error}") from None
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    return message
