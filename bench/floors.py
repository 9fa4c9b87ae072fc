"""What bounds a target, measured in the same run: how long the engine exports before its first
byte, and the CPU a codec needs at this machine's measured speed.

Each floor is a lower bound for *any* tool doing the same work on this machine: it leaves out
the engine's own CPU while it streams, every copy, and Python, so the real floor is higher.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from typing import TYPE_CHECKING, Any

from bench.contenders import CONVERT_BASE, SAVE_BASE, UPDATE_BASE
from bench.engines import DOCKER_CLI
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
    engine = [ctx.src.pid] if ctx.src.pid is not None else []
    size = 0
    for _ in range(rounds):
        os.sync()
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(DOCKER_CLI), "save", *refs], stdout=subprocess.PIPE, env=ctx.src.env()
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


def _speed(limits: dict[str, Any], name: str) -> float | None:
    for row in limits.get("rows", []):
        if row["name"] == name:
            return float(row["mb_s"]) * MB
    return None


def _cpu_for(raw: int, packed: int, codec: str, limits: dict[str, Any]) -> float | None:
    """CPU seconds to compress ``raw`` bytes and hash them and the ``packed`` result."""
    squeeze, sha = _speed(limits, CODEC_LIMIT[codec]), _speed(limits, SHA256)
    if squeeze is None or sha is None:
        return None
    return raw / squeeze + (raw + packed) / sha


def floors(result: dict[str, Any], rows: dict[str, Row]) -> list[dict[str, Any]]:
    """One entry per sealift row with a wall target: its floor, and the floor as a ratio."""
    facts, limits = result.get("facts", {}), result.get("limits", {})
    found: list[dict[str, Any]] = []
    export = facts.get("export_probe")
    for codec in ("zstd", "gzip"):
        row, base = (
            rows.get(f"save:sealift save --compression {codec}"),
            rows.get(f"save:{SAVE_BASE}"),
        )
        if not (export and row and base and row.num("bytes") and base.wall()):
            continue
        cpu = _cpu_for(export["bytes"], row.num("bytes") or 0, codec, limits)
        if cpu is None:
            continue
        engine_cpu = export.get("engine_streaming_cpu_s", 0.0)
        floor = export["first_byte_s"] + (cpu + engine_cpu) / CORES
        found.append(
            _entry(
                row.contender.key,
                floor,
                base.wall(),
                f"the engine's first byte at {export['first_byte_s']:.2f} s (of "
                f"{export['total_s']:.2f} s for the whole export), then {cpu:.2f} CPU-s to "
                f"compress {export['bytes'] / MB:.0f} MB with {codec} and hash it, beside the "
                f"engine's own {engine_cpu:.2f} CPU-s of streaming, on {CORES} cores",
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
    found.extend(_update_floors(facts, rows))
    return found


def _update_floors(facts: dict[str, Any], rows: dict[str, Row]) -> list[dict[str, Any]]:
    export, base = (
        facts.get("export_probe_update"),
        rows.get(f"update:{UPDATE_BASE}"),
    )
    if not (export and base and base.wall()):
        return []
    found = []
    for key, row in rows.items():
        apply_cpu = row.median_extra("cpu_engine_dst_s")
        if not key.startswith("update:sealift push") or apply_cpu is None:
            continue
        found.append(
            _entry(
                key,
                export["total_s"] + apply_cpu,
                base.wall(),
                f"the source engine's export of {' '.join(export['refs'])} "
                f"({export['total_s']:.2f} s: Docker 20.10 cannot export one layer), then the "
                f"destination engine's {apply_cpu:.2f} CPU-s to apply the new layer (vfs copies "
                "the parent's files first); neither overlaps the other",
            )
        )
    return found


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
        "Lower bounds measured in this run (probes between stages, machine limits below); any "
        "tool doing the same work here needs at least this long. They leave out the engine's "
        "CPU while it streams, copies and Python, so the true floor is higher.",
        "",
        "| row | floor s | floor x base | made of |",
        "|---|---:|---:|---|",
    ]
    for e in entries:
        ratio = f"{e['floor_ratio']:.2f}x" if e["floor_ratio"] is not None else "-"
        cells = [e["row"], f"{e['floor_s']:.2f}", ratio, e["why"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    return lines
