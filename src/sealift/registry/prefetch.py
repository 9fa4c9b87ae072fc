"""Blobs downloaded ahead of the copy that reads them: several at once, each kept in memory or
a spool file that its reader follows while it grows.

A copy reads layers one after another (a tar is written in order, a layout's blobs are added in
order), so a source that opened each blob only when asked would download one blob at a time.
:class:`Prefetcher` is told which blobs will be read, in about which order, and downloads them
on ``parallel`` worker threads. A reader asking for a blob gets its bytes as they land, without
waiting for the whole blob.

Each download is a stream that checks its digest and size (the read that would complete a bad
blob raises instead), so a reader never gets the last bytes of a blob that does not match.

Bounds: at most ``parallel`` downloads at once. Downloaded bytes not yet read stay in memory up
to ``memory`` bytes in all (a reader frees them as it goes); past that, the rest of a blob goes
to a file in a private spool directory. A download starts only while the blobs fetched and not
yet read fit in ``budget`` bytes (one always may, so a blob larger than the budget still moves),
except the one a reader waits for, which goes first. A blob's file is removed as soon as its
reader closes it, and the spool once every blob has been read. The first failure stops every
download and is raised to whichever reader asks next; :meth:`Prefetcher.close` stops the
workers and removes the spool.
"""

from __future__ import annotations

import collections
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
"""Bytes fetched ahead and not yet read, in memory and on disk."""
DEFAULT_MEMORY = 128 * 1024**2
"""Of those, the bytes kept in memory; the rest of a blob is spooled to disk."""
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


class _Fetched:
    """One blob's downloaded bytes: chunks in memory from ``memory_start``, then (once memory
    ran short) a spool file holding the bytes from ``spilled_from`` on."""

    def __init__(self, blob: PrefetchBlob, path: Path) -> None:
        self.blob = blob
        self.path = path
        self.state = _State.WAITING
        self.written = 0
        self.wanted = False
        self.chunks: collections.deque[memoryview] = collections.deque()
        self.memory_start = 0
        self.spilled_from: int | None = None


class Prefetcher:
    """Downloads ``blobs`` (in this order, a reader's blob first) ``parallel`` at a time."""

    def __init__(
        self,
        blobs: Sequence[PrefetchBlob],
        *,
        parallel: int,
        budget: int = DEFAULT_BUDGET,
        memory: int = DEFAULT_MEMORY,
    ) -> None:
        base = os.environ.get("SEALIFT_TMPDIR") or None
        root = Path(tempfile.mkdtemp(prefix="sealift-pull-", dir=base))
        self._remove_spool = weakref.finalize(self, shutil.rmtree, root, ignore_errors=True)
        self._blobs: dict[Digest, _Fetched] = {}
        for blob in blobs:
            self._blobs.setdefault(blob.digest, _Fetched(blob, root / blob.digest.encoded))
        self._budget = budget
        self._reserved = 0
        self._memory = memory
        self._in_memory = 0
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
        a blob is fetched for one reader, and a second read streams from the registry."""
        with self._lock:
            fetched = self._blobs.get(digest)
            if fetched is None or fetched.state is _State.RELEASED or fetched.wanted:
                return None
            fetched.wanted = True
            self._lock.notify_all()
        return cast(IO[bytes], _Reader(self, fetched))

    def _wait_for(self, fetched: _Fetched, offset: int) -> None:
        """Return once the blob's bytes past ``offset`` have begun to arrive; raise the first
        failure of any download."""
        with self._lock:
            while True:
                if self._failure is not None:
                    raise self._failure
                if fetched.written > offset:
                    return
                if self._stopping:
                    raise SealiftError(f"{fetched.blob.what}: the download was stopped")
                self._lock.wait(_POLL)

    def _take_from_memory(self, fetched: _Fetched, offset: int, buffer: memoryview) -> int:
        """Copy bytes at ``offset`` (which are in memory) into ``buffer``; free used chunks."""
        with self._lock:
            chunk = fetched.chunks[0]
            skip = offset - fetched.memory_start
            n = min(len(buffer), len(chunk) - skip)
            buffer[:n] = chunk[skip : skip + n]
            if skip + n == len(chunk):
                fetched.chunks.popleft()
                fetched.memory_start += len(chunk)
                self._in_memory -= len(chunk)
            return n

    def _release(self, fetched: _Fetched) -> None:
        with self._lock:
            if fetched.state is not _State.WAITING:
                self._reserved -= fetched.blob.size
            self._in_memory -= sum(len(chunk) for chunk in fetched.chunks)
            fetched.chunks.clear()
            fetched.state = _State.RELEASED
            finished = all(f.state is _State.RELEASED for f in self._blobs.values())
            self._stopping = self._stopping or finished
            self._lock.notify_all()
        fetched.path.unlink(missing_ok=True)
        if finished:
            self._remove_spool()

    # ------------------------------------------------------------------------------- workers
    def _work(self) -> None:
        while (fetched := self._next()) is not None:
            try:
                self._download(fetched)
            except _StoppedError:
                continue
            except BaseException as exc:  # handed to the reader, whatever it is
                with self._lock:
                    if self._failure is None and not self._stopping:
                        self._failure = exc
                    self._stopping = True
                    self._lock.notify_all()
                return

    def _next(self) -> _Fetched | None:
        """The next blob to download (waiting for room in the budget), or None: all started,
        or stopping."""
        with self._lock:
            while not self._stopping:
                waiting = [f for f in self._blobs.values() if f.state is _State.WAITING]
                if not waiting:
                    return None
                chosen = next((f for f in waiting if f.wanted), waiting[0])
                size = chosen.blob.size
                if chosen.wanted or not self._reserved or self._reserved + size <= self._budget:
                    chosen.state = _State.RUNNING
                    self._reserved += size
                    return chosen
                self._lock.wait()
            return None

    def _download(self, fetched: _Fetched) -> None:
        blob = fetched.blob
        with contextlib.ExitStack() as stack:
            stream = cast(io.RawIOBase, stack.enter_context(blob.open()))
            spool: IO[bytes] | None = None
            while True:
                chunk = memoryview(bytearray(CHUNK))
                n = stream.readinto(chunk)
                if not n:
                    break
                if self._keep_in_memory(fetched, chunk[:n]):
                    continue
                if spool is None:
                    spool = stack.enter_context(fetched.path.open("wb", buffering=0))
                    compression.ensure_room(spool, blob.size - fetched.written, blob.what)
                _write_all(spool, chunk[:n], blob.what)
                with self._lock:
                    fetched.written += n
                    self._lock.notify_all()
        if fetched.written != blob.size:
            raise DigestMismatchError(
                f"{blob.what}: ended after {fetched.written} bytes, expected {blob.size}"
            )
        with self._lock:
            if fetched.state is _State.RUNNING:
                fetched.state = _State.DONE

    def _keep_in_memory(self, fetched: _Fetched, chunk: memoryview) -> bool:
        """Keep ``chunk`` in memory if there is room and the blob has not spilled to disk yet;
        False when it must go to the spool file. Raises _StoppedError when nobody wants it now."""
        with self._lock:
            if self._stopping or fetched.state is _State.RELEASED:
                raise _StoppedError
            if fetched.spilled_from is None and self._in_memory + len(chunk) <= self._memory:
                fetched.chunks.append(chunk)
                self._in_memory += len(chunk)
                fetched.written += len(chunk)
                self._lock.notify_all()
                return True
            if fetched.spilled_from is None:
                fetched.spilled_from = fetched.written
            return False

    def close(self) -> None:
        """Stop every download and remove the spool (blobs being read included)."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for worker in self._workers:
            worker.join(timeout=_POLL)
        self._remove_spool()


class _StoppedError(Exception):
    """A download nobody needs any more (stopping, or its reader is gone)."""


def _write_all(out: IO[bytes], data: memoryview, what: str) -> None:
    try:
        while data:
            data = data[out.write(data) or 0 :]
    except OSError as exc:
        raise SealiftError(f"{what}: cannot spool the download: {exc.strerror or exc}") from exc


class _Reader(io.RawIOBase):
    """One blob's fetched bytes, read as they arrive; closing it frees them."""

    def __init__(self, owner: Prefetcher, fetched: _Fetched) -> None:
        self._owner = owner
        self._fetched = fetched
        self._offset = 0
        self._fd: int | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        fetched = self._fetched
        if self._offset >= fetched.blob.size or not len(buffer):
            return 0
        self._owner._wait_for(fetched, self._offset)
        spilled_from = fetched.spilled_from
        if spilled_from is None or self._offset < spilled_from:
            n = self._owner._take_from_memory(fetched, self._offset, memoryview(buffer))
        else:
            if self._fd is None:
                self._fd = os.open(fetched.path, os.O_RDONLY)
            wanted = min(len(buffer), fetched.written - self._offset)
            view = memoryview(buffer)[:wanted]
            n = os.preadv(self._fd, [view], self._offset - spilled_from)
        self._offset += n
        return n

    def close(self) -> None:
        if not self.closed:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._owner._release(self._fetched)
        super().close()
