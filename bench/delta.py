"""Binary deltas between layer versions: patch size, time and peak memory, by zstd level.

Run on purpose, from the repo root (no engines, no root)::

    python -m bench.delta                      # ~10 min on 2 cores; writes bench/results/delta.md
    python -m bench.delta --quick              # only the 6 MB pair

Two layer pairs are built in code, reproducibly (seeded random binaries + generated text, in
real tars): a ~6 MB layer whose update appends one line to one Python file (like bench/app
1.0 -> 1.1), and a ~200 MB layer whose update changes three files, adds one and removes one.
For each pair and level, a fresh Python process makes the patch (``sealift.delta.make_patch``)
and another applies it (``apply_patch``, verified); each reports its wall time, its peak RSS
(``ru_maxrss``: includes the pages of the mmapped base and of the files it reads) and its
sampled peak of anonymous memory (``RssAnon`` every 10 ms: the process's own memory, what the
segment bounds). Also measured, for context: each target compressed on its own at sealift's
zstd level (what a patch must beat, ``patch_budget``), the segment size at the chosen level,
and python-zstandard's dictionary API (the obvious way, which does not find the base in a
large layer).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from sealift.compression import DEFAULT_LEVEL as SEALIFT_LEVELS
from sealift.compression import ZSTD, open_compressor
from sealift.delta import apply_patch, is_worth_it, make_patch, patch_budget
from sealift.delta.patch import DEFAULT_LEVEL, DEFAULT_SEGMENT_SIZE

LEVELS = (3, 9, 15, 19)
SEGMENTS_MIB = (16, 32, 64, 128, 256)
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
MIB = 1024 * 1024


# ------------------------------------------------------------------------------ layer pairs


@dataclass(frozen=True)
class PairSpec:
    name: str
    files: int
    file_size: int
    seed: int
    changed: tuple[int, ...]
    added: int
    removed: tuple[int, ...]
    change: str


PAIRS = (
    PairSpec("6 MB", 60, 100_000, 11, (7,), 0, (), "one line appended to one Python file"),
    PairSpec(
        "200 MB", 400, 500_000, 12, (3, 200, 398), 1, (150,), "3 files changed, 1 added, 1 removed"
    ),
)


def _file(index: int, size: int, seed: int) -> bytes:
    """Odd files are random (binaries), even ones text (scripts, configs)."""
    rng = random.Random(seed * 100_003 + index)
    if index % 2:
        return rng.randbytes(size)
    words = [rng.randbytes(rng.randint(1, 5)).hex().encode() for _ in range(500)]
    lines = (b"    " + b" ".join(rng.choices(words, k=10)) + b"\n" for _ in range(size // 40 + 1))
    return b"".join(lines)[:size]


def _write_tar(path: Path, members: Iterator[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


def build_pair(spec: PairSpec, workdir: Path) -> tuple[Path, Path]:
    """The pair's base and target tars (kept between runs: the content is fixed by the seed)."""
    base, target = workdir / f"{spec.seed}-base.tar", workdir / f"{spec.seed}-target.tar"
    if base.exists() and target.exists():
        return base, target

    def name(index: int) -> str:
        return f"usr/lib/app/pkg{index // 40}/module{index}.{'so' if index % 2 else 'py'}"

    def members(updated: bool) -> Iterator[tuple[str, bytes]]:
        for index in range(spec.files):
            if updated and index in spec.removed:
                continue
            data = _file(index, spec.file_size, spec.seed)
            if updated and index in spec.changed:
                data = _changed(data, index, spec)
            yield name(index), data
        if updated:
            for extra in range(spec.added):
                index = spec.files + extra
                yield name(index), _file(index, spec.file_size, spec.seed)

    _write_tar(base, members(updated=False))
    _write_tar(target, members(updated=True))
    return base, target


def _changed(data: bytes, index: int, spec: PairSpec) -> bytes:
    if spec.files == 60:  # the app-like update: one line at the end of a Python file
        return data + b"print('version 1.1')\n"
    rng = random.Random(index)
    at = len(data) // 3
    return data[:at] + rng.randbytes(4096) + data[at + 2048 :]


# ------------------------------------------------------------------- measured child runs


class AnonSampler:
    """Samples the process's RssAnon every 10 ms; ``peak`` in bytes."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AnonSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self._sample()

    def _sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                self.peak = max(self.peak, int(line.split()[1]) * 1024)


class _Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)


def _child_make(args: argparse.Namespace) -> dict[str, Any]:
    with Path(args.out).open("wb") as out:
        info = make_patch(
            Path(args.base), Path(args.target), out, level=args.level, segment_size=args.segment
        )
    assert info is not None
    return {"patch_bytes": info.size}


def _child_apply(args: argparse.Namespace) -> dict[str, Any]:
    with Path(args.out).open("rb") as patch:
        header = apply_patch(patch, Path(args.base), cast(IO[bytes], _Discard()))
    return {"rebuilt_bytes": header.target_size}


def _child_dict_api(args: argparse.Namespace) -> dict[str, Any]:
    """python-zstandard's own way: the base as a raw-content dictionary, LDM, a wide window."""
    base, target = Path(args.base).read_bytes(), Path(args.target).read_bytes()
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    window_log = min(31, max(10, (len(base) + len(target)).bit_length()))
    params = zstandard.ZstdCompressionParameters.from_level(
        args.level, window_log=window_log, enable_ldm=True
    )
    compressor = zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params)
    return {"patch_bytes": len(compressor.compress(target))}


def _child_whole(args: argparse.Namespace) -> dict[str, Any]:
    counter = _Counter()
    with Path(args.target).open("rb") as target:
        writer = open_compressor(cast(IO[bytes], counter), ZSTD, args.level)
        while chunk := target.read(MIB):
            writer.write(chunk)
        writer.close()
    return {"compressed_bytes": counter.count}


class _Counter(io.RawIOBase):
    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.count += len(data)
        return len(data)


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "make": _child_make,
    "apply": _child_apply,
    "dict-api": _child_dict_api,
    "whole": _child_whole,
}


def run_child(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    with AnonSampler() as anon:
        result = CHILDREN[args.child](args)
    result["seconds"] = time.perf_counter() - start
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["peak_anon"] = anon.peak
    print(json.dumps(result))
    return 0


def measure(
    child: str, base: Path, target: Path, out: Path, level: int, segment: int
) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "bench.delta", "--child", child, "--base", str(base),
        "--target", str(target), "--out", str(out), "--level", str(level),
        "--segment", str(segment),
    ]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def measure_zstd_cli(base: Path, target: Path, out: Path, level: int) -> dict[str, Any]:
    """``zstd --patch-from``, the real tool, for reference: size, wall, ``ru_maxrss``."""
    command = ["zstd", "-q", "-f", f"-{level}", f"--patch-from={base}", str(target), "-o", str(out)]
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return {
        "patch_bytes": out.stat().st_size,
        "seconds": seconds,
        "peak_rss": usage.ru_maxrss * 1024,
    }


# ----------------------------------------------------------------------------- the run


@dataclass
class Row:
    pair: str
    what: str
    level: int
    segment_mib: int
    patch_bytes: int | None
    make_seconds: float | None
    make_peak_rss: int | None
    make_peak_anon: int | None
    apply_seconds: float | None = None
    apply_peak_rss: int | None = None
    apply_peak_anon: int | None = None


def _median_of(runs: Sequence[dict[str, Any]], key: str) -> Any:
    return statistics.median(run[key] for run in runs)


def measure_patch(
    spec: PairSpec, base: Path, target: Path, work: Path, level: int, segment: int, rounds: int
) -> Row:
    patch = work / f"{spec.seed}-{level}-{segment}.patch"
    makes = [measure("make", base, target, patch, level, segment) for _ in range(rounds)]
    applies = [measure("apply", base, target, patch, level, segment) for _ in range(rounds)]
    return Row(
        spec.name, "sealift.delta", level, segment // MIB,
        makes[0]["patch_bytes"], _median_of(makes, "seconds"), max(r["peak_rss"] for r in makes),
        max(r["peak_anon"] for r in makes), _median_of(applies, "seconds"),
        max(r["peak_rss"] for r in applies), max(r["peak_anon"] for r in applies),
    )  # fmt: skip


def run(workdir: Path, quick: bool) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    rows: list[Row] = []
    wholes: dict[str, dict[str, Any]] = {}
    for spec in PAIRS[:1] if quick else PAIRS:
        base, target = build_pair(spec, workdir)
        rounds = 3 if spec.files == 60 else 1
        print(f"{spec.name}: {base.stat().st_size} -> {target.stat().st_size} bytes", flush=True)
        whole = measure("whole", base, target, workdir / "unused", SEALIFT_LEVELS[ZSTD], 0)
        wholes[spec.name] = {"bytes": target.stat().st_size, "zstd": whole}
        for level in LEVELS:
            segment = DEFAULT_SEGMENT_SIZE
            rows.append(measure_patch(spec, base, target, workdir, level, segment, rounds))
            print(f"  level {level}: {rows[-1]}", flush=True)
        if spec.files != 60:
            for mib in SEGMENTS_MIB:
                if mib * MIB == DEFAULT_SEGMENT_SIZE:
                    continue
                segment = mib * MIB
                rows.append(measure_patch(spec, base, target, workdir, DEFAULT_LEVEL, segment, 1))
                print(f"  segment {mib} MiB: {rows[-1]}", flush=True)
        cli = measure_zstd_cli(base, target, workdir / "cli.zst", DEFAULT_LEVEL)
        rows.append(
            Row(spec.name, "zstd --patch-from (CLI)", DEFAULT_LEVEL, 0, cli["patch_bytes"],
                cli["seconds"], cli["peak_rss"], None)
        )  # fmt: skip
        print(f"  zstd CLI: {rows[-1]}", flush=True)
        api = measure("dict-api", base, target, workdir / "unused", 3, 0)
        rows.append(
            Row(spec.name, "python-zstandard dict API", 3, 0, api["patch_bytes"],
                api["seconds"], api["peak_rss"], api["peak_anon"])
        )  # fmt: skip
        print(f"  dict API: {rows[-1]}", flush=True)
    return {
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": _machine(),
        "default_level": DEFAULT_LEVEL,
        "default_segment_mib": DEFAULT_SEGMENT_SIZE // MIB,
        "pairs": {spec.name: asdict(spec) for spec in PAIRS},
        "whole": wholes,
        "rows": [asdict(row) for row in rows],
    }


def _machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{model} x {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"zstandard {zstandard.__version__} (libzstd {zstandard.ZSTD_VERSION}), load {load}"
    )


# --------------------------------------------------------------------------------- report


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.1f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(results: dict[str, Any]) -> str:
    lines = [
        "# sealift bench: binary deltas between layer versions",
        "",
        f"Run {results['started']} -> {results['finished']} (UTC), `python -m bench.delta`. "
        f"Machine: {results['machine']}.",
        "",
        "Patch = `sealift.delta.make_patch` (header included); apply = `apply_patch`, verified "
        "against the target's diff_id. Each step runs in a fresh process: *RSS* is its peak "
        "`ru_maxrss` (which counts the pages of the mmapped base and of the files it reads), "
        "*anon* its sampled peak of anonymous memory (its own allocations). Times: median of 3 "
        "runs for the 6 MB pair, one run for the 200 MB pair. MB = 10^6 bytes.",
    ]
    for pair, whole in results["whole"].items():
        compressed = whole["zstd"]["compressed_bytes"]
        spec = results["pairs"][pair]
        lines += [
            "",
            f"## {pair}: {spec['change']}",
            "",
            f"Target layer: {whole['bytes']:,} bytes uncompressed, {compressed:,} as zstd "
            f"level {SEALIFT_LEVELS[ZSTD]} ({whole['zstd']['seconds']:.2f} s). A patch is used "
            f"when at most {max(patch_budget(compressed), 0):,} bytes (`patch_budget`).",
            "",
            "| method | level | segment MiB | patch bytes | x layer zstd | worth it | make s "
            "| make RSS MB | make anon MB | apply s | apply RSS MB | apply anon MB |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in results["rows"]:
            if row["pair"] != pair:
                continue
            size = row["patch_bytes"]
            chosen = (
                row["level"] == results["default_level"]
                and row["segment_mib"] == (results["default_segment_mib"])
            )
            what = f"**{row['what']}** (default)" if chosen else row["what"]
            lines.append(
                f"| {what} | {row['level']} | {row['segment_mib'] or '-'} | {size:,} "
                f"| {size / compressed:.4f} | {'yes' if is_worth_it(size, compressed) else 'no'} "
                f"| {_seconds(row['make_seconds'])} | {_mb(row['make_peak_rss'])} "
                f"| {_mb(row['make_peak_anon'])} | {_seconds(row['apply_seconds'])} "
                f"| {_mb(row['apply_peak_rss'])} | {_mb(row['apply_peak_anon'])} |"
            )
    lines += ["", "## Reading", "", *_reading(results)]
    return "\n".join(lines) + "\n"


def _reading(results: dict[str, Any]) -> list[str]:
    """The level and segment the defaults use, against the best each pair measured."""
    level, segment = results["default_level"], results["default_segment_mib"]
    out = [
        f"Defaults: level {level}, segments of {segment} MiB (`sealift.delta.patch`). "
        "Per pair, the default against the smallest patch of any level:",
        "",
    ]
    for pair in results["whole"]:
        ours = [r for r in results["rows"] if r["pair"] == pair and r["what"] == "sealift.delta"]
        default = next(r for r in ours if r["level"] == level and r["segment_mib"] == segment)
        smallest = min(ours, key=lambda r: r["patch_bytes"])
        out.append(
            f"- {pair}: {default['patch_bytes']:,} bytes in {default['make_seconds']:.2f} s "
            f"(apply {default['apply_seconds']:.2f} s, own memory {_mb(default['make_peak_anon'])}"
            f" / {_mb(default['apply_peak_anon'])} MB); smallest: level {smallest['level']}, "
            f"{smallest['patch_bytes']:,} bytes in {smallest['make_seconds']:.2f} s."
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.delta", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sealift-bench-delta"))
    parser.add_argument("--quick", action="store_true", help="only the 6 MB pair")
    parser.add_argument("--output", type=Path, default=RESULTS / "delta")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    for option in ("--base", "--target", "--out"):
        parser.add_argument(option, help=argparse.SUPPRESS)
    parser.add_argument("--level", type=int, default=DEFAULT_LEVEL, help=argparse.SUPPRESS)
    parser.add_argument("--segment", type=int, default=DEFAULT_SEGMENT_SIZE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)
    results = run(args.workdir, args.quick)
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(report(results))
    print(f"wrote {args.output}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
