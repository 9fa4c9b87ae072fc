"""Machine limits measured in the same run: what hashing and compressing can reach here.

All on the same buffer of realistic data (layer tars of the bench images), in-process, single
pass, wall time with ``time.perf_counter``. MB = 10**6 bytes, of *input* per second, except for
gunzip: of its output (the layer tar), so every row reads as "MB of layer per second".
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import zstandard
from isal import igzip

MB = 1_000_000
GUNZIP = "gunzip isal igzip (MB/s of output)"


def sample_data(sources: list[Path], size: int) -> tuple[bytes, str]:
    """Up to ``size`` bytes of layer-tar content from the first usable source.

    A ``docker save`` archive contributes its ``*/layer.tar`` members (base layer first); any
    other file is read as is (e.g. the cached debootstrap ``rootfs.tar``).
    """
    for src in sources:
        if not src.exists():
            continue
        chunks: list[bytes] = []
        have = 0
        if tarfile.is_tarfile(src) and _is_docker_save(src):
            with tarfile.open(src) as tar:
                for member in tar:
                    if have >= size:
                        break
                    if member.isfile() and member.name.endswith("layer.tar"):
                        f = tar.extractfile(member)
                        assert f is not None
                        data = f.read(size - have)
                        chunks.append(data)
                        have += len(data)
        else:
            with open(src, "rb") as f:
                data = f.read(size)
                chunks.append(data)
                have = len(data)
        if have:
            return b"".join(chunks), str(src)
    raise RuntimeError(f"no sample data in {[str(s) for s in sources]}")


def _is_docker_save(path: Path) -> bool:
    with tarfile.open(path) as tar:
        try:
            tar.getmember("manifest.json")
        except KeyError:
            return False
    return True


def _rate(label: str, fn: Callable[[bytes], bytes | None], data: bytes) -> dict[str, object]:
    start = time.perf_counter()
    out = fn(data)
    took = time.perf_counter() - start
    row: dict[str, object] = {
        "name": label,
        "seconds": round(took, 3),
        "mb_s": round(len(data) / MB / took, 1),
    }
    if out is not None:
        row["ratio"] = round(len(out) / len(data), 4)
    return row


def measure(data: bytes) -> list[dict[str, object]]:
    """sha256, zstd level 3 on all cores, isal igzip levels 1-3, stdlib zlib level 6."""

    def sha(d: bytes) -> None:
        h = hashlib.sha256()
        view = memoryview(d)
        for i in range(0, len(view), 1 << 20):
            h.update(view[i : i + (1 << 20)])

    def zstd_mt(d: bytes) -> bytes:
        cctx = zstandard.ZstdCompressor(level=3, threads=-1)
        return cctx.compress(d)

    def zstd_1t(d: bytes) -> bytes:
        return zstandard.ZstdCompressor(level=3).compress(d)

    rows = [
        _rate("sha256 (hashlib)", sha, data),
        _rate("zstd level 3, threads=-1 (zstandard)", zstd_mt, data),
        _rate("zstd level 3, 1 thread (zstandard)", zstd_1t, data),
    ]
    for level in (1, 2, 3):

        def isal(d: bytes, lv: int = level) -> bytes:
            return bytes(igzip.compress(d, lv))

        rows.append(_rate(f"gzip isal igzip level {level}", isal, data))
    rows.append(_rate("gzip stdlib zlib level 6", lambda d: gzip.compress(d, 6, mtime=0), data))
    rows.append(_gunzip_rate(data))
    return rows


def _gunzip_rate(data: bytes) -> dict[str, object]:
    """isal igzip decompression of ``data`` gzip-compressed (the speed does not depend much on
    the level it was written at): MB of output per second."""
    packed = bytes(igzip.compress(data, 3))
    start = time.perf_counter()
    igzip.decompress(packed)  # type: ignore[no-untyped-call]
    took = time.perf_counter() - start
    return {"name": GUNZIP, "seconds": round(took, 3), "mb_s": round(len(data) / MB / took, 1)}
