"""Exact blobs rebuilt from content: the recipe that recompresses a layer into its very blob.

A patch (protocol 2) rebuilds a layer's uncompressed tar. A receiver that keeps blobs (protocol
3) needs the compressed blob the manifest names, byte for byte. sealift's own compressors are
deterministic for a given codec, level and library version (gzip: ISA-L up to level 3, zlib-ng
above, both threaded in fixed blocks and writing no name or mtime; zstd: the zstandard binding
with fixed parameters), so a blob sealift wrote can be written again from its content. Blobs
written by other tools (Docker's own gzip, for one) cannot: they keep crossing whole.

The sender finds the recipe by recompressing the layer itself and comparing digests; the
receiver follows it only when its library is the same, and checks the digest before staging.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any, cast

import zstandard

from sealift import compression
from sealift.digest import Digest
from sealift.errors import SealiftError
from sealift.model import Layer

_CHUNK = 1024 * 1024
RECOMPRESSIBLE = (compression.GZIP, compression.ZSTD)


@dataclass(frozen=True)
class BlobRecipe:
    """How to write ``digest`` from its layer's content: ``codec`` at ``level`` with
    ``library`` (see :func:`library_of`)."""

    digest: Digest
    codec: str
    level: int
    library: str

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": str(self.digest),
            "codec": self.codec,
            "level": self.level,
            "library": self.library,
        }

    @classmethod
    def parse(cls, value: Any) -> BlobRecipe:
        """Raises SealiftError for anything but a well-formed recipe of a known codec."""
        if not isinstance(value, dict):
            raise SealiftError("the blob recipe is not an object")
        codec, level, library = value.get("codec"), value.get("level"), value.get("library")
        if codec not in RECOMPRESSIBLE or not isinstance(library, str):
            raise SealiftError(f"unknown blob recipe codec {codec!r}")
        if not isinstance(level, int) or isinstance(level, bool):
            raise SealiftError(f"invalid blob recipe level {level!r}")
        compression.check_level(codec, level)
        return cls(Digest.parse(value.get("digest")), codec, level, library[:200])


def library_of(codec: str, level: int) -> str:
    """What, besides codec and level, decides the bytes :func:`compression.open_compressor`
    writes: the library (and its version) that compresses them."""
    if codec == compression.ZSTD:
        libzstd = ".".join(str(part) for part in zstandard.ZSTD_VERSION)
        return f"zstandard {zstandard.__version__} libzstd {libzstd}"
    if level <= compression.ISAL_MAX_LEVEL:
        import isal

        return f"isal {isal.__version__} threaded"
    import zlib_ng

    return f"zlib-ng {zlib_ng.__version__} threaded"


def write_blob(content: IO[bytes], codec: str, level: int, out: IO[bytes]) -> None:
    """Compress ``content`` into ``out`` as sealift writes layers."""
    writer = compression.open_compressor(out, codec, level)
    try:
        shutil.copyfileobj(content, writer, _CHUNK)
    except BaseException:
        compression.abort_compressor(writer)
        raise
    writer.close()


class _Hasher:
    """A writable that only hashes (and counts) what is written."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)

    def flush(self) -> None:
        return None


def recipe_for(layer: Layer, levels: Iterable[int]) -> BlobRecipe | None:
    """The recipe among sealift's compressors at ``levels`` that rewrites the layer's blob
    from its content, or None: each candidate costs one compression of the layer."""
    from sealift.remote.sender import uncompressed_content

    if layer.codec not in RECOMPRESSIBLE:
        return None
    for level in dict.fromkeys(levels):
        hasher = _Hasher()
        with uncompressed_content(layer, 0) as content:
            write_blob(cast(IO[bytes], content), layer.codec, level, cast(IO[bytes], hasher))
        if Digest.from_hex(hasher.hash.hexdigest()) == layer.digest:
            return BlobRecipe(layer.digest, layer.codec, level, library_of(layer.codec, level))
    return None
