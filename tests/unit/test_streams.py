"""Stream adapters between threads: bytes arrive whole and in order, and nobody waits forever."""

from __future__ import annotations

import io
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
