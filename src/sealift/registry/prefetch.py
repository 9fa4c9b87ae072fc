"""Blobs downloaded ahead of the copy that reads them: several at once, each into a spool file
that its reader follows while it grows.

A copy reads layers one after another (a tar is written in order, a layout's blobs are added in
order), so a source that opened each blob only when asked would download one blob at a time.
:class:`Prefetcher` is told which blobs will be read, in about which order, and downloads them
on ``parallel`` worker threads into a private spool directory. A reader asking for a blob gets
its bytes as they land, without waiting for the whole blob.

Each download is a stream that checks its digest and size (the read that would complete a bad
blob raises instead), so a reader never gets the last bytes of a blob that does not match.

Bounds: at most ``parallel`` downloads at once; a download starts only while the spooled blobs
not yet read fit in ``budget`` bytes (one always may, so a blob larger than the budget still
moves), except the one a reader waits for, which goes first. A blob's file is removed as soon
as its reader closes it, and the spool once every blob has been read. The first failure stops
every download and is raised to whichever reader asks next; :meth:`Prefetcher.close` stops the
workers and removes the spool.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, cast

from sealift import compression
from sealift.digest import Digest
from sealift.errors import DigestMismatchError, SealiftError
from sealift.verify import CHUNK

DEFAULT_BUDGET = 1024**3
_POLL = 0.5  # seconds a waiting reader sleeps between checks, so Ctrl-C is never held up


@dataclass(frozen=True)
class PrefetchBlob:
    """A blob to fetch: ``open`` gives a stream of its bytes checked against digest and size."""

    digest: Digest
    size: int
    open: Callable[[], IO[bytes]]
    what: str


class _State(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    RELEASED = "released"


class _Spooled:
    def __init__(self, blob: PrefetchBlob, path: Path) -> None:
        self.blob = blob
        self.path = path
        self.state = _State.WAITING
        self.written = 0
        self.wanted = False


class Prefetcher:
    """Downloads ``blobs`` (in this order, a reader's blob first) ``parallel`` at a time."""

    def __init__(
        self, blobs: Sequence[PrefetchBlob], *, parallel: int, budget: int = DEFAULT_BUDGET
    ) -> None:
        base = os.environ.get("SEALIFT_TMPDIR") or None
        root = Path(tempfile.mkdtemp(prefix="sealift-pull-", dir=base))
        self._remove_spool = weakref.finalize(self, shutil.rmtree, root, ignore_errors=True)
        self._blobs: dict[Digest, _Spooled] = {}
        for blob in blobs:
            self._blobs.setdefault(blob.digest, _Spooled(blob, root / blob.digest.encoded))
        self._budget = budget
        self._reserved = 0
        self._failure: BaseException | None = None
        self._stopping = False
        self._lock = threading.Condition()
        count = min(max(parallel, 1), len(self._blobs))
        self._workers = [
            threading.Thread(target=self._work, name=f"sealift-pull-{i}", daemon=True)
            for i in range(count)
        ]
        for worker in self._workers:
            worker.start()

    # ------------------------------------------------------------------------------- readers
    def open(self, digest: Digest) -> IO[bytes] | None:
        """The blob's bytes as they arrive, or None when it is not (or no longer) fetched here:
        a blob is spooled for one reader, and a second read streams from the registry."""
        with self._lock:
            spooled = self._blobs.get(digest)
            if spooled is None or spooled.state is _State.RELEASED or spooled.wanted:
                return None
            spooled.wanted = True
            self._lock.notify_all()
        return cast(IO[bytes], _SpoolReader(self, spooled))

    def _available(self, spooled: _Spooled, offset: int) -> int:
        """How many bytes of the blob are spooled, once more than ``offset`` are; raises the
        first failure of any download."""
        with self._lock:
            while True:
                if self._failure is not None:
                    raise self._failure
                if spooled.written > offset:
                    return spooled.written
                if self._stopping:
                    raise SealiftError(f"{spooled.blob.what}: the download was stopped")
                self._lock.wait(_POLL)

    def _release(self, spooled: _Spooled) -> None:
        with self._lock:
            if spooled.state is not _State.WAITING:
                self._reserved -= spooled.blob.size
            spooled.state = _State.RELEASED
            finished = all(s.state is _State.RELEASED for s in self._blobs.values())
            self._stopping = self._stopping or finished
            self._lock.notify_all()
        spooled.path.unlink(missing_ok=True)
        if finished:
            self._remove_spool()

    # ------------------------------------------------------------------------------- workers
    def _work(self) -> None:
        while (spooled := self._next()) is not None:
            try:
                self._download(spooled)
            except BaseException as exc:  # handed to the reader, whatever it is
                with self._lock:
                    if self._failure is None and not self._stopping:
                        self._failure = exc
                    self._stopping = True
                    self._lock.notify_all()
                return

    def _next(self) -> _Spooled | None:
        """The next blob to download (waiting for room in the budget), or None: all started,
        or stopping."""
        with self._lock:
            while not self._stopping:
                waiting = [s for s in self._blobs.values() if s.state is _State.WAITING]
                if not waiting:
                    return None
                chosen = next((s for s in waiting if s.wanted), waiting[0])
                size = chosen.blob.size
                if chosen.wanted or not self._reserved or self._reserved + size <= self._budget:
                    chosen.state = _State.RUNNING
                    self._reserved += size
                    return chosen
                self._lock.wait()
            return None

    def _download(self, spooled: _Spooled) -> None:
        blob = spooled.blob
        buffer = memoryview(bytearray(CHUNK))
        with spooled.path.open("wb", buffering=0) as out, blob.open() as stream:
            compression.ensure_room(out, blob.size, blob.what)
            readinto = cast(io.RawIOBase, stream).readinto
            while n := readinto(buffer):
                with self._lock:
                    if self._stopping or spooled.state is _State.RELEASED:
                        return
                _write_all(out, buffer[:n], blob.what)
                with self._lock:
                    spooled.written += n
                    self._lock.notify_all()
        if spooled.written != blob.size:
            raise DigestMismatchError(
                f"{blob.what}: ended after {spooled.written} bytes, expected {blob.size}"
            )
        with self._lock:
            if spooled.state is _State.RUNNING:
                spooled.state = _State.DONE

    def close(self) -> None:
        """Stop every download and remove the spool (blobs being read included)."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for worker in self._workers:
            worker.join(timeout=_POLL)
        self._remove_spool()


def _write_all(out: IO[bytes], data: memoryview, what: str) -> None:
    try:
        while data:
            data = data[out.write(data) or 0 :]
    except OSError as exc:
        raise SealiftError(f"{what}: cannot spool the download: {exc.strerror or exc}") from exc


class _SpoolReader(io.RawIOBase):
    """One blob's spool file, read as it grows; closing it removes the file."""

    def __init__(self, owner: Prefetcher, spooled: _Spooled) -> None:
        self._owner = owner
        self._spooled = spooled
        self._offset = 0
        self._fd: int | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = self._spooled.blob.size
        if self._offset >= size or not len(buffer):
            return 0
        available = self._owner._available(self._spooled, self._offset)
        if self._fd is None:
            self._fd = os.open(self._spooled.path, os.O_RDONLY)
        wanted = min(len(buffer), available - self._offset)
        n = os.preadv(self._fd, [memoryview(buffer)[:wanted]], self._offset)
        self._offset += n
        return n

    def close(self) -> None:
        if not self.closed:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._owner._release(self._spooled)
        super().close()
