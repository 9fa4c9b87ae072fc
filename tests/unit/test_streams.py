"""Stream adapters between threads: bytes arrive whole and in order, and nobody waits forever."""

from __future__ import annotations

import io
import itertools
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealift.streams import ChunkQueue, PrefetchReader

writes = st.lists(st.binary(max_size=300), max_size=40)


@settings(max_examples=60, deadline=None)
@given(pieces=writes)
def test_chunk_queue_hands_over_every_byte_in_order(pieces: list[bytes]) -> None:
    chunks = ChunkQueue(chunk=64, depth=2)

    def produce() -> None:
        for piece in pieces:
            chunks.write(piece)
        chunks.end(complete=True)

    producer = threading.Thread(target=produce)
    producer.start()
    received = b"".join(chunks.chunks())
    producer.join(timeout=10)
    assert received == b"".join(pieces)


def test_an_incomplete_chunk_queue_drops_its_unsent_tail() -> None:
    chunks = ChunkQueue(chunk=64)
    chunks.write(b"x" * 10)
    chunks.end(complete=False)
    assert list(chunks.chunks()) == []


def test_a_writer_whose_reader_is_gone_raises_instead_of_waiting() -> None:
    chunks = ChunkQueue(chunk=4, depth=1)
    chunks.write(b"full")  # fills the one slot
    chunks.cancel()
    with pytest.raises(BrokenPipeError):
        chunks.write(b"more")


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000), chunk=st.integers(1, 700))
def test_prefetch_reader_returns_the_stream_unchanged(data: bytes, chunk: int) -> None:
    reader = PrefetchReader(io.BytesIO(data), chunk=chunk, depth=2)
    try:
        assert io.BufferedReader(reader).read() == data
    finally:
        reader.close()


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=5000),
    chunk=st.integers(1, 700),
    sizes=st.lists(st.integers(1, 900), min_size=1, max_size=8),
)
def test_prefetch_reader_fills_every_buffer_whole_until_the_end(
    data: bytes, chunk: int, sizes: list[int]
) -> None:
    reader = PrefetchReader(io.BytesIO(data), chunk=chunk, depth=2)
    received = bytearray()
    try:
        for size in itertools.cycle(sizes):
            buffer = bytearray(size)
            n = reader.readinto(memoryview(buffer))
            received += buffer[:n]
            if n < size:
                break
        assert bytes(received) == data
        assert reader.readinto(memoryview(bytearray(8))) == 0
    finally:
        reader.close()


def test_prefetch_reader_peeks_without_consuming() -> None:
    reader = PrefetchReader(io.BytesIO(b"0123456789"), chunk=4)
    try:
        assert reader.peek(3) == b"012"
        assert reader.peek(8) == b"0123"  # what the current chunk holds
        assert reader.read() == b"0123456789"
    finally:
        reader.close()


@pytest.mark.parametrize("close_raw", [True, False])
def test_prefetch_reader_closes_its_source_only_when_it_owns_it(close_raw: bool) -> None:
    raw = io.BytesIO(b"x" * 100)
    reader = PrefetchReader(raw, chunk=10, close_raw=close_raw)
    assert reader.read(5) == b"xxxxx"
    reader.close()
    assert raw.closed is close_raw
