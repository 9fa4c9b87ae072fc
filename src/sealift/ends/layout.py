"""An OCI image layout directory as a source and as a sink (``oci:DIR[:REF]``)."""

from __future__ import annotations

from pathlib import Path

from sealift import compression
from sealift.blobs import BlobStore
from sealift.digest import Digest
from sealift.ends.base import WriteResult, all_layers
from sealift.errors import UsageError
from sealift.formats.files import DirFiles
from sealift.formats.read import read_entries
from sealift.formats.write import write_layout
from sealift.model import Entry
from sealift.transfer import Selection, renamed


class LayoutSource:
    """The images of a layout; with ``ref``, only the one named so (ref name or tag)."""

    def __init__(self, root: str | Path, *, ref: str | None = None) -> None:
        self.root = Path(root)
        self.ref = ref
        if not self.root.is_dir():
            raise UsageError(f"no such OCI layout directory: {self.root}")

    def entries(self, want_codec: str | None = None, want_level: int | None = None) -> list[Entry]:
        entries = read_entries(DirFiles(self.root), f"layout {self.root}")
        return Selection((self.ref,)).apply(entries) if self.ref else entries

    def close(self) -> None:
        return None


class LayoutSink:
    """Adds images to a layout (made if missing); blobs it holds are neither read nor written.

    With ``ref``, the one image copied is named ``ref`` in the layout's index.
    """

    keeps_blobs = True

    def __init__(self, root: str | Path, *, ref: str | None = None) -> None:
        self.root = Path(root)
        self.ref = ref
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root} exists and is not a directory")

    def accepts_codec(self, codec: str) -> bool:
        return codec in compression.LAYER_CODECS

    def missing_layers(self, entries: list[Entry]) -> set[Digest]:
        store = BlobStore(self.root / "blobs")
        return {digest for digest in all_layers(entries) if not store.has(digest)}

    def write(self, entries: list[Entry]) -> WriteResult:
        if self.ref is not None:
            entries = renamed(entries, self.ref, as_reference=False)
        write_layout(entries, self.root)
        names = [str(tag) for entry in entries for tag in entry.tags]
        return WriteResult(names=names + [r for entry in entries for r in entry.ref_names])
