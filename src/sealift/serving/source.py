"""The source ``sealift serve`` reads: an archive pinned by one open descriptor, or a layout."""

from __future__ import annotations

from pathlib import Path
from typing import IO

from sealift.ends.archive import ArchiveSource
from sealift.ends.base import Source
from sealift.ends.open import ARCHIVE, LAYOUT, open_source, parse_end
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
    """The archive (a path, ``archive:PATH``, ``-``) or layout (``oci:DIR[:REF]``, a directory)
    ``spec`` names, as every command names them; an archive file is pinned."""
    end = parse_end(spec)
    if end.kind not in (ARCHIVE, LAYOUT):
        raise UsageError(f"{spec!r}: sealift serve reads an archive or an OCI layout (oci:DIR)")
    if end.kind == LAYOUT or end.is_stdio:
        return open_source(end)
    return PinnedArchive(Path(end.location))
