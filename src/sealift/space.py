"""Free-space checks made before a load or a write starts, so that a full disk is reported in
one line naming every place and size, not half-way through a long copy.

A check takes ``Need``s (a place, a directory on it, the bytes the work will put there). Needs
on one filesystem add up. The probe that measures free space is a parameter, so tests fake it.
Where a size or a free count cannot be known (stdin, a directory that does not exist yet, a
remote engine), nothing is checked: the write itself reports what goes wrong.

Hooks: ``sealift compose load`` (``load_needs``: the spool in SEALIFT_TMPDIR/TMPDIR when the
bundle is compressed or split, and a local engine's data root) runs ``check`` before reading
the bundle. Archive writes check their output directory themselves
(``sealift.split.check_free_space``, called by ``ArchiveSink`` and ``write_split``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sealift import compression
from sealift.errors import EngineError, SealiftError
from sealift.progress import human_size
from sealift.split import find_split

if TYPE_CHECKING:
    from sealift.ends.engine import Engine

Probe = Callable[[Path], int | None]
"""Free bytes on the filesystem holding a directory, or None when that cannot be told."""
DeviceOf = Callable[[Path], int | None]
"""An identity of the filesystem holding a directory, or None when that cannot be told."""


@dataclass(frozen=True)
class Need:
    """``size`` bytes the work will put in ``directory``, described to the user as ``place``."""

    place: str
    directory: Path
    size: int


def free_bytes(directory: Path) -> int | None:
    """Bytes free to this user in ``directory``'s filesystem."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def device_of(directory: Path) -> int | None:
    try:
        return directory.stat().st_dev
    except OSError:
        return None


def check(
    needs: Sequence[Need],
    what: str,
    *,
    probe: Probe | None = None,
    device: DeviceOf | None = None,
) -> None:
    """Refuse ``what`` in one line when any filesystem lacks the room ``needs`` add up to on it.
    ``probe`` and ``device`` default to ``free_bytes`` and ``device_of``."""
    probe = probe or free_bytes
    device = device or device_of
    by_disk: dict[object, list[Need]] = {}
    for need in needs:
        if need.size <= 0:
            continue
        disk = device(need.directory)
        by_disk.setdefault(disk if disk is not None else need.directory, []).append(need)
    short: list[str] = []
    for group in by_disk.values():
        free = probe(group[0].directory)
        size = sum(need.size for need in group)
        if free is not None and free < size:
            short.append(f"{_describe(group)}, {human_size(free)} free")
    if short:
        raise SealiftError(f"not enough free space for {what}: {'; '.join(short)}")


def _describe(group: Sequence[Need]) -> str:
    if len(group) == 1:
        need = group[0]
        return f"{need.place} {need.directory} needs {human_size(need.size)}"
    places = " + ".join(f"{n.place} {n.directory} ({human_size(n.size)})" for n in group)
    return f"{places} on one disk need {human_size(sum(n.size for n in group))}"


def spool_directory() -> Path:
    """Where streamed reads spool (see ``sealift.blobs.make_spool_dir``)."""
    return Path(os.environ.get("SEALIFT_TMPDIR") or tempfile.gettempdir())


def archive_size(archive: str) -> int | None:
    """Bytes of the archive file or of all its parts; None for stdin or what cannot be read."""
    if archive == "-":
        return None
    try:
        split = find_split(archive)
        return split.read_index().total_size if split is not None else Path(archive).stat().st_size
    except (OSError, SealiftError):
        return None


def spools(archive: str) -> bool:
    """Whether reading ``archive`` spools it: a split or compressed archive is streamed (a plain
    tar file is read in place)."""
    if find_split(archive) is not None:
        return True
    try:
        with open(archive, "rb") as file:
            head = file.read(compression.SNIFF_SIZE)
    except OSError:
        return False
    return compression.sniff(head) != compression.NONE


def engine_data_root(engine: Engine) -> Path | None:
    """The engine's data root (``docker info`` DockerRootDir) when the engine is on this host
    and that directory can be seen from here; else None."""
    if not engine.is_local:
        return None
    try:
        root = engine.info.get("DockerRootDir")
    except EngineError:
        return None  # the load itself says the engine cannot be reached
    if not root or not os.access(root, os.R_OK | os.X_OK):
        return None
    return Path(str(root))


def load_needs(archive: str, data_root: Path | None) -> list[Need]:
    """What loading ``archive`` needs: its size in the spool when it must be spooled, and at
    least its size in the engine's data root (an engine keeps every layer it loads; the classic
    store keeps them uncompressed, so more). The archive's size stands in for the layers: it is
    known before any work, and a delta bundle is only as large as what the site lacks."""
    size = archive_size(archive)
    if size is None:
        return []
    needs: list[Need] = []
    if spools(archive):
        needs.append(Need("the spool (SEALIFT_TMPDIR, TMPDIR)", spool_directory(), size))
    if data_root is not None:
        needs.append(Need("the engine's data root", data_root, size))
    return needs
