"""Small stream adapters shared by every format and transport.

``CountingReader`` counts what passes (progress, expansion caps). ``PrefetchReader`` keeps
reading ahead in a thread, so a slow consumer never stalls the producer: an engine's save stream
or a pipe only moves while someone reads it. With a bounded read-ahead the producer keeps running
while the consumer hashes and compresses, and memory stays bounded (``depth`` x ``chunk``).
"""

from __future__ import annotations

import io
import queue
import threading
from typing import IO

_DONE = b""


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
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n


class PrefetchReader(io.RawIOBase):
    def __init__(self, raw: IO[bytes], chunk: int = 1024 * 1024, depth: int = 8) -> None:
        self._raw = raw
        self._chunk = chunk
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._current = memoryview(b"")
        self._eof = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="sealift-prefetch", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._raw.read(self._chunk)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._current:
            if self._eof:
                return 0
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            if item == _DONE:
                self._eof = True
                return 0
            self._current = memoryview(item)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        super().close()
