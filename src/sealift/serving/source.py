"""The source ``sealift serve`` reads: an archive pinned by one open descriptor, or a layout."""

from __future__ import annotations

from pathlib import Path
from typing import IO

from sealift.ends.archive import STDIO, ArchiveSource
from sealift.ends.base import Source
from sealift.ends.layout import LayoutSource
from sealift.errors import NotFoundError, SealiftError, UsageError


class PinnedArchive(ArchiveSource):
    """An archive file read through a descriptor opened once.

    Every blob is read through ``/proc/self/fd/N`` of that descriptor, so replacing the file
    while it is served (``sealift save -o`` writes by rename) changes nothing that is served.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = _open(path)
        super().__init__(self._file)

    @property
    def what(self) -> str:
        return f"archive {self.path}"

    def close(self) -> None:
        super().close()
        self._file.close()


def _open(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except FileNotFoundError as exc:
        raise NotFoundError(f"no such file: {path}") from exc
    except IsADirectoryError as exc:
        raise UsageError(f"{path} is a directory; use oci:{path} for a layout") from exc
    except OSError as exc:
        raise SealiftError(f"cannot read {path}: {exc.strerror}") from exc


def open_served_source(spec: str) -> Source:
    """``oci:DIR`` or a directory is a layout; ``archive:PATH``, a path or ``-`` an archive."""
    if not spec:
        raise UsageError("empty source")
    if spec.startswith("oci:"):
        return LayoutSource(_named(spec, "oci:"))
    path = _named(spec, "archive:") if spec.startswith("archive:") else spec
    if path == STDIO:
        return ArchiveSource(STDIO)
    if not spec.startswith("archive:") and Path(path).is_dir():
        return LayoutSource(path)
    return PinnedArchive(Path(path))


def _named(spec: str, prefix: str) -> str:
    rest = spec.removeprefix(prefix)
    if not rest:
        raise UsageError(f"{spec!r} names no path")
    return rest
