"""Length-prefixed frames: a 4-byte big-endian unsigned length, then that many bytes.

Sans-IO: `FrameDecoder` is fed whatever bytes arrived and hands back whole frames; it never reads a
socket and never allocates a declared length before its bytes are there.
"""

from __future__ import annotations

import struct

LENGTH_PREFIX = struct.Struct(">I")
LENGTH_PREFIX_BYTES = LENGTH_PREFIX.size


class FrameTooLarge(Exception):
    """A length prefix declared more than the configured maximum."""

    def __init__(self, declared_bytes: int, max_frame_bytes: int) -> None:
        super().__init__(f"frame of {declared_bytes} bytes declared; the maximum is {max_frame_bytes}")
        self.declared_bytes = declared_bytes
        self.max_frame_bytes = max_frame_bytes


def encode_frame(payload: bytes) -> bytes:
    return LENGTH_PREFIX.pack(len(payload)) + payload


class FrameDecoder:
    """Splits a byte stream into frames of at most `max_frame_bytes` each."""

    __slots__ = ("_buffer", "_offset", "max_frame_bytes")  # one per connection: no instance dict

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._offset = 0

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer) - self._offset

    def feed(self, data: bytes) -> None:
        if self._offset and self._offset * 2 >= len(self._buffer):
            # Drop consumed bytes once they are half the buffer: amortised O(1) per byte.
            del self._buffer[: self._offset]
            self._offset = 0
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next whole frame's payload, or None until more bytes arrive.

        Raises FrameTooLarge as soon as a prefix declares an oversized frame.
        """
        available = len(self._buffer) - self._offset
        if available < LENGTH_PREFIX_BYTES:
            return None
        (declared,) = LENGTH_PREFIX.unpack_from(self._buffer, self._offset)
        if declared > self.max_frame_bytes:
            raise FrameTooLarge(declared, self.max_frame_bytes)
        end = self._offset + LENGTH_PREFIX_BYTES + declared
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[self._offset + LENGTH_PREFIX_BYTES : end])
        self._offset = end
        if self._offset == len(self._buffer):
            self._buffer.clear()
            self._offset = 0
        return payload
