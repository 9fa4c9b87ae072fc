"""The layer pipeline: read a stored layer once, hashing it, its uncompressed content, and
(optionally) writing it recompressed.

One pass does all of it: the stored bytes are hashed (the blob digest), decompressed and hashed
again (the diff_id), and either copied or fed to a multi-threaded compressor.
"""

from __future__ import annotations

import io
from typing import IO, cast

from sealift import compression, media
from sealift.digest import Digest, Hasher
from sealift.errors import DigestMismatchError, InvalidArchiveError, LimitExceededError
from sealift.model import Layer
from sealift.verify import CHUNK


class _Tee(io.RawIOBase):
    """Reads ``source``, hashing every byte and copying it to ``copy`` when given; refuses to
    read more than ``limit`` bytes (the blob's declared size)."""

    def __init__(
        self,
        source: IO[bytes],
        copy: IO[bytes] | None,
        hasher: Hasher | None,
        limit: tuple[int, str] | None = None,
    ) -> None:
        self._source = source
        self._copy = copy
        self.hasher = hasher
        self._limit = limit
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n: int = self._source.readinto(buffer)  # type: ignore[attr-defined]
        self.count += n
        if self._limit is not None and self.count > self._limit[0]:
            size, what = self._limit
            raise DigestMismatchError(f"{what}: more than the declared {size} bytes")
        if n:
            data = buffer[:n]
            if self.hasher is not None:
                self.hasher.update(data)
            if self._copy is not None:
                self._copy.write(data)
        return n


_BLOCK = 512
_ROOM_STEP = 64 * 1024 * 1024
_ZERO_BLOCK = bytes(_BLOCK)
_NO_DATA_TYPES = frozenset(b"123456")


class TarShape:
    """Checks, as the bytes stream past, that a layer's content is a tar archive.

    Only headers are looked at (checksum, size), so the cost is one small step per file; the
    data in between is skipped. It catches a layer that is not a tar at all, and one that stops
    inside a header or a file.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._position = 0
        self._next_header = 0
        self._header = bytearray()
        self._zero_blocks = 0

    def feed(self, chunk: memoryview) -> None:
        i, n = 0, len(chunk)
        while i < n and self._zero_blocks < 2:
            if self._position < self._next_header:
                step = min(n - i, self._next_header - self._position)
            else:
                step = min(n - i, _BLOCK - len(self._header))
                self._header += chunk[i : i + step]
            i += step
            self._position += step
            if len(self._header) == _BLOCK:
                self._read_header(bytes(self._header))
                self._header.clear()

    def _read_header(self, header: bytes) -> None:
        self._next_header = self._position
        if header == _ZERO_BLOCK:
            self._zero_blocks += 1
            return
        self._zero_blocks = 0
        stored = _octal(header[148:156])
        unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored != unsigned and (stored is None or stored != _signed_checksum(header)):
            raise InvalidArchiveError(
                f"{self.what}: the layer is not a tar archive (bad header at byte "
                f"{self._position - _BLOCK})"
            )
        if header[156] not in _NO_DATA_TYPES:
            size = _tar_size(header[124:136])
            self._next_header += -(-size // _BLOCK) * _BLOCK

    def finish(self) -> None:
        if self._header or self._position < self._next_header:
            raise InvalidArchiveError(f"{self.what}: the layer's tar archive is truncated")


def _signed_checksum(header: bytes) -> int:
    """The checksum some old tar writers computed over signed bytes."""
    signed = [b - 256 if b > 127 else b for b in header[:148] + header[156:]]
    return sum(signed) + 8 * 32


def _octal(field: bytes) -> int | None:
    text = field.split(b"\0", 1)[0].strip(b" \0")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        return None


def _tar_size(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    size = _octal(field)
    return size if size is not None else 0


class LayerDigester:
    """Computes a layer's blob digest and diff_id in one pass, optionally transcoding it.

    With ``target`` set (and different from ``codec``), the uncompressed content is written to
    ``out`` compressed with ``target``; otherwise the stored bytes are copied to ``out`` as is.
    """

    def __init__(
        self,
        codec: str,
        what: str,
        *,
        target: str | None = None,
        level: int | None = None,
        expected_digest: Digest | None = None,
        check_tar: bool = True,
        declared_size: int | None = None,
        recorded_size: int | None = None,
    ) -> None:
        self.codec = codec
        self.what = what
        self.expected_digest = expected_digest
        self.check_tar = check_tar
        self.declared_size = declared_size
        """The blob's size from its descriptor: reading past it stops at once."""
        self.recorded_size = recorded_size
        """The uncompressed size recorded beside the layer: decompressing past it stops at once."""
        self.target = target if target != codec else None
        self.level = level
        self.raw_digest: Digest | None = None
        self.raw_size = 0
        self.diff_id: Digest | None = None
        self.uncompressed_size = 0

    def run(self, stream: IO[bytes], out: IO[bytes] | None) -> None:
        diff = Hasher()
        # an uncompressed layer's blob digest is its diff_id: hash it once
        raw = diff if self.codec == compression.NONE else Hasher()
        limit = None if self.declared_size is None else (self.declared_size, self.what)
        tee = _Tee(
            stream, out if self.target is None else None, None if raw is diff else raw, limit
        )
        compressor = (
            compression.open_compressor(out, self.target, self.level)
            if self.target is not None and out is not None
            else None
        )
        try:
            if self.codec == compression.NONE:
                self._pump(tee, diff, compressor, out)
            else:
                guard = compression.ExpansionGuard(self.what, self.recorded_size)
                reader = compression.DecompressingReader(
                    cast(IO[bytes], tee), self.codec, self.what, guard
                )
                try:
                    self._pump(reader, diff, compressor, out)
                except LimitExceededError:
                    raise
                except InvalidArchiveError as exc:
                    self._explain_corruption(tee, raw, exc)
                    raise
                while tee.read(CHUNK):  # trailing bytes after the compressed stream still count
                    pass
            if compressor is not None:
                compressor.close()
        except BaseException:
            if compressor is not None:
                compression.abort_compressor(compressor)
            raise
        finally:
            self.raw_digest, self.raw_size = raw.digest(), raw.size
        self.diff_id, self.uncompressed_size = diff.digest(), diff.size

    def _explain_corruption(self, tee: _Tee, raw: Hasher, error: InvalidArchiveError) -> None:
        """Data that does not decompress is usually a blob that is not what its digest says:
        finish hashing it and report that, naming both digests, rather than the codec's error."""
        if self.expected_digest is None:
            return
        while tee.read(CHUNK):
            pass
        actual = raw.digest()
        if actual != self.expected_digest:
            raise DigestMismatchError(
                f"{self.what}: blob digest is {actual}, expected {self.expected_digest}"
            ) from error

    def _pump(
        self,
        reader: io.RawIOBase,
        diff: Hasher,
        compressor: IO[bytes] | None,
        out: IO[bytes] | None,
    ) -> None:
        shape = TarShape(self.what) if self.check_tar else None
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        unchecked = _ROOM_STEP  # check the disk before the first write too
        while n := reader.readinto(view):
            chunk = view[:n]
            diff.update(chunk)
            if shape is not None:
                shape.feed(chunk)
            if compressor is not None:
                if unchecked >= _ROOM_STEP:
                    # the output's final size is unknown: whatever it grows to, leave room
                    compression.ensure_room(out, _ROOM_STEP, self.what)
                    unchecked = 0
                unchecked += n
                compressor.write(chunk)
        if shape is not None:
            shape.finish()


def check_layer(
    *,
    what: str,
    expected_digest: Digest | None,
    expected_size: int | None,
    expected_diff_id: Digest,
    digester: LayerDigester,
) -> None:
    """Raise DigestMismatchError, naming ``what`` and both digests, unless the layer matches."""
    if expected_size is not None and digester.raw_size != expected_size:
        raise DigestMismatchError(
            f"{what}: blob is {digester.raw_size} bytes, expected {expected_size}"
        )
    if expected_digest is not None and digester.raw_digest != expected_digest:
        raise DigestMismatchError(
            f"{what}: blob digest is {digester.raw_digest}, expected {expected_digest}"
        )
    if digester.diff_id != expected_diff_id:
        raise DigestMismatchError(
            f"{what}: uncompressed content is {digester.diff_id}, "
            f"expected diff_id {expected_diff_id}"
        )


def copy_verified(layer: Layer, source: IO[bytes], out: IO[bytes] | None, what: str) -> None:
    """Read a stored layer from ``source`` (copying it to ``out`` if given) and check that it
    matches its descriptor's digest and size and its diff_id."""
    digester = LayerDigester(
        layer.codec,
        what,
        expected_digest=layer.digest,
        check_tar=not layer.opaque,
        declared_size=layer.size,
        recorded_size=None
        if layer.opaque
        else media.uncompressed_size(layer.descriptor.annotations),
    )
    digester.run(source, out)
    check_layer(
        what=what,
        expected_digest=layer.digest,
        expected_size=layer.size,
        expected_diff_id=layer.diff_id,
        digester=digester,
    )
