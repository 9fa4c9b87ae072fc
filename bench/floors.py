"""What bounds a target, measured in the same run: how long the engine exports before its first
byte, the CPU a codec needs at this machine's measured speed, the link, and unpacking a layer.

Each floor is a lower bound for *any* tool doing the same work on this machine: it leaves out
every copy, Python and imperfect overlap, so the real floor is higher. Floors are per engine
kind: Docker 20.10 exports whole images only (its update floor includes exporting app:1.1),
Docker 26's containerd store keeps every layer as a compressed blob that a tool can read alone.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import zstandard

from bench.contenders import CONVERT_BASE, SAVE_BASE, UPDATE_BASE
from bench.engines import EngineKind, engine_processes
from bench.limits import GUNZIP
from bench.measure import cpu_seconds

if TYPE_CHECKING:
    from bench.contenders import Ctx
    from bench.report import Row

MB = 1_000_000
CORES = os.cpu_count() or 1
SHA256 = "sha256 (hashlib)"
CODEC_LIMIT = {"zstd": "zstd level 3, 1 thread (zstandard)", "gzip": "gzip isal igzip level 3"}


def probe_export(ctx: Ctx, refs: list[str], rounds: int = 3) -> dict[str, Any]:
    """Medians of ``docker save refs`` (read and dropped): the time to the first byte and to the
    end, and the engine's CPU seconds once it streams (what it takes from the cores then)."""
    first: list[float] = []
    total: list[float] = []
    streaming_cpu: list[float] = []
    engine = engine_processes(ctx.src)[0]
    size = 0
    for _ in range(rounds):
        os.sync()
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*ctx.src.client_command, "save", *refs], stdout=subprocess.PIPE, env=ctx.src.env()
        )
        assert proc.stdout is not None
        size = 0
        got_first: float | None = None
        cpu_at_first = 0.0
        while chunk := os.read(proc.stdout.fileno(), 1 << 20):
            if got_first is None:
                got_first = time.perf_counter() - start
                cpu_at_first = cpu_seconds(engine)
            size += len(chunk)
        if proc.wait() != 0 or got_first is None:
            raise RuntimeError(f"docker save {refs} failed (exit {proc.returncode})")
        first.append(got_first)
        total.append(time.perf_counter() - start)
        streaming_cpu.append(cpu_seconds(engine) - cpu_at_first)
    return {
        "refs": refs,
        "first_byte_s": round(statistics.median(first), 3),
        "total_s": round(statistics.median(total), 3),
        "engine_streaming_cpu_s": round(statistics.median(streaming_cpu), 3),
        "bytes": size,
    }


def layer_tar(blob: bytes) -> bytes:
    """A layer blob as its tar: gzip and zstd blobs are decompressed, a tar is returned as is."""
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    return blob


def probe_apply(ctx: Ctx, rounds: int = 3) -> dict[str, Any]:
    """Median seconds of ``zstd -dc LAYER.zst | tar -x`` of the changed layer(s) of the update,
    on the destination engine's filesystem: what applying them costs at the least (an engine also
    records the layer, and the containerd store keeps the blob as well)."""
    changed = ctx.facts["changed_layer"]
    assert isinstance(changed, dict)
    scratch = Path(tempfile.mkdtemp(prefix="apply-probe-", dir=ctx.dst.workdir))
    try:
        packed = scratch / "layers.tar.zst"
        with tarfile.open(ctx.artifacts["to-tar"]) as tar, packed.open("wb") as out:
            for name in changed["names"]:
                member = tar.extractfile(name)
                assert member is not None
                out.write(zstandard.ZstdCompressor(level=3).compress(layer_tar(member.read())))
        times = []
        for _ in range(rounds):
            target = scratch / "root"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            os.sync()
            start = time.perf_counter()
            subprocess.run(
                ["bash", "-o", "pipefail", "-c", f"zstd -qdc {packed} | tar -x -C {target}"],
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"apply_s": round(statistics.median(times), 3), "layers": len(changed["names"])}


def _speed(limits: dict[str, Any], name: str) -> float | None:
    for row in limits.get("rows", []):
        if row["name"] == name:
            return float(row["mb_s"]) * MB
    return None


def _cpu_for(
    raw: int, packed: int, codec: str, limits: dict[str, Any], gzipped: bool = False
) -> float | None:
    """CPU seconds to compress ``raw`` bytes and hash them and the ``packed`` result; first to
    gunzip them when the engine exports them gzipped (Docker 26's stored blobs)."""
    squeeze, sha = _speed(limits, CODEC_LIMIT[codec]), _speed(limits, SHA256)
    gunzip = _speed(limits, GUNZIP) if gzipped else float("inf")
    if squeeze is None or sha is None or gunzip is None:
        return None
    return raw / gunzip + raw / squeeze + (raw + packed) / sha


def layer_bytes(archive: Path) -> int:
    """Bytes of the distinct layers of a ``docker save`` archive, uncompressed (untimed: for
    Docker 26, whose save holds its gzip blobs)."""
    total = 0
    with tarfile.open(archive) as tar:
        manifests = tar.extractfile("manifest.json")
        assert manifests is not None
        names = {name for image in json.load(manifests) for name in image["Layers"]}
        for name in sorted(names):
            member = tar.extractfile(name)
            assert member is not None
            gzipped = member.read(2) == b"\x1f\x8b"
            member.seek(0)
            reader: IO[bytes] = member
            if gzipped:
                reader = cast(IO[bytes], gzip.GzipFile(fileobj=member))
            while chunk := reader.read(1 << 20):
                total += len(chunk)
    return total


def floors(
    kind: EngineKind, rows: dict[str, Row], facts: dict[str, Any], limits: dict[str, Any]
) -> list[dict[str, Any]]:
    """One entry per sealift row with a wall target on engines of ``kind``: its floor, and the
    floor as a ratio to the row's baseline."""
    found: list[dict[str, Any]] = []
    export = facts.get("export_probe") or {}
    # Docker 26 exports its gzip blobs: the layers' own size is measured beside the stream's.
    raw = int(export.get("layer_bytes", export.get("bytes", 0)))
    gzipped = "layer_bytes" in export
    for codec in ("zstd", "gzip"):
        row, base = (
            rows.get(f"save:sealift save --compression {codec}"),
            rows.get(f"save:{SAVE_BASE}"),
        )
        if not (export and row and base and row.num("bytes") and base.wall()):
            continue
        keeps_blobs = gzipped and codec == "gzip"  # the stored gzip blobs can go as they are
        if keeps_blobs:
            sha = _speed(limits, SHA256)
            cpu = export["bytes"] / sha if sha else None
            work = f"hash the {export['bytes'] / MB:.0f} MB of stored gzip blobs as they pass"
        else:
            cpu = _cpu_for(raw, row.num("bytes") or 0, codec, limits, gzipped)
            unpack = "gunzip, " if gzipped else ""
            work = f"{unpack}compress {raw / MB:.0f} MB with {codec} and hash it"
        if cpu is None:
            continue
        engine_cpu = export.get("engine_streaming_cpu_s", 0.0)
        # Reading the whole export takes its own time, however little CPU the rest needs.
        floor = max(export["total_s"], export["first_byte_s"] + (cpu + engine_cpu) / CORES)
        found.append(
            _entry(
                row.contender.key,
                floor,
                base.wall(),
                f"the engine's first byte at {export['first_byte_s']:.2f} s, then {cpu:.2f} "
                f"CPU-s to {work}, beside the engine's own {engine_cpu:.2f} CPU-s of streaming, "
                f"on {CORES} cores; not under the {export['total_s']:.2f} s the export takes "
                "when read and dropped",
            )
        )
    row = rows.get("convert:sealift convert --compression zstd")
    base = rows.get(f"convert:{CONVERT_BASE}")
    tar = facts.get("convert_input_bytes")
    if row and base and base.wall() and isinstance(tar, int):
        cpu = _cpu_for(tar, row.num("bytes") or 0, "zstd", limits)
        if cpu is not None:
            found.append(
                _entry(
                    row.contender.key,
                    cpu / CORES,
                    base.wall(),
                    f"{cpu:.2f} CPU-s to compress {tar / MB:.0f} MB with zstd and hash it on "
                    f"{CORES} cores",
                )
            )
    found.extend(_update_floors(kind, facts, rows))
    for entry in found:
        entry["engine"] = kind
    return found


def _update_floors(
    kind: EngineKind, facts: dict[str, Any], rows: dict[str, Row]
) -> list[dict[str, Any]]:
    """Docker 20.10: export app:1.1 whole, then the changed layer's bytes cross the link.
    Docker 26: only the changed layer's bytes cross the link, then the destination unpacks it."""
    base = rows.get(f"update:{UPDATE_BASE}")
    changed, rate = facts.get("changed_layer"), facts.get("link_bytes_per_s")
    if not (base and base.wall() and changed and rate):
        return []
    wire = changed["zstd3_bytes"] / rate
    link = (
        f"{changed['zstd3_bytes'] / MB:.2f} MB of changed layer (zstd -3) at {rate / MB:.1f} MB/s"
    )
    export, apply = facts.get("export_probe_update"), facts.get("apply_probe_update")
    if kind == "docker20":
        if not export:
            return []
        floor = export["total_s"] + wire
        why = (
            f"the source engine's export of {' '.join(export['refs'])} ({export['total_s']:.2f} s: "
            f"Docker 20.10 cannot export one layer), then {link} ({wire:.2f} s)"
        )
    else:
        if not apply:
            return []
        floor = wire + apply["apply_s"]
        exported = f" (exporting all of it would take {export['total_s']:.2f} s)" if export else ""
        why = (
            f"the containerd store holds the changed layer as a blob a tool can read alone"
            f"{exported}: {link} ({wire:.2f} s), then unpacking it on the destination "
            f"(zstd -d | tar -x: {apply['apply_s']:.2f} s)"
        )
    return [
        _entry(key, floor, base.wall(), why)
        for key in rows
        if key.startswith("update:sealift push")
    ]


def _entry(key: str, floor: float, base_wall: float | None, why: str) -> dict[str, Any]:
    return {
        "row": key,
        "floor_s": round(floor, 3),
        "floor_ratio": round(floor / base_wall, 3) if base_wall else None,
        "why": why,
    }


def markdown(entries: list[dict[str, Any]]) -> list[str]:
    if not entries:
        return []
    lines = [
        "## What bounds the wall times",
        "",
        "Lower bounds measured in this run on the overlay2 engines (probes between stages, "
        "machine limits below); any tool doing the same work here needs at least this long. "
        "They leave out copies, Python and imperfect overlap, so the true floor is higher.",
        "",
        "| engine | row | floor s | floor x base | made of |",
        "|---|---|---:|---:|---|",
    ]
    for e in entries:
        ratio = f"{e['floor_ratio']:.2f}x" if e["floor_ratio"] is not None else "-"
        cells = [e.get("engine", "-"), e["row"], f"{e['floor_s']:.2f}", ratio, e["why"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    return lines
