"""Which storage driver the test engines use: overlay2 where overlayfs really mounts, else vfs.

Almost every user runs overlay2; vfs (a full copy of the filesystem per layer) is only the
fallback for a kernel without overlayfs, or a data root on a filesystem overlayfs cannot use as
its upper layer (overlayfs itself, for instance). The probe mounts a tiny overlay in the very
directory that will hold the data root and writes through it: ``/proc/filesystems`` alone does not
tell whether the upper filesystem is usable.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

__all__ = [
    "Overlay2OrVfs",
    "kernel_has_overlayfs",
    "overlay_mounts_on",
    "storage_driver_for",
]

Overlay2OrVfs = Literal["overlay2", "vfs"]

_PROBED: dict[int, bool] = {}


def kernel_has_overlayfs() -> bool:
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        return False
    return any(line.split()[-1:] == ["overlay"] for line in filesystems.splitlines())


def overlay_mounts_on(directory: Path) -> bool:
    """True when an overlay whose upper and work dirs are in ``directory`` mounts and takes a
    write (root only; the answer is kept per filesystem)."""
    if os.geteuid() != 0 or not kernel_has_overlayfs():
        return False
    directory.mkdir(parents=True, exist_ok=True)
    device = directory.stat().st_dev
    if device not in _PROBED:
        _PROBED[device] = _probe(directory)
    return _PROBED[device]


def _probe(directory: Path) -> bool:
    with tempfile.TemporaryDirectory(prefix=".overlay-probe-", dir=directory) as tmp:
        root = Path(tmp)
        lower, upper, work, merged = (root / n for n in ("lower", "upper", "work", "merged"))
        for path in (lower, upper, work, merged):
            path.mkdir()
        (lower / "seen").write_text("lower\n")
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        mounted = subprocess.run(
            ["mount", "-t", "overlay", "-o", options, "sealift-probe", str(merged)],
            capture_output=True,
            check=False,
        )
        if mounted.returncode != 0:
            return False
        try:
            (merged / "written").write_text("upper\n")
            works = (merged / "seen").read_text() == "lower\n"
            works = works and (upper / "written").exists()
        except OSError:
            works = False
        finally:
            subprocess.run(["umount", str(merged)], capture_output=True, check=False)
        return works


def storage_driver_for(data_root: Path) -> Overlay2OrVfs:
    """``overlay2`` when overlayfs works where ``data_root`` will live, else ``vfs``."""
    parent = data_root if data_root.exists() else data_root.parent
    return "overlay2" if overlay_mounts_on(parent) else "vfs"
