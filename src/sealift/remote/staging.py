"""The staging directory: layers received, kept uncompressed until every digest checks.

``$XDG_CACHE_HOME/sealift/staging`` (``~/.cache/sealift/staging``) holds, per layer diff_id:

* ``<hex>.partial``: the uncompressed bytes received so far (its length is the resume offset);
* ``<hex>``: a complete layer whose content hashed to the diff_id.

Several receivers may share one staging directory at once (two pushes to two engines on one
host, two CI jobs): a receiver holds an exclusive lock on a ``.partial`` file while it appends to
it, and a second receiver of the same layer waits for that lock, then appends only what is still
missing (or nothing, when the layer is complete by then). Every receiver leases the layers it
plans for (a shared lock on ``<hex>.lease``, :meth:`Staging.hold`) until it is done;
:meth:`Staging.discard` removes only layers no other receiver has leased. Files untouched for
longer than SEALIFT_STAGING_TTL seconds (default a week) are removed when a receiver starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

import zstandard

from sealift import compression
from sealift.digest import Digest, Hasher
from sealift.errors import DigestMismatchError, InvalidArchiveError, SealiftError, TransportError
from sealift.verify import CHUNK

DEFAULT_TTL = 7 * 24 * 3600


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sealift" / "staging"


class Staging:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else default_root()
        self._leases: dict[Digest, IO[bytes]] = {}

    def ensure(self) -> Staging:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise SealiftError(f"cannot create staging directory {self.root}: {exc}") from exc
        return self

    def complete_path(self, diff_id: Digest) -> Path:
        return self.root / diff_id.hex

    def partial_path(self, diff_id: Digest) -> Path:
        return self.root / f"{diff_id.hex}.partial"

    def close(self) -> None:
        """Let go of every layer leased (without removing any)."""
        for file in self._leases.values():
            file.close()
        self._leases.clear()

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def hold(self, diff_id: Digest) -> bool:
        """Lease the layer, so no other receiver removes it until this one discards it; return
        whether it is complete here."""
        self._lease(diff_id)
        return self.complete_path(diff_id).is_file()

    def _lease(self, diff_id: Digest) -> None:
        if diff_id in self._leases:
            return
        self.ensure()
        path = self._lease_path(diff_id)
        while True:
            file = path.open("ab")
            fcntl.flock(file.fileno(), fcntl.LOCK_SH)
            if _still_named(file, path):
                self._leases[diff_id] = cast(IO[bytes], file)
                return
            file.close()  # its last user removed it as we opened it: take a new one

    def _lease_path(self, diff_id: Digest) -> Path:
        return self.root / f"{diff_id.hex}.lease"

    def offset(self, diff_id: Digest) -> int:
        try:
            return self.partial_path(diff_id).stat().st_size
        except FileNotFoundError:
            return 0

    def size(self, diff_id: Digest) -> int:
        return self.complete_path(diff_id).stat().st_size

    def expire(self, ttl: float | None = None) -> int:
        """Remove staging files older than ``ttl`` seconds; return how many."""
        if ttl is None:
            ttl = float(os.environ.get("SEALIFT_STAGING_TTL", DEFAULT_TTL))
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - ttl
        removed = 0
        for path in self.root.iterdir():
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    def discard(self, diff_ids: list[Digest]) -> None:
        """Let go of these layers; remove those no other receiver has leased."""
        for diff_id in diff_ids:
            lease = self._leases.pop(diff_id, None)
            if lease is not None:
                lease.close()
            path = self._lease_path(diff_id)
            try:
                file = path.open("ab")
            except FileNotFoundError:
                continue
            with file:
                try:
                    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # another receiver still needs it; it removes it when done
                if _still_named(file, path):
                    self.complete_path(diff_id).unlink(missing_ok=True)
                    self.partial_path(diff_id).unlink(missing_ok=True)
                    path.unlink()

    def receive(self, diff_id: Digest, offset: int, codec: str, stream: IO[bytes]) -> int:
        """Append the layer bytes from ``offset`` on (``stream``, compressed with ``codec``).

        Another receiver of the same layer is waited for; what it appended meanwhile is not
        appended twice (the incoming bytes it covers are only read). The whole layer is hashed;
        when it matches ``diff_id`` it becomes complete (and held), otherwise the partial file
        is removed and DigestMismatchError raised. If ``stream`` breaks, what arrived stays in
        the partial file for the next attempt. Returns bytes appended.
        """
        self._lease(diff_id)
        what = f"layer {diff_id}"
        incoming = decoded(stream, codec, what)
        file = self._lock_partial(diff_id)
        if file is None:  # another receiver completed it while we waited
            for _ in incoming:
                pass
            return 0
        with file:
            have = file.seek(0, os.SEEK_END)
            if have < offset:
                raise TransportError(
                    f"{what}: staging holds {have} bytes but the sender resumed at {offset}"
                )
            hasher = _hash_prefix(self.partial_path(diff_id), have)
            appended = 0
            for chunk in _skipping(incoming, have - offset):
                file.write(chunk)
                hasher.update(chunk)
                appended += len(chunk)
            file.flush()
            if hasher.digest() != diff_id:
                self.partial_path(diff_id).unlink(missing_ok=True)
                raise DigestMismatchError(f"{what}: uncompressed content is {hasher.digest()}")
            self.partial_path(diff_id).replace(self.complete_path(diff_id))
        return appended

    def _lock_partial(self, diff_id: Digest) -> IO[bytes] | None:
        """The partial file, opened for appending and locked (waiting for another receiver);
        None when the layer is complete."""
        path = self.partial_path(diff_id)
        while not self.complete_path(diff_id).exists():
            file = path.open("ab")
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            if _still_named(file, path):
                return cast(IO[bytes], file)
            file.close()  # the receiver we waited for completed it, or gave up: look again
        return None

    def open(self, diff_id: Digest) -> IO[bytes]:
        return cast(IO[bytes], self.complete_path(diff_id).open("rb"))


def _still_named(file: IO[bytes], path: Path) -> bool:
    """Whether ``path`` still names the file open as ``file`` (not removed or replaced)."""
    try:
        return path.stat().st_ino == os.fstat(file.fileno()).st_ino
    except FileNotFoundError:
        return False


def _skipping(chunks: Iterator[bytes], count: int) -> Iterator[bytes]:
    """``chunks`` without their first ``count`` bytes."""
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:]
        count = 0


def _hash_prefix(path: Path, size: int) -> Hasher:
    hasher = Hasher()
    with path.open("rb") as file:
        remaining = size
        while remaining > 0:
            chunk = file.read(min(CHUNK, remaining))
            if not chunk:
                break
            hasher.update(chunk)
            remaining -= len(chunk)
    return hasher


def decoded(stream: IO[bytes], codec: str, what: str) -> Iterator[bytes]:
    """``stream`` decompressed, each piece yielded as soon as it is decoded.

    Unlike a buffered reader, nothing decoded is held back when ``stream`` breaks: every byte
    that arrived intact reaches the staging file. Output is capped against decompression bombs.
    """
    guard = compression.ExpansionGuard(what)
    counted = _Counting(stream)
    expanded = 0
    try:
        if codec == compression.NONE:
            while data := counted.read(CHUNK):
                yield data
            return
        if codec == compression.ZSTD:
            reader = zstandard.ZstdDecompressor().stream_reader(
                cast(IO[bytes], counted), read_size=_PIECE, read_across_frames=True, closefd=False
            )
            while data := reader.read1(CHUNK):
                expanded += len(data)
                guard.check(counted.count, expanded)
                yield data
            return
        if codec == compression.GZIP:
            inflater = zlib.decompressobj(wbits=31)
            while piece := counted.read(_PIECE):
                while piece:
                    data = inflater.decompress(piece, CHUNK)
                    piece = inflater.unconsumed_tail
                    expanded += len(data)
                    guard.check(counted.count, expanded)
                    yield data
            tail = inflater.flush()
            if tail:
                yield tail
            if not inflater.eof:
                raise InvalidArchiveError(f"{what}: gzip stream ends early")
            return
    except (zstandard.ZstdError, zlib.error) as exc:
        raise InvalidArchiveError(f"{what}: corrupt {codec} data ({exc})") from exc
    raise InvalidArchiveError(f"{what}: unknown wire compression {codec!r}")


_PIECE = 128 * 1024


class _Counting:
    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        return data
