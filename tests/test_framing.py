"""Length-prefixed framing, without sockets."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol.framing import FrameDecoder, FrameTooLarge, encode_frame


def test_a_frame_is_a_big_endian_length_then_the_payload() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"


def test_an_empty_frame_is_a_frame() -> None:
    decoder = FrameDecoder(max_frame_bytes=16)
    decoder.feed(b"\x00\x00\x00\x00")
    assert decoder.next_frame() == b""
    assert decoder.next_frame() is None


def test_a_frame_at_the_limit_passes_and_one_byte_over_is_refused() -> None:
    decoder = FrameDecoder(max_frame_bytes=4)
    decoder.feed(encode_frame(b"1234"))
    assert decoder.next_frame() == b"1234"
    decoder.feed(struct.pack(">I", 5))
    with pytest.raises(FrameTooLarge) as refused:
        decoder.next_frame()
    assert refused.value.declared_bytes == 5


def test_an_oversized_length_is_refused_before_its_bytes_arrive() -> None:
    decoder = FrameDecoder(max_frame_bytes=65536)
    decoder.feed(struct.pack(">I", 2**31 - 1))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()
    assert decoder.buffered_bytes == 4  # nothing was allocated for the declared length


def test_partial_header_and_partial_payload_wait_for_more() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    data = encode_frame(b"hello")
    decoder.feed(data[:2])
    assert decoder.next_frame() is None
    decoder.feed(data[2:6])
    assert decoder.next_frame() is None
    decoder.feed(data[6:])
    assert decoder.next_frame() == b"hello"


@given(
    payloads=st.lists(st.binary(max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_any_split_of_the_stream_yields_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    decoder = FrameDecoder(max_frame_bytes=300)
    received = []
    for start, end in itertools.pairwise(points):
        decoder.feed(stream[start:end])
        while (payload := decoder.next_frame()) is not None:
            received.append(payload)
    assert received == payloads
    assert decoder.buffered_bytes == 0
