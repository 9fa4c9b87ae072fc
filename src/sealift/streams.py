"""Small stream adapters shared by every format and transport.

``CountingReader`` counts what passes (progress, expansion caps). ``PrefetchReader`` keeps
reading ahead in a thread, so a slow consumer never stalls the producer: an engine's save stream
or a pipe only moves while someone reads it. With a bounded read-ahead the producer keeps running
while the consumer hashes and compresses, and memory stays bounded (``depth`` x ``chunk``).
``ChunkQueue`` is the other direction: what one thread writes, another takes as chunks.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Iterator
from typing import IO, TypeVar

CHUNK = 1024 * 1024
T = TypeVar("T")


def _put_unless_stopped(target: queue.Queue[T], item: T, stop: threading.Event) -> bool:
    """Put ``item`` in the bounded queue, waiting for room; False if ``stop`` is set first, so
    a producer is never left blocked on a queue its consumer has abandoned."""
    while not stop.is_set():
        try:
            target.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class CountingReader(io.RawIOBase):
    """Reads through to ``raw``, counting bytes in ``count``."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.raw.fileno()

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        readinto = getattr(self.raw, "readinto", None)
        if readinto is not None:  # straight into the caller's buffer: no copy of our own
            n: int = readinto(buffer) or 0
        else:
            data = self.raw.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        self.count += n
        return n


class PrefetchReader(io.RawIOBase):
    """Reads ``raw`` ahead in a thread, ``chunk`` bytes at a time, at most ``depth`` chunks
    ahead. Each chunk is read straight into a buffer of its own and copied once, into the
    caller's buffer; ``readinto`` fills the caller's buffer whole (short only at the end)."""

    def __init__(
        self, raw: IO[bytes], chunk: int = CHUNK, depth: int = 8, *, close_raw: bool = False
    ) -> None:
        """``close_raw``: closing the reader closes ``raw`` too, once the thread has stopped
        (only for a ``raw`` whose reads never block for long: a file, a decompressor of one)."""
        self._raw = raw
        self._close_raw = close_raw
        self._chunk = chunk
        self._queue: queue.Queue[memoryview | BaseException] = queue.Queue(maxsize=depth)
        self._current = memoryview(b"")
        self._eof = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="sealift-prefetch", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._read_chunk()
                self._put(data)
                if not data:
                    return
        except BaseException as exc:
            self._put(exc)

    def _read_chunk(self) -> memoryview:
        """The next ``chunk`` bytes (fewer only at the end of the stream)."""
        readinto = getattr(self._raw, "readinto", None)
        if readinto is None:
            return memoryview(self._raw.read(self._chunk) or b"")
        view = memoryview(bytearray(self._chunk))
        filled = 0
        while filled < self._chunk and (n := readinto(view[filled:])):
            filled += n
        return view[:filled]

    def _put(self, item: memoryview | BaseException) -> None:
        _put_unless_stopped(self._queue, item, self._stop)

    def readable(self) -> bool:
        return True

    def peek(self, size: int) -> bytes:
        """At most ``size`` of the next bytes (those left in the current chunk), not consumed."""
        self._next_chunk()
        return bytes(self._current[:size])

    def _next_chunk(self) -> None:
        """Make the next chunk current if the current one is used up."""
        if self._current or self._eof:
            return
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        if not item:
            self._eof = True
            return
        self._current = item

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        target = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(target):
            self._next_chunk()
            if not self._current:
                break
            n = min(len(target) - filled, len(self._current))
            target[filled : filled + n] = self._current[:n]
            self._current = self._current[n:]
            filled += n
        return filled

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=None if self._close_raw else 1)
        if self._close_raw and not self.closed:
            self._raw.close()
        super().close()


class ChunkQueue(io.RawIOBase):
    """What one thread writes, handed to another as ~``chunk``-byte pieces through a short
    queue: one copy of each byte, where an OS pipe makes two and a system call every 64 KiB."""

    def __init__(self, chunk: int = CHUNK, depth: int = 4) -> None:
        self._chunk = chunk
        self._queue: queue.Queue[bytes | None] = queue.Queue(depth)
        self._buffer = bytearray()
        self._cancelled = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | memoryview) -> int:  # type: ignore[override]
        size = len(data)
        if not self._buffer and size >= self._chunk:
            self._put(bytes(data))
            return size
        self._buffer += data
        if len(self._buffer) >= self._chunk:
            self._send_buffer()
        return size

    def _send_buffer(self) -> None:
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()

    def end(self, *, complete: bool) -> None:
        """No more chunks; an incomplete stream's last bytes are dropped (after a failure, the
        reader learns why from the writer)."""
        try:
            if complete:
                self._send_buffer()
            self._buffer.clear()
            self._put(None)
        except BrokenPipeError:
            return

    def cancel(self) -> None:
        """The reader is gone: the writer's next write raises instead of waiting forever."""
        self._cancelled.set()

    def chunks(self) -> Iterator[bytes]:
        while (chunk := self._queue.get()) is not None:
            yield chunk

    def _put(self, item: bytes | None) -> None:
        if not _put_unless_stopped(self._queue, item, self._cancelled):
            raise BrokenPipeError("the reader stopped taking chunks")
