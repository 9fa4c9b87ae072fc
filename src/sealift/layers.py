"""The layer pipeline: read a stored layer once, hashing it, its uncompressed content, and
(optionally) writing it recompressed.

One pass does all of it: the stored bytes are hashed (the blob digest), decompressed and hashed
again (the diff_id), and either copied or fed to a multi-threaded compressor.
"""

from __future__ import annotations

import io
from typing import IO, cast

from sealift import compression
from sealift.digest import Digest, Hasher
from sealift.errors import DigestMismatchError, InvalidArchiveError, LimitExceededError
from sealift.model import Layer
from sealift.verify import CHUNK


class _Tee(io.RawIOBase):
    """Reads ``source``, hashing every byte and copying it to ``copy`` when given."""

    def __init__(self, source: IO[bytes], copy: IO[bytes] | None, hasher: Hasher | None) -> None:
        self._source = source
        self._copy = copy
        self.hasher = hasher

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n: int = self._source.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            data = buffer[:n]
            if self.hasher is not None:
                self.hasher.update(data)
            if self._copy is not None:
                self._copy.write(data)
        return n


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
    ) -> None:
        self.codec = codec
        self.what = what
        self.expected_digest = expected_digest
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
        tee = _Tee(stream, out if self.target is None else None, None if raw is diff else raw)
        compressor = (
            compression.open_compressor(out, self.target, self.level)
            if self.target is not None and out is not None
            else None
        )
        try:
            if self.codec == compression.NONE:
                self._pump(tee, diff, compressor)
            else:
                reader = compression.DecompressingReader(
                    cast(IO[bytes], tee), self.codec, self.what
                )
                try:
                    self._pump(reader, diff, compressor)
                except LimitExceededError:
                    raise
                except InvalidArchiveError as exc:
                    self._explain_corruption(tee, raw, exc)
                    raise
                while tee.read(CHUNK):  # trailing bytes after the compressed stream still count
                    pass
            if compressor is not None:
                compressor.close()
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

    @staticmethod
    def _pump(reader: io.RawIOBase, diff: Hasher, compressor: IO[bytes] | None) -> None:
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while n := reader.readinto(view):
            chunk = view[:n]
            diff.update(chunk)
            if compressor is not None:
                compressor.write(chunk)


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


def sniff_codec(stream: IO[bytes], what: str) -> str:
    head = stream.read(compression.SNIFF_SIZE)
    codec = compression.sniff(head)
    if codec not in compression.LAYER_CODECS:
        raise InvalidArchiveError(f"{what} is compressed with {codec}, which layers may not use")
    return codec


def copy_verified(layer: Layer, source: IO[bytes], out: IO[bytes] | None, what: str) -> None:
    """Read a stored layer from ``source`` (copying it to ``out`` if given) and check that it
    matches its descriptor's digest and size and its diff_id."""
    digester = LayerDigester(layer.codec, what, expected_digest=layer.digest)
    digester.run(source, out)
    check_layer(
        what=what,
        expected_digest=layer.digest,
        expected_size=layer.size,
        expected_diff_id=layer.diff_id,
        digester=digester,
    )
