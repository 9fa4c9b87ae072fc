"""``python -m bench``: start two engines, build the bench images, time every contender.

See bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import compileall
import concurrent.futures
import contextlib
import datetime as dt
import fcntl
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import zstandard

from bench import edge, floors, limits, registry
from bench.contenders import (
    DEFAULT_LINK,
    KINDS,
    STAGES,
    Contender,
    Ctx,
    all_contenders,
    docker_save_manifest_layers,
    link_rate,
    select,
)
from bench.engines import (
    BUILD_DIR,
    IMAGES,
    REPO,
    UPDATE_FROM,
    UPDATE_TO,
    DockerDaemon,
    EngineKind,
    build_images,
    engine_processes,
    make_engine,
    missing_docker26_reason,
    reset_engine,
)
from bench.measure import Measurement, run_measured
from bench.report import Check, Row, checks, write

TOOLS = ("skopeo", "zstd", "gzip", "pv", "bash")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--rounds", type=int, default=3, help="rounds per stage (default 3)")
    p.add_argument("--quick", action="store_true", help="1 round and 64 MiB of limits data")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TOKENS",
        help="comma list: keep contenders whose tool (docker, skopeo, sealift), stage "
        "(save, load, update, convert, registry, edge) or name matches; stage baselines always run",
    )
    p.add_argument(
        "--kinds",
        default=",".join(KINDS),
        metavar="KINDS",
        help="engine kinds to run the stages on, comma list (default docker20,docker26); "
        "registry and edge run with docker20 only",
    )
    p.add_argument(
        "--workdir", type=Path, default=Path("/tmp/sealift-bench"), help="engines + archives"
    )
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--build-dir", type=Path, default=BUILD_DIR, help="make-images.sh cache")
    p.add_argument("--link", default=DEFAULT_LINK, help="pv -L rate of the update link")
    p.add_argument("--update-save-args", default="", help="extra args for sealift save in update")
    p.add_argument("--limits-mib", type=int, default=256, help="data size for machine limits")
    p.add_argument("--no-limits", action="store_true", help="skip the machine-limit measurements")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per trial")
    p.add_argument("--keep-artifacts", action="store_true", help="keep the archives in WORKDIR")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 1
        args.limits_mib = min(args.limits_mib, 64)
    args.only = [t for chunk in args.only for t in chunk.split(",")]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        p.error(f"--kinds: {unknown or 'none given'}; choose from {', '.join(KINDS)}")
    args.kinds = tuple(k for k in KINDS if k in kinds)
    return args


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT / SIGTERM / SIGHUP raise KeyboardInterrupt, so every ``with`` stops its engine.

    SIGINT is set explicitly: a shell starts background jobs with it ignored, and Python keeps
    an inherited SIG_IGN.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def log(msg: str) -> None:
    print(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {msg}", flush=True)


def _run(cmd: list[str], ctx: Ctx, timeout: float = 1800) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, env=ctx.env(), capture_output=True, timeout=timeout, check=False)


def _run_sealift_from_bytecode() -> str:
    """Let sealift run as installed, from bytecode: with PYTHONDONTWRITEBYTECODE (set in some
    sessions) every sealift process compiled its whole source again, ~0.3 s of CPU per start.
    The engines and sshd inherit this environment, so the remote sealift gains too."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    compileall.compile_dir(REPO / "src", quiet=1)
    return f"{time.perf_counter() - start:.1f}s"


def _ensure_artifact(ctx: Ctx, key: str, setup: dict[str, Any]) -> None:
    """Make an input a stage needs (untimed) when the stage that normally makes it did not."""
    if key in ctx.artifacts and ctx.artifacts[key].exists():
        return
    start = time.perf_counter()
    if key in ("docker-tar", "from-tar", "to-tar"):
        refs = {"docker-tar": list(IMAGES), "from-tar": [UPDATE_FROM], "to-tar": [UPDATE_TO]}[key]
        path = ctx.work / f"{key}.tar"
        ctx.src.docker("save", "-o", str(path), *refs, timeout=1800)
    elif key.startswith("sealift-"):
        fmt = key.removeprefix("sealift-")
        path = ctx.work / f"{key}.tar"
        res = _run(
            [ctx.python, "-m", "sealift", "save", *IMAGES, "-o", str(path), "--compression", fmt],
            ctx,
        )
        if res.returncode != 0:
            last = res.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            setup[f"make {key}"] = f"FAILED: {last[0][:200]}"
            return
    else:
        raise KeyError(key)
    ctx.artifacts[key] = path
    setup[f"make {key}"] = f"{time.perf_counter() - start:.1f}s"


def _stage_setup(ctx: Ctx, stage: str, rows: list[Contender], setup: dict[str, Any]) -> None:
    """Untimed inputs of a stage; raises if the stage cannot run."""
    if stage == "load":
        _ensure_artifact(ctx, "docker-tar", setup)
        if any(c.tool == "sealift" for c in rows):
            _ensure_artifact(ctx, "sealift-zstd", setup)
            _ensure_artifact(ctx, "sealift-gzip", setup)
    if stage == "update":
        _ensure_artifact(ctx, "from-tar", setup)
        _ensure_artifact(ctx, "to-tar", setup)
        ctx.facts["changed_layer"] = _changed_layer(ctx)
        ctx.facts["link_bytes_per_s"] = link_rate(ctx.link)
        setup["empty destination before update"] = f"{reset_engine(ctx.dst):.1f}s"
    if stage == "convert":
        _ensure_artifact(ctx, "to-tar", setup)
    if stage == registry.STAGE:
        _ensure_artifact(ctx, "sealift-zstd", setup)
        registry.setup(ctx, setup)
    if stage == edge.STAGE:
        _ensure_artifact(ctx, "from-tar", setup)
        _ensure_artifact(ctx, "to-tar", setup)


def _changed_layer(ctx: Ctx) -> dict[str, Any]:
    """The layers of UPDATE_TO that UPDATE_FROM lacks: as the source's save holds them (Docker
    20.10: tars; Docker 26: its stored blobs, gzip here), as tar, zstd -3 and gzip -6 bytes."""
    import gzip
    import tarfile

    def diff_ids(ref: str) -> list[str]:
        rootfs = ctx.src.inspect(ref)["RootFS"]
        assert isinstance(rootfs, dict)
        return list(rootfs["Layers"])

    old = set(diff_ids(UPDATE_FROM))
    new = diff_ids(UPDATE_TO)
    idx = [i for i, d in enumerate(new) if d not in old]
    names = docker_save_manifest_layers(ctx.artifacts["to-tar"])
    stored = raw = z = g = 0
    with tarfile.open(ctx.artifacts["to-tar"]) as tar:
        for i in idx:
            f = tar.extractfile(names[i])
            assert f is not None
            blob = f.read()
            stored += len(blob)
            data = floors.layer_tar(blob)
            raw += len(data)
            z += len(zstandard.ZstdCompressor(level=3).compress(data))
            g += len(gzip.compress(data, 6, mtime=0))
    return {
        "image": UPDATE_TO,
        "layers": len(idx),
        "names": [names[i] for i in idx],
        "stored_bytes": stored,
        "uncompressed_bytes": raw,
        "zstd3_bytes": z,
        "gzip6_bytes": g,
    }


def _probe_floor(ctx: Ctx, stage: str, setup: dict[str, Any]) -> None:
    """After a stage, the untimed facts its floors need (see bench/floors.py)."""
    try:
        if stage == "save":
            probe = ctx.facts["export_probe"] = floors.probe_export(ctx, list(IMAGES))
            if ctx.kind == "docker26":  # its save holds gzip blobs
                probe["layer_bytes"] = floors.layer_bytes(ctx.artifacts["docker-tar"])
        elif stage == "update":
            ctx.facts["export_probe_update"] = floors.probe_export(ctx, [UPDATE_TO])
            ctx.facts["apply_probe_update"] = floors.probe_apply(ctx)
        elif stage == "convert":
            ctx.facts["convert_input_bytes"] = ctx.artifacts["to-tar"].stat().st_size
    except Exception as exc:
        setup[f"{stage} floor probe"] = f"FAILED: {type(exc).__name__}: {exc}"[:300]


def run_stage(
    ctx: Ctx,
    stage: str,
    rows: list[Contender],
    rounds: int,
    timeout: float,
    results: dict[str, Row],
) -> None:
    for c in rows:
        results[c.key] = Row(c, [])
    n = len(rows)
    for r in range(rounds):
        order = rows[r % n :] + rows[: r % n]  # alternate who goes first
        for c in order:
            m = trial(ctx, c, timeout)
            results[c.key].trials.append(m)
            what = f"ERROR {m.error}" if m.error else f"{m.wall:.2f}s bytes={m.extra.get('bytes')}"
            rss = f"rss tree {m.peak_rss_tree / 1e6:.0f}MB proc {m.peak_rss_proc / 1e6:.0f}MB"
            log(f"{stage} round {r + 1}/{rounds} {c.name}: {what} {rss}")


def trial(ctx: Ctx, c: Contender, timeout: float) -> Measurement:
    try:
        script = c.script(ctx)
    except KeyError as exc:
        return Measurement(wall=0.0, returncode=-1, error=f"missing input {exc} (its maker failed)")
    for out in c.outputs(ctx):
        out.unlink(missing_ok=True)
    shutil.rmtree(ctx.cache_dir, ignore_errors=True)  # every trial starts with no layer cached
    info: dict[str, object] = {}
    if c.prepare is not None:
        try:
            info = c.prepare(ctx)
        except Exception as exc:
            return Measurement(wall=0.0, returncode=-1, error=f"prepare failed: {exc}"[:300])
    os.sync()  # earlier trials' dirty pages should not be written back during this one
    info["loadavg_before"] = _loadavg()
    name = f"{ctx.kind}-{c.key}".replace("/", "_").replace(" ", "_")
    logfile = ctx.work.parent.parent / "logs" / f"{name}.log"
    m = run_measured(
        "set -e\n" + script,
        env=ctx.env(),
        cwd=ctx.work,
        log=logfile,
        timeout=timeout,
        engines=engine_processes(ctx.src, ctx.dst),
    )
    m.extra.update(info)
    src_cpu, dst_cpu = m.cpu_engines  # engine_processes(src, dst) keeps that order
    m.extra["cpu_engine_src_s"] = round(src_cpu, 3)
    m.extra["cpu_engine_dst_s"] = round(dst_cpu, 3)
    if m.error is None and c.after is not None:
        try:
            c.after(ctx, m)
        except Exception as exc:
            m.error = f"check failed: {exc}"[:300]
    if m.error is None and c.produces:
        outs = c.outputs(ctx)
        if outs:
            ctx.artifacts[c.produces] = outs[0]
    return m


def _tool_versions() -> str:
    def first(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
        except OSError:
            return "missing"
        found = re.search(r"\d+\.\d+(\.\d+)?", out.stdout or out.stderr)
        return f"{cmd[0]} {found.group(0) if found else '?'}"

    return (
        f"{first(['skopeo', '--version'])}, {first(['zstd', '--version'])}, "
        f"{first(['pv', '--version'])}, Python {platform.python_version()}"
    )


def _engine_info(src: DockerDaemon) -> dict[str, str]:
    server = src.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    return {"dockerd": server, "storage_driver": src.storage_driver}


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _meta(argv: list[str] | None, rounds: int, started: dt.datetime) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "started": f"{started:%Y-%m-%d %H:%M:%S}",
        "rounds": rounds,
        "command": shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)]),
        "commit": commit or "?",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "kernel": platform.release(),
        "loadavg_start": _loadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        print(f"bench: interrupted ({exc or 'Ctrl-C'}); engines stopped", file=sys.stderr)
        return 130


EnginePair = tuple[DockerDaemon, DockerDaemon]
ALL_STAGES = (*STAGES, registry.STAGE, edge.STAGE)


def _start_engines(
    kinds: tuple[EngineKind, ...], work: Path, build_dir: Path, stack: contextlib.ExitStack
) -> tuple[dict[EngineKind, EnginePair], dict[EngineKind, str]]:
    """A source and a destination engine per kind, the source given the bench images; all kinds
    at once (untimed: nothing is measured while they start and build)."""
    pairs: dict[EngineKind, EnginePair] = {}
    for kind in kinds:
        src = make_engine(kind, f"{kind}-src", work / "engines" / kind / "src")
        dst = make_engine(kind, f"{kind}-dst", work / "engines" / kind / "dst")
        stack.callback(dst.stop)
        stack.callback(src.stop)
        pairs[kind] = (src, dst)

    def prepare(kind: EngineKind) -> str:
        src, dst = pairs[kind]
        src.start()
        dst.start()
        log(f"{kind}: engines up ({src.storage_driver}); giving {src.name} the bench images")
        return build_images(src, work / f"make-images-{kind}.log", build_dir)

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(kinds)) as pool:
        built = {kind: pool.submit(prepare, kind) for kind in kinds}
        return pairs, {kind: future.result() for kind, future in built.items()}


def _run_kind(
    ctx: Ctx, chosen: list[Contender], args: argparse.Namespace, rows: dict[str, Row]
) -> None:
    """Every stage on ``ctx``'s engine pair, one stage at a time (a stage runs only the
    contenders made for this kind: registry and edge run on docker20 alone)."""
    setup = ctx.facts["setup"]
    assert isinstance(setup, dict)
    for stage in ALL_STAGES:
        stage_rows = [c for c in chosen if c.stage == stage and ctx.kind in c.kinds]
        if not stage_rows:
            continue
        log(f"{ctx.kind} stage {stage}: {len(stage_rows)} contenders x {args.rounds} rounds")
        dead = [d.name for d in (ctx.src, ctx.dst) if not d.running]
        try:
            if dead:
                raise RuntimeError(f"engine(s) {dead} died (see their dockerd.log)")
            _stage_setup(ctx, stage, stage_rows, setup)
        except Exception as exc:
            why = f"stage setup failed: {type(exc).__name__}: {exc}"[:400]
            log(f"{ctx.kind} {stage}: {why}")
            for c in stage_rows:
                rows[c.key] = Row(c, [Measurement(wall=0.0, returncode=-1, error=why)])
            continue
        run_stage(ctx, stage, stage_rows, args.rounds, args.timeout, rows)
        _probe_floor(ctx, stage, setup)


def _main(argv: list[str] | None) -> int:
    args = parse(argv)
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"bench: missing tools {missing} (apt-get install skopeo zstd pv)", file=sys.stderr)
        return 2
    cannot = missing_docker26_reason() if "docker26" in args.kinds else None
    if cannot:
        print(
            f"bench: no Docker 26 engines here: {cannot}; or pass --kinds docker20", file=sys.stderr
        )
        return 2
    started = dt.datetime.now(dt.UTC)
    chosen = select(all_contenders() + registry.contenders() + edge.contenders(), args.only)
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    lock = open(work / ".lock", "a+")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"bench: another run is using {work}; wait, or pass --workdir", file=sys.stderr)
        return 2
    arts = work / "artifacts"
    shutil.rmtree(arts, ignore_errors=True)
    (work / "logs").mkdir(exist_ok=True)
    result: dict[str, Any] = {"meta": _meta(argv, args.rounds, started)}
    result["meta"]["versions"] = _tool_versions()
    compiled = _run_sealift_from_bytecode()
    facts: dict[EngineKind, dict[str, Any]] = {
        kind: {"setup": {"sealift bytecode compiled": compiled}} for kind in args.kinds
    }
    rows: dict[EngineKind, dict[str, Row]] = {kind: {} for kind in args.kinds}
    engines: dict[str, dict[str, str]] = {}
    with _signals_raise(), contextlib.ExitStack() as stack:
        log(f"starting engines: {', '.join(args.kinds)} (a source and a destination each)")
        pairs, images = _start_engines(args.kinds, work, args.build_dir, stack)
        for kind, (src, dst) in pairs.items():
            facts[kind]["setup"]["bench images"] = images[kind]
            engines[kind] = _engine_info(src)
            (arts / kind).mkdir(parents=True)
            ctx = Ctx(
                src=src,
                dst=dst,
                work=arts / kind,
                python=sys.executable,
                pythonpath=os.pathsep.join(
                    filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])
                ),
                link=args.link,
                update_save_args=shlex.split(args.update_save_args),
                facts=facts[kind],
            )
            _run_kind(ctx, chosen, args, rows[kind])
        if not args.no_limits:
            result["limits"] = _machine_limits(arts, args, facts)
        log("stopping engines")
    result["meta"]["engines"] = engines
    result["meta"]["loadavg_end"] = _loadavg()
    result["meta"]["finished"] = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S}"
    result["facts"] = facts
    found = checks(rows, facts, result.get("limits", {})) + _stage_checks(rows)
    write(args.results, result, rows, found)
    if not args.keep_artifacts:
        shutil.rmtree(arts, ignore_errors=True)
    print((args.results / "latest.md").read_text())
    for ch in found:
        m = f"{ch.measured:.3f}" if ch.measured is not None else "-"
        print(f"{ch.verdict:5} {ch.kind} {ch.target} [{ch.row}]: {m} (limit {ch.limit} {ch.unit})")
    return 0


def _stage_checks(rows: dict[EngineKind, dict[str, Row]]) -> list[Check]:
    """The registry and edge stages' targets, for the kinds whose rows ran them."""
    found: list[Check] = []
    for kind, kind_rows in rows.items():
        for check in registry.checks(kind_rows) + edge.checks(kind_rows):
            check.kind = kind
            found.append(check)
    return found


def _machine_limits(
    arts: Path, args: argparse.Namespace, facts: dict[EngineKind, dict[str, Any]]
) -> dict[str, Any]:
    """Codec and hash speeds on the bench's own (uncompressed) layer data."""
    log(f"machine limits on {args.limits_mib} MiB")
    # Docker 20.10's save holds the layers as tars; Docker 26's holds its gzip blobs.
    sources = [arts / "docker20" / "docker-tar.tar", arts / "docker20" / "docker.tar"]
    sources.append(args.build_dir / "base" / "rootfs.tar")
    try:
        data, source = limits.sample_data(
            [p for p in sources if p.exists()], args.limits_mib * 2**20
        )
    except Exception as exc:
        for kind_facts in facts.values():
            kind_facts["setup"]["machine limits"] = f"FAILED: {type(exc).__name__}: {exc}"[:300]
        return {}
    found = {"source": Path(source).name, "bytes": len(data), "rows": limits.measure(data)}
    del data
    return found
