"""The paths a layer's tar holds, read from its headers alone.

Base selection compares layers by the paths they share, so it needs each layer's path set, and
reading it must cost little: only the 512-byte headers are parsed, the file data in between is
skipped (sought over in a file, passed over in a stream). GNU long names and PAX ``path``
records are followed; names are normalised (no leading ``./`` or ``/``, no trailing ``/``).
"""

from __future__ import annotations

import io
from typing import IO, Final

from sealift.errors import InvalidArchiveError, LimitExceededError

_BLOCK: Final = 512
_ZERO_BLOCK: Final = bytes(_BLOCK)
_CHUNK: Final = 1024 * 1024
_MAX_EXTENDED_HEADER: Final = 1024 * 1024
_GNU_LONG_NAME: Final = ord("L")
_PAX_HEADERS: Final = frozenset(b"xX")
_EXTENDED_TYPES: Final = frozenset(b"LxXg")
_NO_DATA_TYPES: Final = frozenset(b"123456")
_META_TYPES: Final = frozenset(b"LKxXg")


class TarPaths:
    """Collects paths as a tar streams past in chunks of any size: ``feed``, then ``finish``."""

    def __init__(self, what: str = "layer") -> None:
        self.what = what
        self.paths: set[str] = set()
        self._header = bytearray()
        self._skip = 0
        self._extended = bytearray()
        self._extended_left = 0
        self._extended_type = 0
        self._next_name: str | None = None
        self._ended = False
        self._offset = 0

    def feed(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while view and not self._ended:
            view = self._step(view)

    def _step(self, view: memoryview) -> memoryview:
        if self._extended_left:
            take = min(len(view), self._extended_left)
            self._extended += view[:take]
            self._extended_left -= take
            self._advance(take)
            if not self._extended_left:
                self._close_extended()
            return view[take:]
        if self._skip:
            take = min(len(view), self._skip)
            self._skip -= take
            self._advance(take)
            return view[take:]
        take = min(len(view), _BLOCK - len(self._header))
        self._header += view[:take]
        self._advance(take)
        if len(self._header) == _BLOCK:
            self._read_header(bytes(self._header))
            self._header.clear()
        return view[take:]

    def skippable(self) -> int:
        """How many bytes from here are file data, not headers (a reader may seek over them)."""
        return 0 if self._extended_left else self._skip

    def skipped(self, count: int) -> None:
        """``count`` bytes of file data were passed over without being fed."""
        if not 0 <= count <= self.skippable():
            raise ValueError("skipped more than the file data left")
        self._skip -= count
        self._advance(count)

    def _advance(self, count: int) -> None:
        self._offset += count

    def _read_header(self, header: bytes) -> None:
        if header == _ZERO_BLOCK:
            self._ended = True
            return
        _check_checksum(header, self.what, self._offset - _BLOCK)
        kind = header[156]
        size = 0 if kind in _NO_DATA_TYPES else _size(header[124:136], self.what)
        padded = -(-size // _BLOCK) * _BLOCK
        if kind in _EXTENDED_TYPES:
            if size > _MAX_EXTENDED_HEADER:
                raise LimitExceededError(
                    f"{self.what}: an extended tar header of {size} bytes (at most "
                    f"{_MAX_EXTENDED_HEADER})"
                )
            self._extended_type = kind
            self._extended_left = size
            self._skip = padded - size
            if not size:
                self._close_extended()
            return
        if kind not in _META_TYPES:
            name = self._next_name if self._next_name is not None else _ustar_name(header)
            self._add(name)
        self._next_name = None
        self._skip = padded

    def _close_extended(self) -> None:
        data = bytes(self._extended)
        self._extended.clear()
        if self._extended_type == _GNU_LONG_NAME:
            self._next_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif self._extended_type in _PAX_HEADERS:
            path = _pax_path(data, self.what)
            if path is not None:
                self._next_name = path

    def _add(self, name: str) -> None:
        normal = name.strip("/")
        while normal.startswith("./"):
            normal = normal[2:].lstrip("/")
        if normal and normal != ".":
            self.paths.add(normal)

    @property
    def ended(self) -> bool:
        """Whether the end-of-archive block has been seen."""
        return self._ended

    def finish(self) -> frozenset[str]:
        """The paths seen; InvalidArchiveError if the tar stopped inside a header or a file."""
        if not self._ended and (self._header or self._skip or self._extended_left):
            raise InvalidArchiveError(f"{self.what}: the tar archive is truncated")
        return frozenset(self.paths)


def list_tar_paths(stream: IO[bytes], what: str = "layer") -> frozenset[str]:
    """The normalised paths in the uncompressed tar ``stream`` (read from where it stands)."""
    lister = TarPaths(what)
    seekable = _seekable(stream)
    while True:
        skip = lister.skippable()
        if skip and seekable:
            stream.seek(skip, io.SEEK_CUR)
            lister.skipped(skip)
            continue
        chunk = stream.read(min(skip, _CHUNK) if skip else _BLOCK)
        if not chunk:
            break
        lister.feed(chunk)
        if lister.ended:
            break
    return lister.finish()


def _seekable(stream: IO[bytes]) -> bool:
    try:
        return stream.seekable()
    except (OSError, ValueError):
        return False


def _check_checksum(header: bytes, what: str, offset: int) -> None:
    stored = _octal(header[148:156])
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    signed = sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) + 8 * 32
    if stored is None or stored not in (unsigned, signed):
        raise InvalidArchiveError(f"{what}: not a tar archive (bad header at byte {offset})")


def _octal(field: bytes) -> int | None:
    text = field.split(b"\0", 1)[0].strip(b" \0")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        return None


def _size(field: bytes, what: str) -> int:
    if field[0] & 0x80:  # GNU base-256, for sizes of 8 GiB and more
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    size = _octal(field)
    if size is None:
        raise InvalidArchiveError(f"{what}: a tar header with a malformed size")
    return size


def _ustar_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _pax_path(data: bytes, what: str) -> str | None:
    """The ``path`` record of a PAX extended header, if it has one."""
    path = None
    position = 0
    while position < len(data):
        space = data.find(b" ", position)
        length_text = data[position:space] if space > 0 else b""
        if not length_text.isdigit() or int(length_text) <= space - position:
            raise InvalidArchiveError(f"{what}: a malformed PAX header")
        end = position + int(length_text)
        key, _, value = data[space + 1 : end - 1].partition(b"=")
        if key == b"path":
            path = value.decode("utf-8", "surrogateescape")
        position = end
    return path
