"""A cache of compressed layers, so a layer sealift compressed once is never compressed again.

An entry is keyed by (diff_id, codec, level) and names a compressed blob by its digest::

    ROOT/blobs/sha256/<hex>                      compressed blobs, content-addressed
    ROOT/entries/<codec>-<level>/<diff hex>.json  {diff_id, codec, level, digest, size,
                                                   uncompressed_size}; its mtime is the last use
    ROOT/tmp/                                    files being written; private pins of a process

ROOT is ``SEALIFT_CACHE_DIR``, else ``$XDG_CACHE_HOME/sealift/layers`` (``~/.cache/...``).
Everything is written to a temp file and renamed into place, so several processes can share the
cache: a reader sees a whole entry or none. A blob is verified when it is used: it is first
hard-linked into a private pin directory (so a concurrent prune cannot take it away), then hashed;
one that no longer hashes to its recorded digest is dropped and the layer is compressed again.
The cache stays under a bound (``SEALIFT_CACHE_MAX``, binary units, e.g. ``20G``; default 10 GiB,
or a tenth of the disk when that is less), evicting the least recently used entries first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sealift import compression
from sealift.digest import Digest, Hasher
from sealift.errors import InvalidArchiveError, UsageError
from sealift.split import parse_size
from sealift.verify import CHUNK

DEFAULT_MAX = 10 * 1024**3
STALE_AFTER = 24 * 3600
"""Temp files, pins and unreferenced blobs older than this (seconds) belong to no live process."""
_DISK_SHARE = 10


@dataclass(frozen=True)
class Key:
    diff_id: Digest
    codec: str
    level: int

    @classmethod
    def of(cls, diff_id: Digest, codec: str, level: int | None) -> Key:
        """The key for ``level`` as asked (None: the codec's default, which is the same blob)."""
        effective = level if level is not None else compression.DEFAULT_LEVEL.get(codec, 0)
        return cls(diff_id, codec, effective)


@dataclass(frozen=True)
class CachedLayer:
    """A compressed layer from the cache: its blob's digest and sizes, and where to read it."""

    key: Key
    digest: Digest
    size: int
    uncompressed_size: int
    path: Path
    last_used: float = 0.0

    def open(self) -> IO[bytes]:
        return self.path.open("rb")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stored: int = 0
    dropped: int = 0
    """Entries refused on use: their blob was missing or no longer matched its digest."""


def default_root() -> Path:
    configured = os.environ.get("SEALIFT_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sealift" / "layers"


def parse_max(text: str) -> int:
    """``20G`` -> 20 GiB (binary units, as ``--split``); ``0`` keeps nothing."""
    return 0 if text.strip() == "0" else parse_size(text)


def default_max(root: Path) -> int:
    """SEALIFT_CACHE_MAX, else 10 GiB or a tenth of the disk the cache is on, whichever is less."""
    configured = os.environ.get("SEALIFT_CACHE_MAX")
    if configured:
        try:
            return parse_max(configured)
        except UsageError as exc:
            raise UsageError(f"SEALIFT_CACHE_MAX: {exc}") from exc
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        disk = shutil.disk_usage(existing).total
    except OSError:
        return DEFAULT_MAX
    return min(DEFAULT_MAX, disk // _DISK_SHARE)


def disabled_by_environment() -> bool:
    return os.environ.get("SEALIFT_NO_CACHE", "").strip().lower() not in ("", "0", "false", "no")


class LayerCache:
    """The cache at ``root``, bounded to ``max_bytes``. Thread safe; close it to drop its pins."""

    def __init__(self, root: Path | None = None, max_bytes: int | None = None) -> None:
        self.root = root if root is not None else default_root()
        self.max_bytes = max_bytes if max_bytes is not None else default_max(self.root)
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._pins: dict[Key, CachedLayer] = {}
        self._pin_dir: Path | None = None

    def get(self, diff_id: Digest, codec: str, level: int | None) -> CachedLayer | None:
        """The verified cached layer for this key, counted as a hit; None (a miss) otherwise."""
        found = self.pin(Key.of(diff_id, codec, level))
        with self._lock:
            if found is None:
                self.stats.misses += 1
            else:
                self.stats.hits += 1
        return found

    def find_any(self, diff_id: Digest) -> CachedLayer | None:
        """The layer compressed with whatever codec and level the cache holds it, verified and
        pinned (e.g. a patch's base, read instead of exporting an image); neither a hit nor a
        miss in the stats, which count layers sent."""
        for directory in sorted((self.root / "entries").glob("*-*")):
            codec, _, level = directory.name.rpartition("-")
            if codec in compression.LAYER_CODECS and level.lstrip("-").isdigit():
                found = self.pin(Key(diff_id, codec, int(level)))
                if found is not None:
                    return found
        return None

    def write_uncompressed(self, diff_id: Digest, path: Path) -> bool:
        """Write the layer's uncompressed tar to ``path`` from whatever copy the cache holds
        (:meth:`find_any`), checked against ``diff_id``; False, and no file, when the cache
        lacks it or its content is not that layer."""
        cached = self.find_any(diff_id)
        if cached is None:
            return False
        hasher = Hasher()
        with cached.open() as stored, path.open("wb") as out:
            content = compression.open_decompressed(stored, cached.key.codec, f"cached {diff_id}")
            while chunk := content.read(CHUNK):
                hasher.update(chunk)
                out.write(chunk)
        if hasher.digest() != diff_id:
            path.unlink()
            return False
        return True

    def pin(self, key: Key) -> CachedLayer | None:
        """Hold this key's blob for the life of this object, verified; None if it is not cached
        (or no longer matches its digest: then the entry is dropped)."""
        with self._lock:
            if key in self._pins:
                return self._pins[key]
        entry = self._read_entry(key)
        if entry is None:
            return None
        pinned = self._pin_blob(entry)
        if pinned is None:
            self._drop(key, entry.digest)
            return None
        _touch(self._entry_path(key))
        with self._lock:
            return self._pins.setdefault(key, pinned)

    def put(
        self,
        diff_id: Digest,
        codec: str,
        level: int | None,
        blob: Path,
        digest: Digest,
        uncompressed_size: int,
    ) -> None:
        """Remember ``blob`` (already verified by the caller) as the layer for this key. ``blob``
        may be hard-linked, so it must never be changed in place afterwards (spool files are
        not). Never fails the caller's work: a cache that cannot be written is not filled."""
        key = Key.of(diff_id, codec, level)
        try:
            size = blob.stat().st_size
            if size > self.max_bytes:
                return
            self._store_blob(blob, digest)
            self._write_entry(key, digest, size, uncompressed_size)
            with self._lock:
                self.stats.stored += 1
            self.evict(self.max_bytes)
        except OSError:
            return

    def entries(self) -> list[CachedLayer]:
        """Every entry, least recently used first."""
        found: list[CachedLayer] = []
        for path in self._entry_files():
            entry = self._parse_entry(path)
            if entry is not None:
                found.append(entry)
        return sorted(found, key=lambda entry: entry.last_used)

    def total_size(self) -> int:
        """Bytes the cache's blobs take."""
        return sum(_size_or_zero(path) for path in self._blob_files())

    def evict(self, max_bytes: int) -> int:
        """Drop least recently used entries until the blobs take at most ``max_bytes``; remove
        leftovers of dead processes. Returns the bytes freed."""
        with self._exclusive():
            before = self.total_size()
            self._remove_stale()
            entries = self.entries()
            referenced: dict[Digest, int] = {}
            for entry in entries:
                referenced[entry.digest] = referenced.get(entry.digest, 0) + 1
            total = self.total_size()
            for entry in entries:
                if total <= max_bytes:
                    break
                _unlink(self._entry_path(entry.key))
                referenced[entry.digest] -= 1
                if referenced[entry.digest] == 0:
                    total -= _size_or_zero(entry.path)
                    _unlink(entry.path)
            return before - self.total_size()

    def clear(self) -> int:
        """Drop every entry and blob; returns the bytes freed."""
        freed = self.evict(-1)
        with self._exclusive():
            for path in self._blob_files():
                freed += _size_or_zero(path)
                _unlink(path)
        return freed

    def close(self) -> None:
        with self._lock:
            self._pins.clear()
            pin_dir, self._pin_dir = self._pin_dir, None
        if pin_dir is not None:
            shutil.rmtree(pin_dir, ignore_errors=True)

    def __enter__(self) -> LayerCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # layout

    def _entry_path(self, key: Key) -> Path:
        return self.root / "entries" / f"{key.codec}-{key.level}" / f"{key.diff_id.encoded}.json"

    def _blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.encoded

    def _entry_files(self) -> list[Path]:
        return sorted((self.root / "entries").glob("*/*.json"))

    def _blob_files(self) -> list[Path]:
        return [path for path in (self.root / "blobs").glob("*/*") if not path.name.startswith(".")]

    def _temp_dir(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # entries

    def _read_entry(self, key: Key) -> CachedLayer | None:
        entry = self._parse_entry(self._entry_path(key))
        if entry is None or entry.key != key:
            return None
        return entry

    def _parse_entry(self, path: Path) -> CachedLayer | None:
        try:
            raw = path.read_bytes()
            last_used = path.stat().st_mtime
        except OSError:
            return None
        try:
            document = json.loads(raw)
            key = Key(
                Digest.parse(document["diff_id"]), str(document["codec"]), int(document["level"])
            )
            digest = Digest.parse(document["digest"])
            size, uncompressed = int(document["size"]), int(document["uncompressed_size"])
        except (ValueError, KeyError, TypeError, InvalidArchiveError):
            _unlink(path)  # an entry nobody can use: not even a dead process finishes it
            return None
        return CachedLayer(key, digest, size, uncompressed, self._blob_path(digest), last_used)

    def _write_entry(self, key: Key, digest: Digest, size: int, uncompressed_size: int) -> None:
        document: dict[str, Any] = {
            "diff_id": str(key.diff_id),
            "codec": key.codec,
            "level": key.level,
            "digest": str(digest),
            "size": size,
            "uncompressed_size": uncompressed_size,
        }
        path = self._entry_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._temp_file() as (file, temp):
            file.write(json.dumps(document, indent=1).encode())
            file.close()
            temp.replace(path)

    def _drop(self, key: Key, digest: Digest) -> None:
        _unlink(self._entry_path(key))
        _unlink(self._blob_path(digest))
        with self._lock:
            self.stats.dropped += 1

    # blobs

    def _store_blob(self, source: Path, digest: Digest) -> None:
        final = self._blob_path(digest)
        if final.exists():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        with self._temp_file() as (file, temp):
            file.close()
            temp.unlink()
            try:
                os.link(source, temp)
            except OSError:
                shutil.copyfile(source, temp)
            temp.replace(final)

    def _pin_blob(self, entry: CachedLayer) -> CachedLayer | None:
        """Hard-link the blob into this process's pin directory and check it there: the checked
        file is then the one used, whatever another process does to the cache meanwhile."""
        pinned = self._pin_directory() / entry.digest.encoded
        try:
            with contextlib.suppress(FileExistsError):
                try:
                    os.link(entry.path, pinned)
                except FileNotFoundError:
                    return None
                except OSError:
                    shutil.copyfile(entry.path, pinned)
            if _hash_file(pinned) != (entry.digest, entry.size):
                _unlink(pinned)
                return None
        except OSError:
            return None
        return CachedLayer(
            entry.key, entry.digest, entry.size, entry.uncompressed_size, pinned, entry.last_used
        )

    def _pin_directory(self) -> Path:
        with self._lock:
            if self._pin_dir is None:
                self._pin_dir = Path(tempfile.mkdtemp(prefix="pins-", dir=self._temp_dir()))
            return self._pin_dir

    @contextlib.contextmanager
    def _temp_file(self) -> Iterator[tuple[IO[bytes], Path]]:
        fd, name = tempfile.mkstemp(prefix="incoming-", dir=self._temp_dir())
        temp = Path(name)
        try:
            with os.fdopen(fd, "wb") as file:
                yield file, temp
        finally:
            _unlink(temp)

    # housekeeping

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One evictor at a time across processes (readers and writers need no lock)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _remove_stale(self) -> None:
        cutoff = time.time() - STALE_AFTER
        own = self._pin_dir
        for path in (self.root / "tmp").glob("*"):
            if path != own and _mtime(path) < cutoff:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    _unlink(path)
        named = {entry.digest.encoded for entry in self.entries()}
        for path in self._blob_files():
            if path.name not in named and _mtime(path) < cutoff:
                _unlink(path)


def _hash_file(path: Path) -> tuple[Digest, int]:
    hasher = Hasher()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            hasher.update(chunk)
    return hasher.digest(), hasher.size


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
