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
    ENGINE_LABEL,
    LOAD_BASE,
    REPEAT_SAVE,
    SAVE_BASE,
    SSH_PIPE,
    STAGES,
    UPDATE_BASE,
    ZSTD_PIPE,
    Contender,
)
from bench.engines import EngineKind
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
    kind: str = "docker20"
    issue10: bool = False

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "MISS (no result)"
        return "PASS" if self.measured <= self.limit else "MISS"

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.kind,
            "target": self.target,
            "row": self.row,
            "measured": _r(self.measured, 4),
            "limit": self.limit,
            "unit": self.unit,
            "verdict": self.verdict,
            "issue": 10 if self.issue10 else None,
        }


def checks(
    rows: dict[EngineKind, dict[str, Row]],
    facts: dict[EngineKind, dict[str, Any]],
    limits: dict[str, Any],
) -> list[Check]:
    """The targets, for the rows that ran, per engine kind."""
    found: list[Check] = []
    for kind, kind_rows in rows.items():
        kind_facts = facts.get(kind, {})
        floor_entries = floors.floors(kind, kind_rows, kind_facts, limits)
        for check in _checks_for(kind_rows, kind_facts, floor_entries):
            check.kind = kind
            found.append(check)
    return found


def _checks_for(
    rows: dict[str, Row], facts: dict[str, Any], floor_entries: list[dict[str, Any]]
) -> list[Check]:
    def get(stage: str, name: str) -> Row | None:
        return rows.get(f"{stage}:{name}")

    out: list[Check] = []
    base_save = get("save", SAVE_BASE)

    def vs(
        stage: str,
        name: str,
        base: Row | None,
        what: str,
        limit: float,
        target: str,
        issue10: bool = False,
    ) -> None:
        row = get(stage, name)
        if row is None or base is None:
            return
        a = row.wall() if what == "wall" else row.num(what)
        b = base.wall() if what == "wall" else base.num(what)
        unit = f"x {base.contender.name}"
        out.append(Check(target, row.contender.key, _ratio(a, b), limit, unit, issue10=issue10))

    zstd = "sealift save --compression zstd"
    gz = "sealift save --compression gzip"
    pipe = get("save", ZSTD_PIPE)
    vs("save", zstd, pipe, "wall", 1.0, "save zstd wall ≤ docker save | zstd -T0", True)
    vs("save", zstd, pipe, "bytes", 1.0, "save zstd size ≤ docker save | zstd -T0", True)
    vs(
        "save",
        REPEAT_SAVE,
        base_save,
        "wall",
        1.10,
        "repeat save zstd ≤ 1.10x docker save -o",
        True,
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
        target = "load wall ≤ 1.05x docker load -i"
        vs("load", name, get("load", LOAD_BASE), "wall", 1.05, target, True)
    out.extend(_update_checks(rows, facts, floor_entries))
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


def _update_checks(
    rows: dict[str, Row], facts: dict[str, Any], floor_entries: list[dict[str, Any]]
) -> list[Check]:
    """The update targets are push's (the plain save | pv | load row and --no-delta are there
    for comparison); its wall is held to the docker pipe over the same ssh link."""
    out: list[Check] = []
    pipe = rows.get(f"update:{SSH_PIPE}") or rows.get(f"update:{UPDATE_BASE}")
    floor_by_row = {e["row"]: e["floor_s"] for e in floor_entries}
    layer = facts.get("changed_layer", {}).get("zstd3_bytes")
    for key, row in rows.items():
        name = row.contender.name
        if row.contender.stage != "update" or not name.startswith("sealift push"):
            continue
        if "--no-delta" in name:
            continue
        wall = row.wall()
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
        if pipe is not None:
            out.append(
                Check(
                    "update wall ≤ 0.12x docker pipe",
                    key,
                    _ratio(wall, pipe.wall()),
                    0.12,
                    f"x {pipe.contender.name}",
                    issue10=True,
                )
            )
        if key in floor_by_row:
            out.append(
                Check(
                    "update wall ≤ 1.1x its floor",
                    key,
                    _ratio(wall, floor_by_row[key]),
                    1.1,
                    "x floor (What bounds the wall times)",
                    issue10=True,
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


def _engine_heading(kind: EngineKind, meta: dict[str, Any]) -> str:
    info = meta.get("engines", {}).get(kind, {})
    details = ", ".join(f"{k} {v}" for k, v in info.items())
    return f"{ENGINE_LABEL[kind]}" + (f" ({details})" if details else "")


def markdown(
    result: dict[str, Any], rows: dict[EngineKind, dict[str, Row]], found: list[Check]
) -> str:
    meta = result["meta"]
    engines = "; ".join(_engine_heading(kind, meta) for kind in rows)
    lines = [
        "# sealift bench: latest results",
        "",
        f"Run {meta['started']} → {meta['finished']} (UTC), {meta['rounds']} round(s), "
        f"commit `{meta['commit']}`, command `{meta['command']}`.",
        f"Machine: {meta['cpu']} x {meta['cores']} cores, {meta['memory_gib']} GiB; "
        f"{meta['versions']}. Load average at start {meta['loadavg_start']}, "
        f"at end {meta.get('loadavg_end', '?')} (other work on the machine makes numbers noisy).",
        f"Engines, a source and a destination of each kind: {engines}.",
        "",
        "Wall = median over rounds (min-max); MB = 10^6 bytes; "
        "RSS tree = peak of the summed VmRSS of the timed process tree (sampled every 50 ms), "
        "RSS proc = largest single-process high-water mark (VmHWM / wait4). "
        "CPU s = median user+system seconds of the tree (wait4) + of both engines' dockerd and "
        "containerd (/proc stat, with reaped helpers): steadier than wall time on a busy machine. "
        "Ratios are to the baseline row (**bold**) of the same stage on the same engine kind. "
        "Engines are outside the tree: see engine_peak_rss in latest.json.",
        "",
    ]
    ran = [r.contender.stage for kind_rows in rows.values() for r in kind_rows.values()]
    for stage in dict.fromkeys([*STAGES, *ran]):
        for kind, kind_rows in rows.items():
            stage_rows = [r for r in kind_rows.values() if r.contender.stage == stage]
            if stage_rows:
                lines += _stage_table(stage, kind, stage_rows, kind_rows)
    for kind, kind_facts in result.get("facts", {}).items():
        cl = kind_facts.get("changed_layer")
        if cl:
            lines += [
                f"Changed layer of {cl['image']} on {ENGINE_LABEL[kind]}: "
                f"{_mb(cl['stored_bytes'])} MB as stored, {_mb(cl['uncompressed_bytes'])} MB as "
                f"tar, {_mb(cl['zstd3_bytes'])} MB zstd -3, {_mb(cl['gzip6_bytes'])} MB gzip -6.",
                "",
            ]
    lines += _issue10_table(rows, found)
    if found:
        lines += [
            "## All targets",
            "",
            "| engine | target | row | measured | limit | verdict |",
            "|---|---|---|---:|---:|---|",
        ]
        for ch in found:
            m = f"{ch.measured:.3f}" if ch.measured is not None else "-"
            cells = [ch.kind, ch.target, ch.row, m, f"{ch.limit} {ch.unit}", ch.verdict]
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
    for kind, kind_facts in result.get("facts", {}).items():
        if kind_facts.get("setup"):
            lines += [f"## Setup (untimed), {ENGINE_LABEL[kind]}", ""]
            lines += [f"- {k}: {v}" for k, v in kind_facts["setup"].items()]
            lines.append("")
    return "\n".join(lines)


def _stage_table(
    stage: str, kind: EngineKind, stage_rows: list[Row], kind_rows: dict[str, Row]
) -> list[str]:
    lines = [f"## {stage}: {ENGINE_LABEL[kind]}", "", _STAGE_TEXT[stage], ""]
    lines.append(
        "| contender | wall s | min-max s | x base wall | CPU s tree+engine | MB | x base MB "
        "| RSS tree MB | RSS proc MB |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in stage_rows:
        c = row.contender
        base = kind_rows.get(f"{c.stage}:{c.baseline}")
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
    return lines


def _issue10_table(rows: dict[EngineKind, dict[str, Row]], found: list[Check]) -> list[str]:
    """One line per issue-10 target and row, one column per engine kind."""
    kinds = list(rows)
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for ch in found:
        if ch.issue10:
            m = f"{ch.measured:.3f}" if ch.measured is not None else "-"
            cells.setdefault((ch.target, ch.row), {})[ch.kind] = f"{ch.verdict} {m}"
    if not cells:
        return []
    lines = [
        "## Targets of issue 10 (overlay2 engines)",
        "",
        "Measured as a ratio to the limit's reference (see All targets for the units).",
        "",
        "| target | row | " + " | ".join(ENGINE_LABEL[k] for k in kinds) + " |",
        "|---|---|" + "---|" * len(kinds),
    ]
    for (target, row), by_kind in cells.items():
        values = [by_kind.get(k, "-") for k in kinds]
        lines.append(
            "| " + " | ".join(x.replace("|", "\\|") for x in [target, row, *values]) + " |"
        )
    lines.append("")
    return lines


_STAGE_TEXT = {
    "save": "All four bench images from the source engine to files.",
    "load": "All four images into an emptied destination engine (emptying it is untimed: see "
    "reset_seconds in the JSON).",
    "update": "Destination already holds bench/app:1.0; bring bench/app:1.1 through a 100 Mbit/s "
    "link (`pv -L 12500k`, or the rate-limited ssh relay). MB = bytes through the link.",
    "convert": "A `docker save` tar of bench/app:1.1 to a zstd OCI archive (no engine takes part).",
    "registry": "Once, not per engine kind (no engine takes part): the four images of "
    "sealift's zstd archive (its save on Docker 20.10) to a loopback distribution 2.8 "
    "(`docker-registry`, plain HTTP, emptied untimed before each push trial) and back into an "
    "OCI layout. MB = bytes on the wire, both directions, counted by a TCP relay in front of it.",
    "edge": "On Docker 20.10 only (it is long). The far engine holds bench/app:1.0; bring "
    "bench/app:1.1 over ssh through a relay limited to 100 Mbit/s (`12500k`) or 1 Mbit/s "
    "(`125k`, pv's units). MB = bytes on the wire, both directions, handshakes included.",
}


def write(
    results_dir: Path,
    result: dict[str, Any],
    rows: dict[EngineKind, dict[str, Row]],
    found: list[Check],
) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    result["rows"] = [
        {"engine": kind, **r.summary()}
        for kind, kind_rows in rows.items()
        for r in kind_rows.values()
    ]
    result["targets"] = [c.as_dict() for c in found]
    facts, limits = result.get("facts", {}), result.get("limits", {})
    result["floors"] = [
        entry
        for kind, kind_rows in rows.items()
        for entry in floors.floors(kind, kind_rows, facts.get(kind, {}), limits)
    ]
    (results_dir / "latest.json").write_text(
        json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    )
    (results_dir / "latest.md").write_text(markdown(result, rows, found))
