"""The two small protocols every place images come from or go to implements.

The contract between :func:`sealift.transfer.copy` and a sink, in call order:

1. ``accepts_codec(codec)`` for each layer codec: may the layer go as it is? A sink that keeps
   blobs (``keeps_blobs``: an archive, a layout, a registry, a sealift agent, an engine with the
   containerd image store) takes every codec it can store, so manifests and their digests arrive
   byte-identical; one that cannot (Docker < 23 and zstd) gets the layer adapted.
2. ``missing_layers(entries)``: which layers (by blob digest) the sink lacks, for the whole batch
   at once. Every sink answers, each by what it really holds: a layout or archive by digest, an
   engine by layer chain, a remote host by what its engine and staging hold, a registry by HEAD.
   The copy prepares (reads, transcodes, verifies) only those; the rest are never read.
3. ``write(entries)``: take the missing blobs, each verified as it arrives and stored atomically
   (a partial blob never becomes visible), then manifests and indexes (children before parents),
   and make names (tags, ref names) visible last. A failure leaves no name pointing at anything
   incomplete; it may leave whole, verified blobs behind, which a later write reuses.

``write`` is called once per sink; sinks are not shared between threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sealift.digest import Digest
from sealift.model import Entry


class Source(Protocol):
    """Where images come from: an archive, a layout, an engine, a remote host.

    A source may also have ``will_read(digests)``, which the copy calls once it knows which
    layers it will read (the ones the sink lacks, in the order sinks write them), before it
    reads any: a registry starts downloading them, several at once, ahead of the sink.
    """

    def entries(self, want_codec: str | None = None, want_level: int | None = None) -> list[Entry]:
        """Every named image the source holds.

        ``want_codec`` (at ``want_level``) is a hint: a source that must spool its input anyway
        may store layers already compressed with it, so the copy does not recompress them later.
        """
        ...

    def close(self) -> None: ...


@dataclass
class WriteResult:
    """What a sink did: names it wrote or tagged, and layers it did not need."""

    names: list[str] = field(default_factory=list)
    layers_sent: int = 0
    layers_skipped: int = 0
    bytes_sent: int = 0
    details: dict[str, object] = field(default_factory=dict)
    images: list[dict[str, object]] = field(default_factory=list)
    """Filled in by the copy: per entry, its names, image IDs and manifest or index digest."""


class Sink(Protocol):
    """Where images go. See the module docstring for the contract and its call order."""

    @property
    def keeps_blobs(self) -> bool:
        """Whether blobs are stored as given, so manifest and index digests survive."""
        ...

    def accepts_codec(self, codec: str) -> bool:
        """Whether the sink can take layers compressed with ``codec`` as they are."""
        ...

    def missing_layers(self, entries: list[Entry]) -> set[Digest]:
        """The blob digests of the layers of ``entries`` the sink lacks."""
        ...

    def write(self, entries: list[Entry]) -> WriteResult: ...


def all_layers(entries: list[Entry]) -> set[Digest]:
    """Every layer digest of ``entries``: what a sink that holds nothing yet lacks."""
    return {layer.digest for entry in entries for image in entry.images() for layer in image.layers}
