"""The two small protocols every place images come from or go to implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sealift.model import Entry


class Source(Protocol):
    """Where images come from: an archive, a layout, an engine, a remote host."""

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


class Sink(Protocol):
    """Where images go."""

    def accepts_codec(self, codec: str) -> bool:
        """Whether the sink can take layers compressed with ``codec`` as they are."""
        ...

    def write(self, entries: list[Entry]) -> WriteResult: ...
