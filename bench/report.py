"""Summaries, targets and the two result files (latest.md, latest.json)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import floors
from bench.contenders import (
    CONVERT_BASE,
    LOAD_BASE,
    SAVE_BASE,
    STAGES,
    UPDATE_BASE,
    Contender,
)
from bench.measure import Measurement

MIB = 1024 * 1024
RSS_LIMIT = 150 * 1_000_000  # "150 MB"


@dataclass
class Row:
    """All trials of one contender and their summary."""

    contender: Contender
    trials: list[Measurement]

    @property
    def ok(self) -> list[Measurement]:
        return [t for t in self.trials if t.error is None]

    @property
    def error(self) -> str | None:
        bad = [t.error for t in self.trials if t.error is not None]
        return bad[0] if bad else None

    def wall(self) -> float | None:
        ok = self.ok
        return statistics.median(t.wall for t in ok) if ok and not self.error else None

    def wall_range(self) -> tuple[float, float] | None:
        ok = self.ok
        return (min(t.wall for t in ok), max(t.wall for t in ok)) if ok and not self.error else None

    def num(self, key: str) -> int | None:
        vals = [v for t in self.ok if isinstance(v := t.extra.get(key), int)]
        return int(statistics.median(vals)) if vals and not self.error else None

    def cpu(self, which: str = "both") -> float | None:
        """Median CPU seconds: of the timed tree, of the engines, or both added."""
        if not self.ok or self.error:
            return None

        def pick(t: Measurement) -> float:
            if which == "tree":
                return t.cpu_tree
            if which == "engine":
                return t.cpu_engine
            return t.cpu_tree + t.cpu_engine

        return float(statistics.median(pick(t) for t in self.ok))

    def median_extra(self, key: str) -> float | None:
        vals = [float(v) for t in self.ok if isinstance(v := t.extra.get(key), int | float)]
        return round(statistics.median(vals), 3) if vals and not self.error else None

    def rss_tree(self) -> int | None:
        return max(t.peak_rss_tree for t in self.ok) if self.ok else None

    def rss_proc(self) -> int | None:
        return max(t.peak_rss_proc for t in self.ok) if self.ok else None

    def rss_sealift(self) -> int | None:
        vals = [t.peak_rss_sealift for t in self.ok if t.peak_rss_sealift is not None]
        return max(vals) if vals else None

    def summary(self) -> dict[str, Any]:
        c = self.contender
        rng = self.wall_range()
        return {
            "stage": c.stage,
            "name": c.name,
            "tool": c.tool,
            "baseline": c.baseline,
            "note": c.note,
            "error": self.error,
            "wall_median_s": _r(self.wall()),
            "wall_min_s": _r(rng[0]) if rng else None,
            "wall_max_s": _r(rng[1]) if rng else None,
            "cpu_tree_median_s": _r(self.cpu("tree")),
            "cpu_engine_median_s": _r(self.cpu("engine")),
            "cpu_engine_src_median_s": self.median_extra("cpu_engine_src_s"),
            "cpu_engine_dst_median_s": self.median_extra("cpu_engine_dst_s"),
            "bytes": self.num("bytes"),
            "unique_blob_bytes": self.num("unique_blob_bytes"),
            "peak_rss_tree_bytes": self.rss_tree(),
            "peak_rss_largest_process_bytes": self.rss_proc(),
            "peak_rss_sealift_process_bytes": self.rss_sealift(),
            "engine_peak_rss_bytes": max((t.engine_peak_rss for t in self.ok), default=None),
            "trials": [
                {
                    "wall_s": _r(t.wall),
                    "returncode": t.returncode,
                    "error": t.error,
                    "peak_rss_tree_bytes": t.peak_rss_tree,
                    "peak_rss_largest_process_bytes": t.peak_rss_proc,
                    "peak_rss_sealift_process_bytes": t.peak_rss_sealift,
                    "engine_peak_rss_bytes": t.engine_peak_rss,
                    "cpu_tree_s": _r(t.cpu_tree),
                    "cpu_engine_s": _r(t.cpu_engine),
                    **t.extra,
                }
                for t in self.trials
            ],
        }


def _r(x: float | None, nd: int = 3) -> float | None:
    return round(x, nd) if x is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass
class Check:
    target: str
    row: str
    measured: float | None
    limit: float
    unit: str

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "MISS (no result)"
        return "PASS" if self.measured <= self.limit else "MISS"

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "row": self.row,
            "measured": _r(self.measured, 4),
            "limit": self.limit,
            "unit": self.unit,
            "verdict": self.verdict,
        }


def checks(rows: dict[str, Row], facts: dict[str, Any]) -> list[Check]:
    """The issue's targets, for the rows that ran."""

    def get(stage: str, name: str) -> Row | None:
        return rows.get(f"{stage}:{name}")

    out: list[Check] = []
    base_save = get("save", SAVE_BASE)

    def vs(stage: str, name: str, base: Row | None, what: str, limit: float, target: str) -> None:
        row = get(stage, name)
        if row is None or base is None:
            return
        a = row.wall() if what == "wall" else row.num(what)
        b = base.wall() if what == "wall" else base.num(what)
        out.append(
            Check(target, row.contender.key, _ratio(a, b), limit, f"x {base.contender.name}")
        )

    zstd = "sealift save --compression zstd"
    gz = "sealift save --compression gzip"
    if get("save", zstd) and base_save:
        vs("save", zstd, base_save, "wall", 1.10, "save zstd wall ≤ 1.10x docker save -o")
        vs(
            "save",
            zstd,
            get("save", "docker save | zstd -T0"),
            "bytes",
            1.0,
            "save zstd size ≤ docker save | zstd -T0",
        )
    if get("save", gz):
        vs("save", gz, base_save, "wall", 1.30, "save gzip wall ≤ 1.30x docker save -o")
        sk = get("save", "skopeo copy → oci-archive (gzip), 4 copies")
        row = get("save", gz)
        if sk is not None and row is not None:
            out.append(
                Check(
                    "save gzip size within 5% of skopeo gzip (distinct blobs)",
                    row.contender.key,
                    _ratio(row.num("bytes"), sk.num("unique_blob_bytes")),
                    1.05,
                    "x skopeo gzip distinct-blob bytes",
                )
            )
    vs(
        "convert",
        "sealift convert --compression zstd",
        get("convert", CONVERT_BASE),
        "wall",
        0.5,
        "convert wall ≤ 0.5x skopeo",
    )
    for name in ("sealift load (zstd archive)", "sealift load (gzip archive)"):
        vs("load", name, get("load", LOAD_BASE), "wall", 1.05, "load wall ≤ 1.05x docker load -i")
    for key, row in rows.items():
        # the delta is push's job; the plain save | pv | load row is there for comparison
        if row.contender.stage != "update" or not row.contender.name.startswith("sealift push"):
            continue
        layer = facts.get("changed_layer", {}).get("zstd3_bytes")
        if isinstance(layer, int):
            out.append(
                Check(
                    "update bytes ≤ 1.1x zstd size of the changed layer",
                    key,
                    _ratio(row.num("bytes"), layer),
                    1.1,
                    "x changed layer (zstd -3)",
                )
            )
        vs(
            "update",
            row.contender.name,
            get("update", UPDATE_BASE),
            "wall",
            0.15,
            "update wall ≤ 0.15x docker pipe",
        )
    for key, row in rows.items():
        if row.contender.tool == "sealift":
            rss = row.rss_sealift()
            out.append(
                Check(
                    "sealift peak RSS ≤ 150 MB (largest sealift process)",
                    key,
                    rss / 1e6 if rss is not None else None,
                    RSS_LIMIT / 1e6,
                    "MB",
                )
            )
    return out


# ----------------------------------------------------------------------------------- rendering
def _s(x: float | None) -> str:
    return f"{x:.2f}" if x is not None else "-"


def _x(x: float | None) -> str:
    return f"{x:.2f}x" if x is not None else "-"


def _mb(x: int | None) -> str:
    return f"{x / 1e6:,.1f}" if x is not None else "-"


def markdown(result: dict[str, Any], rows: dict[str, Row], found: list[Check]) -> str:
    meta = result["meta"]
    lines = [
        "# sealift bench: latest results",
        "",
        f"Run {meta['started']} → {meta['finished']} (UTC), {meta['rounds']} round(s), "
        f"commit `{meta['commit']}`, command `{meta['command']}`.",
        f"Machine: {meta['cpu']} x {meta['cores']} cores, {meta['memory_gib']} GiB; "
        f"{meta['versions']}. Load average at start {meta['loadavg_start']}, "
        f"at end {meta.get('loadavg_end', '?')} (other work on the machine makes numbers noisy).",
        "",
        "Wall = median over rounds (min-max); MB = 10^6 bytes; "
        "RSS tree = peak of the summed VmRSS of the timed process tree (sampled every 50 ms), "
        "RSS proc = largest single-process high-water mark (VmHWM / wait4). "
        "CPU s = median user+system seconds of the tree (wait4) + of both dockerd "
        "(/proc stat, with reaped helpers): steadier than wall time on a busy machine. "
        "Ratios are to the stage's baseline row (**bold**). "
        "Engines (dockerd+containerd) are outside the tree: see engine_peak_rss in latest.json.",
        "",
    ]
    for stage in dict.fromkeys([*STAGES, *(r.contender.stage for r in rows.values())]):
        stage_rows = [r for r in rows.values() if r.contender.stage == stage]
        if not stage_rows:
            continue
        lines += [f"## {stage}", "", _STAGE_TEXT[stage], ""]
        lines.append(
            "| contender | wall s | min-max s | x base wall | CPU s tree+engine | MB | x base MB "
            "| RSS tree MB | RSS proc MB |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in stage_rows:
            c = row.contender
            base = rows.get(f"{c.stage}:{c.baseline}")
            label = c.name.replace("|", "\\|")
            name = f"**{label}**" if c.is_baseline else label
            if row.error:
                lines.append(f"| {name} | ERROR: {row.error.replace('|', '/')} | | | | | | | |")
                continue
            rng = row.wall_range()
            span = f"{_s(rng[0])}-{_s(rng[1])}" if rng else "-"
            size = row.num("bytes")
            uniq = row.num("unique_blob_bytes")
            size_s = _mb(size) + (f" ({_mb(uniq)} distinct)" if uniq is not None else "")
            lines.append(
                f"| {name} | {_s(row.wall())} | {span} "
                f"| {_x(_ratio(row.wall(), base.wall() if base else None))} "
                f"| {_s(row.cpu('tree'))}+{_s(row.cpu('engine'))} | {size_s} "
                f"| {_x(_ratio(size, base.num('bytes') if base else None))} "
                f"| {_mb(row.rss_tree())} | {_mb(row.rss_proc())} |"
            )
        lines.append("")
        notes = [r.contender for r in stage_rows if r.contender.note]
        lines += [f"- {c.name}: {c.note}" for c in notes]
        if notes:
            lines.append("")
    facts = result.get("facts", {})
    if facts.get("changed_layer"):
        cl = facts["changed_layer"]
        lines += [
            f"Changed layer of {cl['image']}: {_mb(cl['uncompressed_bytes'])} MB as tar, "
            f"{_mb(cl['zstd3_bytes'])} MB zstd -3, {_mb(cl['gzip6_bytes'])} MB gzip -6.",
            "",
        ]
    if found:
        lines += [
            "## Targets",
            "",
            "| target | row | measured | limit | verdict |",
            "|---|---|---:|---:|---|",
        ]
        for ch in found:
            m = f"{ch.measured:.3f}" if ch.measured is not None else "-"
            cells = [ch.target, ch.row, m, f"{ch.limit} {ch.unit}", ch.verdict]
            lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
        lines.append("")
    lines += floors.markdown(result.get("floors", []))
    if result.get("limits"):
        lim = result["limits"]
        lines += [
            "## Machine limits (same run)",
            "",
            f"On {lim['bytes'] / MIB:.0f} MiB of `{lim['source']}` layer data, "
            "in one Python process.",
            "",
            "| what | MB/s | ratio |",
            "|---|---:|---:|",
        ]
        for r in lim["rows"]:
            lines.append(f"| {r['name']} | {r['mb_s']} | {r.get('ratio', '-')} |")
        lines.append("")
    if facts.get("setup"):
        lines += ["## Setup (untimed)", ""]
        lines += [f"- {k}: {v}" for k, v in facts["setup"].items()]
        lines.append("")
    return "\n".join(lines)


_STAGE_TEXT = {
    "save": "All four bench images from the source engine to files.",
    "load": "All four images into an emptied destination engine (emptying it, untimed, costs a lot "
    "under vfs: see reset_seconds in the JSON; vfs also makes every loaded layer a full copy).",
    "update": "Destination already holds bench/app:1.0; bring bench/app:1.1 through a 100 Mbit/s "
    "pipe (`pv -L 12500k`). MB = bytes through pv.",
    "convert": "A `docker save` tar of bench/app:1.1 to a zstd OCI archive.",
    "registry": "The four images of sealift's zstd archive to a loopback distribution 2.8 "
    "(`docker-registry`, plain HTTP, emptied untimed before each push trial) and back into an "
    "OCI layout. MB = bytes on the wire, both directions, counted by a TCP relay in front of it.",
    "edge": "The far engine holds bench/app:1.0; bring bench/app:1.1 over ssh through a relay "
    "limited to 100 Mbit/s (`12500k`) or 1 Mbit/s (`125k`, pv's units). MB = bytes on the wire, "
    "both directions, handshakes included.",
}


def write(
    results_dir: Path, result: dict[str, Any], rows: dict[str, Row], found: list[Check]
) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    result["rows"] = [r.summary() for r in rows.values()]
    result["targets"] = [c.as_dict() for c in found]
    result["floors"] = floors.floors(result, rows)
    (results_dir / "latest.json").write_text(
        json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    )
    (results_dir / "latest.md").write_text(markdown(result, rows, found))
