"""Split media: one archive as numbered parts (``stack.tar.000``, ``.001``, ...) and a sidecar.

The parts are the archive's bytes cut at fixed sizes, so ``cat stack.tar.[0-9][0-9][0-9]`` gives
the archive back byte for byte and plain ``docker load`` still reads it. The sidecar
``stack.tar.parts.json`` lists every part's size and sha256: a part that is missing, truncated,
changed, swapped with another or left over from another bundle is named before its bytes are
used. A signature (``stack.tar.sig``) covers the parts' bytes in order; checking it also checks
the sidecar against those same bytes, so the sidecar is covered too.

Writing streams with bounded memory into temp files beside the target; the whole set is put in
place at the end, or removed on any failure or interruption.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from sealift.errors import NotFoundError, SealiftError, UsageError
from sealift.progress import human_size

MAX_PARTS = 1000
SIDECAR_SUFFIX = ".parts.json"
SIGNATURE_SUFFIX = ".sig"
FORMAT = "sealift-parts/1"
FAT32_LIMIT = 4 * 1024**3 - 1
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"(\d+)\s*([KMGT]?)(iB|B)?", re.IGNORECASE)
_PART_NAME = re.compile(r"(.+)\.(\d{3})")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024


class PartError(SealiftError):
    """A part of a split archive is missing, truncated, changed, out of order or unexpected.

    Not an InvalidArchiveError on purpose: archive readers keep a layer's decoding error for
    later and read on, while a bad part must end the read at once, naming the part.
    """


def parse_size(text: str) -> int:
    """``700M`` -> 700 MiB, ``4G`` -> 4 GiB (K, M, G, T are binary units; ``KiB`` etc. too);
    ``fat32`` -> the largest file FAT32 holds (4 GiB - 1 byte)."""
    cleaned = text.strip()
    if cleaned.lower() == "fat32":
        return FAT32_LIMIT
    match = _SIZE.fullmatch(cleaned)
    if match is None:
        raise UsageError(f"invalid size {text!r}: use a number with K, M, G or T, e.g. 700M or 4G")
    number, unit, suffix = match.groups()
    if suffix is not None and suffix.lower() == "b" and unit:
        raise UsageError(
            f"ambiguous size {text!r}: sizes are binary, say {number}{unit.upper()} "
            f"or {number}{unit.upper()}iB"
        )
    if suffix is not None and suffix.lower() == "ib" and not unit:
        raise UsageError(f"invalid size {text!r}: use a number with K, M, G or T")
    size = int(number) * _UNITS[unit.upper()]
    if size < 1:
        raise UsageError(f"invalid size {text!r}: a part holds at least 1 byte")
    return size


@dataclass(frozen=True)
class Part:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PartsIndex:
    """The sidecar: what the parts of ``archive`` are, in order."""

    archive: str
    part_size: int
    parts: tuple[Part, ...]

    @property
    def total_size(self) -> int:
        return sum(part.size for part in self.parts)

    def to_json(self) -> bytes:
        document = {
            "format": FORMAT,
            "archive": self.archive,
            "part_size": self.part_size,
            "total_size": self.total_size,
            "parts": [{"name": p.name, "size": p.size, "sha256": p.sha256} for p in self.parts],
        }
        return (json.dumps(document, indent=2) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes, archive: str, where: str) -> PartsIndex:
        """Read and check a sidecar for ``archive`` (its base name); any oddity is an error."""
        try:
            document = json.loads(raw)
            index = cls._from_document(document, archive)
        except (ValueError, TypeError, KeyError) as exc:
            raise PartError(f"{where} is not a valid parts list ({exc})") from exc
        return index

    @classmethod
    def _from_document(cls, document: Any, archive: str) -> PartsIndex:
        if document.get("format") != FORMAT:
            raise ValueError(f"format is {document.get('format')!r}, expected {FORMAT!r}")
        if document["archive"] != archive:
            raise ValueError(f"it describes {document['archive']!r}, not {archive!r}")
        part_size = _positive(document["part_size"], "part_size")
        parts = tuple(_part(item) for item in document["parts"])
        if not parts or len(parts) > MAX_PARTS:
            raise ValueError(f"it lists {len(parts)} parts")
        for number, part in enumerate(parts):
            if part.name != part_name(archive, number):
                raise ValueError(f"part {number} is named {part.name!r}")
            last = number == len(parts) - 1
            if part.size > part_size or (not last and part.size != part_size):
                raise ValueError(f"{part.name} has size {part.size} with parts of {part_size}")
        if document.get("total_size") != sum(p.size for p in parts):
            raise ValueError("total_size is not the sum of the parts")
        return cls(archive, part_size, parts)


def _positive(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} is {value!r}")
    return value


def _part(item: Any) -> Part:
    size, sha256 = item["size"], item["sha256"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"a part has size {size!r}")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError(f"a part has sha256 {sha256!r}")
    return Part(str(item["name"]), size, sha256)


def part_name(archive: str, number: int) -> str:
    return f"{archive}.{number:03d}"


@dataclass(frozen=True)
class SplitArchive:
    """Where a split archive lives: ``base`` is ``stack.tar``, whose parts sit beside it."""

    base: Path

    @property
    def sidecar(self) -> Path:
        return self.base.with_name(self.base.name + SIDECAR_SUFFIX)

    def part(self, number: int) -> Path:
        return self.base.with_name(part_name(self.base.name, number))

    def read_index(self) -> PartsIndex:
        try:
            raw = self.sidecar.read_bytes()
        except FileNotFoundError as exc:
            raise PartError(
                f"{self.sidecar} is missing: it lists the parts of {self.base}; copy it "
                f"beside them, or join them yourself: cat {self.base}.[0-9]* > {self.base}"
            ) from exc
        except OSError as exc:
            raise SealiftError(f"cannot read {self.sidecar}: {exc.strerror}") from exc
        return PartsIndex.parse(raw, self.base.name, str(self.sidecar))

    def existing_parts(self) -> list[int]:
        """Numbers of the ``base.NNN`` files present, sorted."""
        numbers = []
        for path in self.base.parent.iterdir():
            match = _PART_NAME.fullmatch(path.name)
            if match is not None and match.group(1) == self.base.name:
                numbers.append(int(match.group(2)))
        return sorted(numbers)


def find_split(path: str | Path) -> SplitArchive | None:
    """The split archive ``path`` names, or None when it names something else.

    ``stack.tar`` names one when no such file exists but its sidecar or first part does;
    ``stack.tar.000`` (or any part) and ``stack.tar.parts.json`` name one when the sidecar or a
    second part exists (a lone ``stack.tar.000`` is read as the whole archive it is).
    """
    given = Path(path)
    if given.name.endswith(SIDECAR_SUFFIX):
        return SplitArchive(given.with_name(given.name.removesuffix(SIDECAR_SUFFIX)))
    match = _PART_NAME.fullmatch(given.name)
    if match is not None:
        candidate = SplitArchive(given.with_name(match.group(1)))
        if candidate.sidecar.exists() or candidate.part(1).exists():
            return candidate
        return None
    if given.exists():
        return None
    candidate = SplitArchive(given)
    if candidate.sidecar.exists() or candidate.part(0).exists():
        return candidate
    return None


def open_parts(path: str | Path | SplitArchive) -> JoinedReader:
    """A reader of the whole archive over its parts, each checked against the sidecar: sizes
    and presence at once, content as each part ends."""
    split = path if isinstance(path, SplitArchive) else find_split(path)
    if split is None:
        raise NotFoundError(f"{path} is not a split archive (no {path}{SIDECAR_SUFFIX})")
    return JoinedReader(split, split.read_index())


class JoinedReader(io.RawIOBase):
    """The parts of a split archive read as one stream, checked part by part."""

    def __init__(self, split: SplitArchive, index: PartsIndex) -> None:
        self.split = split
        self.index = index
        _check_present(split, index)
        self._number = 0
        self._file: IO[bytes] | None = None
        self._hasher = hashlib.sha256()
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self._number < len(self.index.parts):
            part = self.index.parts[self._number]
            stream = self._current()
            n = stream.readinto(buffer)  # type: ignore[attr-defined]
            if n:
                self._read += n
                if self._read > part.size:
                    raise PartError(f"{self.split.part(self._number)} grew while being read")
                self._hasher.update(memoryview(buffer)[:n])
                return int(n)
            self._finish_part(part)
        return 0

    def _current(self) -> IO[bytes]:
        if self._file is None:
            path = self.split.part(self._number)
            try:
                self._file = path.open("rb", buffering=0)
            except OSError as exc:
                raise PartError(f"cannot read {path}: {exc.strerror}") from exc
        return self._file

    def _finish_part(self, part: Part) -> None:
        path = self.split.part(self._number)
        if self._read != part.size:
            raise PartError(f"{path} is truncated: {self._read} of {part.size} bytes")
        actual = self._hasher.hexdigest()
        if actual != part.sha256:
            raise PartError(_mismatch(path, actual, part, self.index))
        assert self._file is not None
        self._file.close()
        self._file = None
        self._number += 1
        self._hasher = hashlib.sha256()
        self._read = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


def _check_present(split: SplitArchive, index: PartsIndex) -> None:
    """Every listed part present with its listed size, and no unlisted part beside them."""
    for number, part in enumerate(index.parts):
        path = split.part(number)
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise PartError(
                f"{path} is missing: {split.base} has {len(index.parts)} parts"
            ) from exc
        if size < part.size:
            raise PartError(f"{path} is truncated: {size} of {part.size} bytes")
        if size > part.size:
            raise PartError(f"{path} is longer than listed: {size} bytes, expected {part.size}")
    extra = [n for n in split.existing_parts() if n >= len(index.parts)]
    if extra:
        raise PartError(
            f"{split.part(extra[0])} is not listed in {split.sidecar} "
            f"({split.base} has {len(index.parts)} parts): a leftover of another archive?"
        )


def _mismatch(path: Path, actual: str, part: Part, index: PartsIndex) -> str:
    for other in index.parts:
        if other.sha256 == actual and other is not part:
            listed = f"{_sidecar_name(index)} lists as {other.name}"
            return f"{path} holds what {listed}: parts out of order"
    return f"{path} changed: its sha256 is {actual}, {_sidecar_name(index)} lists {part.sha256}"


def _sidecar_name(index: PartsIndex) -> str:
    return index.archive + SIDECAR_SUFFIX


def drain(stream: IO[bytes]) -> None:
    """Read ``stream`` to its end (so that a joined reader checks its last part)."""
    while stream.read(_CHUNK):
        pass


# ----------------------------------------------------------------------------------- writing
class SplitWriter(io.RawIOBase):
    """Writes one stream as parts of at most ``part_size`` bytes, into temp files beside
    ``base``; ``commit`` puts the whole set (and its sidecar) in place, ``discard`` removes it."""

    def __init__(self, base: Path, part_size: int) -> None:
        if part_size < 1:
            raise UsageError("a part holds at least 1 byte")
        self.split = SplitArchive(base)
        self.part_size = part_size
        self._temps: list[Path] = []
        self._parts: list[Part] = []
        self._file: IO[bytes] | None = None
        self._hasher = hashlib.sha256()
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        while view:
            if self._file is None or self._written == self.part_size:
                self._next_part()
            assert self._file is not None
            piece = view[: self.part_size - self._written]
            self._file.write(piece)
            self._hasher.update(piece)
            self._written += len(piece)
            view = view[len(piece) :]
        return len(data)

    def _next_part(self) -> None:
        self._end_part()
        number = len(self._temps)
        if number >= MAX_PARTS:
            raise UsageError(
                f"parts of {human_size(self.part_size)} would be more than {MAX_PARTS}: "
                "choose a larger part size"
            )
        name = part_name(self.split.base.name, number)
        fd, temp = _temp_file(self.split.base.parent, name)
        self._temps.append(temp)
        self._file = os.fdopen(fd, "wb")

    def _end_part(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        name = part_name(self.split.base.name, len(self._parts))
        self._parts.append(Part(name, self._written, self._hasher.hexdigest()))
        self._hasher = hashlib.sha256()
        self._written = 0

    def commit(self) -> PartsIndex:
        """Put every part and the sidecar in place, replacing any earlier archive of this name
        (a single file, other parts, its sidecar and its now stale signature)."""
        if not self._temps:
            self._next_part()
        self._end_part()
        index = PartsIndex(self.split.base.name, self.part_size, tuple(self._parts))
        fd, sidecar_temp = _temp_file(self.split.base.parent, self.split.sidecar.name)
        self._temps.append(sidecar_temp)
        with os.fdopen(fd, "wb") as sidecar:
            sidecar.write(index.to_json())
        self._remove_previous(len(index.parts))
        placed: list[Path] = []
        try:
            for number, temp in enumerate(self._temps[:-1]):
                temp.replace(self.split.part(number))
                placed.append(self.split.part(number))
            sidecar_temp.replace(self.split.sidecar)
        except BaseException:
            for path in placed:
                path.unlink(missing_ok=True)
            raise
        self._temps.clear()
        return index

    def _remove_previous(self, count: int) -> None:
        base = self.split.base
        for path in (
            self.split.sidecar,
            base.with_name(base.name + SIGNATURE_SUFFIX),
            *(self.split.part(n) for n in self.split.existing_parts() if n >= count),
        ):
            path.unlink(missing_ok=True)
        if base.is_file() or base.is_symlink():
            base.unlink()

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for temp in self._temps:
            temp.unlink(missing_ok=True)
        self._temps.clear()

    def close(self) -> None:
        self.discard()
        super().close()


def _temp_file(directory: Path, name: str) -> tuple[int, Path]:
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".partial")
    except FileNotFoundError as exc:
        raise UsageError(f"cannot write {name}: directory {directory} does not exist") from exc
    except OSError as exc:
        raise SealiftError(f"cannot write {directory / name}: {exc.strerror}") from exc
    os.fchmod(fd, 0o644 & ~_umask())
    return fd, Path(temp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_split(
    base: Path, part_size: int, write: Callable[[IO[bytes]], None], size: int | None = None
) -> PartsIndex:
    """Write what ``write`` writes as parts of ``base``: all of them, or (on any error or
    Ctrl-C) none. With ``size`` known, the part count and free space are checked first."""
    if base.is_dir():
        raise UsageError(f"{base} is a directory; name an archive file")
    if size is not None:
        _check_part_count(size, part_size)
        check_free_space(base, size)
    writer = SplitWriter(base, part_size)
    try:
        write(cast(IO[bytes], writer))
        return writer.commit()
    except OSError as exc:
        raise SealiftError(f"cannot write {base}: {exc.strerror or exc}") from exc
    finally:
        writer.close()


def _check_part_count(size: int, part_size: int) -> None:
    count = max(1, -(-size // part_size))
    if count > MAX_PARTS:
        raise UsageError(
            f"{human_size(size)} in parts of {human_size(part_size)} makes {count} parts, "
            f"more than {MAX_PARTS}: choose a larger part size"
        )


def check_free_space(target: Path, size: int) -> None:
    """Refuse, saying how much is needed, when ``target``'s directory cannot hold ``size``."""
    directory = target.parent if str(target.parent) else Path()
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return  # a missing directory is reported by the write itself
    if free < size:
        raise SealiftError(
            f"not enough space in {directory}: {target.name} needs {human_size(size)}, "
            f"{human_size(free)} free"
        )
