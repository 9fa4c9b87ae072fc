"""An OCI image layout directory as a source and as a sink."""

from __future__ import annotations

from pathlib import Path

from sealift import compression
from sealift.ends.base import WriteResult
from sealift.errors import UsageError
from sealift.formats.files import DirFiles
from sealift.formats.read import read_entries
from sealift.formats.write import write_layout
from sealift.model import Entry


class LayoutSource:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UsageError(f"no such OCI layout directory: {self.root}")

    def entries(self, want_codec: str | None = None, want_level: int | None = None) -> list[Entry]:
        return read_entries(DirFiles(self.root), f"layout {self.root}")

    def close(self) -> None:
        return None


class LayoutSink:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root} exists and is not a directory")

    def accepts_codec(self, codec: str) -> bool:
        return codec in compression.LAYER_CODECS

    def write(self, entries: list[Entry]) -> WriteResult:
        write_layout(entries, self.root)
        return WriteResult(names=[str(tag) for entry in entries for tag in entry.tags])
