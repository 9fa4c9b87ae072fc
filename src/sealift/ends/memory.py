"""Images held in memory: a source and a sink for tests and for composing pipelines."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from sealift import compression, media
from sealift.digest import Digest, sha256_of
from sealift.ends.base import WriteResult, all_layers
from sealift.model import Descriptor, Entry, Image, ImageConfig, Layer, Manifest, canonical_json
from sealift.reference import Reference


@dataclass
class MemorySource:
    stored: list[Entry] = field(default_factory=list)

    def entries(self, want_codec: str | None = None, want_level: int | None = None) -> list[Entry]:
        return list(self.stored)

    def close(self) -> None:
        return None


@dataclass
class MemorySink:
    """Keeps what it is given, with every layer's bytes read (and so verified) into memory."""

    written: list[Entry] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    codecs: tuple[str, ...] = compression.LAYER_CODECS

    keeps_blobs = True

    def accepts_codec(self, codec: str) -> bool:
        return codec in self.codecs

    def missing_layers(self, entries: list[Entry]) -> set[Digest]:
        return {digest for digest in all_layers(entries) if str(digest) not in self.blobs}

    def write(self, entries: list[Entry]) -> WriteResult:
        from sealift.formats.write import copy_blob, planned_blobs

        for blob in planned_blobs(entries):
            out = io.BytesIO()
            copy_blob(blob, out, f"blob {blob.digest}")
            self.blobs[str(blob.digest)] = out.getvalue()
        self.written.extend(entries)
        return WriteResult(names=[str(tag) for entry in entries for tag in entry.tags])


def image_from_layers(
    layer_tars: list[bytes], tags: tuple[str, ...] = (), architecture: str = "amd64"
) -> Entry:
    """An uncompressed single-platform image built from layer tars, for tests and examples."""
    diff_ids = [str(sha256_of(data)) for data in layer_tars]
    raw_config = canonical_json(
        {
            "architecture": architecture,
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    )
    config = ImageConfig.parse(raw_config)
    layers = tuple(
        Layer(
            Descriptor(media.OCI_LAYER, sha256_of(data), len(data)),
            sha256_of(data),
            compression.NONE,
            lambda data=data: io.BytesIO(data),  # type: ignore[misc]
        )
        for data in layer_tars
    )
    manifest = Manifest.build(
        Descriptor(media.OCI_CONFIG, config.digest, len(raw_config)),
        [layer.descriptor for layer in layers],
    )
    return Entry(Image(config, layers, manifest), tuple(Reference.parse(t) for t in tags))
