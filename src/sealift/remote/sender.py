"""The sending side: offer images, then stream the layers the other side asks for.

A layer is sent from the offset the receiver already holds: the sender reads the layer's
uncompressed content, skips that many bytes, and compresses the rest as one new stream (a new
zstd frame), so a resumed layer costs only what had not arrived. To a receiver that keeps blobs
(protocol 3, ``need.blobs``) a compressed layer crosses as its raw blob from the offset instead,
so its digest, and the manifest naming it, survive.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, cast

import zstandard

from sealift import compression
from sealift.blobs import BlobStore, make_spool_dir
from sealift.digest import Digest
from sealift.ends.base import WriteResult, all_layers
from sealift.errors import InvalidArchiveError, UsageError
from sealift.model import Entry, Image, Layer
from sealift.remote.protocol import Channel, Need, configs_json, manifests_json
from sealift.streams import CountingReader
from sealift.transfer import CopyOptions, prepare
from sealift.verify import CHUNK

WIRE_CHUNK = 1024 * 1024
WIRE_CODECS = (compression.ZSTD, compression.GZIP, compression.NONE)


def single_images(entries: list[Entry]) -> list[tuple[Image, Entry]]:
    """Each entry's one image (multi-platform entries must be narrowed with --platform);
    attestations beside it are not images, and engines never get them."""
    result = []
    for entry in entries:
        images = list(entry.without_attestations().images())
        if len(images) != 1:
            names = ", ".join(tag.familiar for tag in entry.tags) or "an image"
            raise UsageError(
                f"{names} has {len(images)} platforms: choose one with --platform os/arch"
            )
        result.append((images[0], entry))
    return result


def configs_for(entries: list[Entry], need: Need) -> dict[str, str]:
    """The config bytes (base64, by image ID) of the images the receiver will load."""
    wanted = set(need.configs)
    return configs_json(
        {
            image.id: image.config.raw
            for image, _ in single_images(entries)
            if str(image.id) in wanted
        }
    )


def manifests_for(entries: list[Entry], need: Need) -> dict[str, str]:
    """The exact manifest bytes (base64, by image ID) of the images the receiver will load,
    for a receiver that keeps blobs (protocol 3)."""
    if not need.blobs:
        return {}
    wanted = set(need.configs)
    return manifests_json(
        {
            image.id: image.manifest.raw
            for image, _ in single_images(entries)
            if str(image.id) in wanted and image.manifest is not None
        }
    )


def layers_by_diff_id(entries: list[Entry]) -> dict[Digest, Layer]:
    return {layer.diff_id: layer for image, _ in single_images(entries) for layer in image.layers}


class _StandInSink:
    """A sink for :func:`prepare` alone: it takes the layers of ``codecs`` as they are, so prepare
    converts only the others (to uncompressed)."""

    keeps_blobs = True

    def __init__(self, codecs: frozenset[str]) -> None:
        self.codecs = codecs

    def accepts_codec(self, codec: str) -> bool:
        return codec in self.codecs

    def missing_layers(self, entries: list[Entry]) -> set[Digest]:
        return all_layers(entries)

    def write(self, entries: list[Entry]) -> WriteResult:  # pragma: no cover - never called
        raise NotImplementedError


def with_manifests(entries: list[Entry]) -> list[Entry]:
    """The entries with final manifests (as a source that stored none needs), layers as they are."""
    every_codec = frozenset(compression.LAYER_CODECS)
    with make_spool_dir() as spool:
        return prepare(
            entries,
            _StandInSink(every_codec),
            BlobStore(Path(spool)),
            CopyOptions(compression=None),
        )


def without_zstd(entries: list[Entry], spool: Path) -> list[Entry]:
    """The entries as an engine that reads no zstd layers (Docker before 23) can load them: zstd
    layers uncompressed (decompressed as they are read where their size is recorded, else
    through ``spool``), manifests rebuilt to match."""
    readable = frozenset({compression.NONE, compression.GZIP})
    return prepare(entries, _StandInSink(readable), BlobStore(spool), CopyOptions(compression=None))


def uncompressed_size(layer: Layer) -> int | None:
    """The layer's uncompressed size when it is stored uncompressed (else unknown)."""
    return layer.size if layer.codec == compression.NONE else None


def send_layers(
    channel: Channel,
    entries: list[Entry],
    need: Need,
    codec: str,
    level: int | None = None,
    on_bytes: Callable[[int, int], None] | None = None,
) -> int:
    """Stream every needed layer; return how many were sent."""
    layers = layers_by_diff_id(entries)
    for diff_id, offset in need.layers.items():
        layer = layers.get(diff_id)
        if layer is None:
            raise InvalidArchiveError(f"the receiver asked for layer {diff_id}, never offered")
        send_needed_layer(channel, layer, offset, need.blobs, codec, level, on_bytes)
    return len(need.layers)


def send_needed_layer(
    channel: Channel,
    layer: Layer,
    offset: int,
    blobs: bool,
    codec: str,
    level: int | None = None,
    on_bytes: Callable[[int, int], None] | None = None,
) -> None:
    """Send a layer as its raw blob when the receiver keeps blobs and the blob is compressed
    (compressing it again would save little), else as its content compressed for the wire."""
    if blobs and layer.digest != layer.diff_id:
        send_blob(channel, layer, offset, on_bytes)
    else:
        send_layer(channel, layer, offset, codec, level, on_bytes)


def send_blob(
    channel: Channel,
    layer: Layer,
    offset: int,
    on_bytes: Callable[[int, int], None] | None = None,
) -> None:
    """Send a layer's stored blob bytes from ``offset`` as they are (protocol 3)."""
    channel.send(
        {
            "t": "layer",
            "diff_id": str(layer.diff_id),
            "digest": str(layer.digest),
            "offset": offset,
            "codec": compression.NONE,
        }
    )
    what = layer.label or f"layer {layer.diff_id}"
    total = offset
    with layer.open() as stored:
        _skip(stored, offset, what, seek=True)
        while frame := stored.read(WIRE_CHUNK):
            channel.send({"t": "c"}, frame)
            total += len(frame)
            if on_bytes is not None:
                on_bytes(len(frame), len(frame))
    channel.send({"t": "end", "size": total})
    channel.flush()


def _skip(stream: IO[bytes], count: int, what: str, *, seek: bool) -> None:
    """Move ``count`` bytes on: by seeking a stored file, else by reading (a decoder)."""
    if count and seek and stream.seekable():
        stream.seek(count)
        return
    while count > 0:
        skipped = stream.read(min(CHUNK, count))
        if not skipped:
            raise InvalidArchiveError(f"{what} is shorter than the receiver's staged copy")
        count -= len(skipped)


def send_layer(
    channel: Channel,
    layer: Layer,
    offset: int,
    codec: str,
    level: int | None = None,
    on_bytes: Callable[[int, int], None] | None = None,
) -> None:
    """Send one layer from ``offset``; ``on_bytes(wire, raw)`` after each frame."""
    channel.send({"t": "layer", "diff_id": str(layer.diff_id), "offset": offset, "codec": codec})
    total = offset
    with uncompressed_content(layer, offset) as content:
        reported = 0
        for frame in compressed_frames(content, codec, level):
            channel.send({"t": "c"}, frame)
            if on_bytes is not None:
                on_bytes(len(frame), content.count - reported)
                reported = content.count
        total += content.count
    channel.send({"t": "end", "size": total})
    channel.flush()


@contextlib.contextmanager
def uncompressed_content(layer: Layer, offset: int) -> Iterator[CountingReader]:
    """The layer's uncompressed bytes from ``offset`` on."""
    what = layer.label or f"layer {layer.diff_id}"
    with layer.open() as stored:
        stream: IO[bytes]
        if layer.codec == compression.NONE:
            stream = stored
        else:
            stream = compression.open_decompressed(stored, layer.codec, what)
        _skip(stream, offset, what, seek=layer.codec == compression.NONE)
        yield CountingReader(stream)


def compressed_frames(content: CountingReader, codec: str, level: int | None) -> Iterator[bytes]:
    compressor: zstandard.ZstdCompressionObj | zlib._Compress | None
    if codec == compression.ZSTD:
        compressor = zstandard.ZstdCompressor(
            level=level or compression.DEFAULT_LEVEL[codec], threads=-1, write_checksum=True
        ).compressobj()
    elif codec == compression.GZIP:
        compressor = zlib.compressobj(level or compression.DEFAULT_LEVEL[codec], wbits=31)
    elif codec == compression.NONE:
        compressor = None
    else:
        raise UsageError(f"unknown wire compression {codec!r}")
    pending = bytearray()
    reader = cast(IO[bytes], content)
    while data := reader.read(CHUNK):
        pending += compressor.compress(data) if compressor is not None else data
        while len(pending) >= WIRE_CHUNK:
            yield bytes(pending[:WIRE_CHUNK])
            del pending[:WIRE_CHUNK]
    if compressor is not None:
        pending += compressor.flush()
    while pending:
        yield bytes(pending[:WIRE_CHUNK])
        del pending[:WIRE_CHUNK]
