"""Every contender of every stage: the exact command it times, what it resets first, what it checks.

A contender's script is one bash pipeline (run under ``set -e -o pipefail``). The engines are
addressed by ``DOCKER_HOST=...`` in front of each command (the bench's environment already points
at the source engine), with the engines' own docker client. ``sealift`` always runs as
``sys.executable -m sealift`` with ``PYTHONPATH=<repo>/src``, so the working tree is what gets
measured; its layer cache is the run's own (``SEALIFT_CACHE_DIR``), emptied before every trial
so that each trial compresses as a first save does, except where a row says it fills it first.

Every stage runs once per engine kind (a source and a destination of that kind); a contender
names the kinds it makes sense on (``kinds``).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.engines import (
    IMAGES,
    UPDATE_FROM,
    UPDATE_TO,
    DockerDaemon,
    EngineKind,
    reset_engine,
)
from bench.measure import Measurement

STAGES = ("save", "load", "update", "convert")
KINDS: tuple[EngineKind, ...] = ("docker20", "docker26")
ENGINE_LABEL: dict[EngineKind, str] = {
    "docker20": "Docker 20.10 (classic image store)",
    "docker26": "Docker 26 (containerd image store)",
}
# 100 Mbit/s, as pv counts it: 12500 KiB/s (≈102 Mbit/s).
DEFAULT_LINK = "12500k"


def link_rate(link: str) -> int:
    """pv's ``-L`` notation (``12500k``) in bytes per second."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = link.strip().lower()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


@dataclass
class Ctx:
    """Everything a contender needs: engines, paths, knobs, artifacts of earlier stages."""

    src: DockerDaemon
    dst: DockerDaemon
    work: Path
    python: str
    pythonpath: str
    link: str = DEFAULT_LINK
    update_save_args: list[str] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)

    @property
    def kind(self) -> EngineKind:
        return self.src.kind

    @property
    def docker(self) -> str:
        """The engines' own client, quoted for a script (source and destination are one kind)."""
        return shlex.join(self.src.client_command)

    @property
    def cache_dir(self) -> Path:
        return self.work / "sealift-cache"

    def env(self) -> dict[str, str]:
        env = self.src.env()
        env["PYTHONPATH"] = self.pythonpath
        env["SEALIFT_CACHE_DIR"] = str(self.cache_dir)
        return env

    def sealift(self, *args: str) -> str:
        return shlex.join([self.python, "-m", "sealift", *args, "-q"])

    def at_dst(self, command: str) -> str:
        return f"DOCKER_HOST={shlex.quote(self.dst.host)} {command}"

    def pv(self, count_file: Path) -> str:
        # -n -b: print the byte count (numerically) to stderr; -i 3600: in practice only at the end.
        return f"pv -f -n -b -i 3600 -L {self.link} 2>{shlex.quote(str(count_file))}"


@dataclass
class Contender:
    """One row of the results. ``baseline`` names the row its ratios are taken against."""

    stage: str
    name: str
    tool: str
    baseline: str
    script: Callable[[Ctx], str]
    outputs: Callable[[Ctx], list[Path]] = lambda ctx: []
    # Untimed, before every trial (e.g. empty the destination); returns facts for the JSON.
    prepare: Callable[[Ctx], dict[str, object]] | None = None
    # Untimed, after a successful trial: verify, count bytes; sets m.error / m.extra.
    after: Callable[[Ctx, Measurement], None] | None = None
    # Artifact key under which the (first) output is published for later stages.
    produces: str | None = None
    note: str = ""
    kinds: tuple[EngineKind, ...] = KINDS

    @property
    def key(self) -> str:
        return f"{self.stage}:{self.name}"

    @property
    def is_baseline(self) -> bool:
        return self.name == self.baseline


def _q(path: Path) -> str:
    return shlex.quote(str(path))


def _imgs(refs: tuple[str, ...] = IMAGES) -> str:
    return " ".join(shlex.quote(r) for r in refs)


def _files_bytes(ctx: Ctx, m: Measurement, paths: list[Path]) -> None:
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        m.error = f"no output {missing}"
        return
    m.extra["bytes"] = sum(p.stat().st_size for p in paths)


def _out(name: str) -> Callable[[Ctx], list[Path]]:
    return lambda ctx: [ctx.work / name]


# ---------------------------------------------------------------------------------------- save
SAVE_BASE = "docker save -o"
ZSTD_PIPE = "docker save | zstd -T0"
REPEAT_SAVE = "sealift save --compression zstd (repeat, layers cached)"
# skopeo 1.9 speaks Docker API 1.22; Docker 26 answers "1.24 is the minimum supported".
SKOPEO_KINDS: tuple[EngineKind, ...] = ("docker20",)


def _oci_unique_blob_bytes(paths: list[Path]) -> int:
    """Bytes of distinct blobs over several OCI archives (skopeo writes the base layer 4 times)."""
    seen: dict[str, int] = {}
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and member.name.lstrip("./").startswith("blobs/"):
                    seen[member.name.lstrip("./")] = member.size
    return sum(seen.values())


def _skopeo_save(fmt: str) -> Contender:
    names = [f"skopeo-{fmt}-{i}.tar" for i in range(len(IMAGES))]
    flag = "--dest-compress-format zstd " if fmt == "zstd" else ""

    def script(ctx: Ctx) -> str:
        host = shlex.quote(ctx.src.host)
        return "\n".join(
            f"skopeo copy -q --src-daemon-host {host} {flag}"
            f"docker-daemon:{shlex.quote(ref)} oci-archive:{_q(ctx.work / n)}"
            for ref, n in zip(IMAGES, names, strict=True)
        )

    def after(ctx: Ctx, m: Measurement) -> None:
        paths = [ctx.work / n for n in names]
        _files_bytes(ctx, m, paths)
        if m.error is None:
            m.extra["unique_blob_bytes"] = _oci_unique_blob_bytes(paths)

    return Contender(
        "save",
        f"skopeo copy → oci-archive ({fmt}), 4 copies",
        "skopeo",
        SAVE_BASE,
        script,
        outputs=lambda ctx: [ctx.work / n for n in names],
        after=after,
        note="one copy per image; bytes = sum of the 4 files, unique = distinct blobs",
        kinds=SKOPEO_KINDS,
    )


def _sealift_save(fmt: str) -> Contender:
    name = f"sealift-{fmt}.tar"
    return Contender(
        "save",
        f"sealift save --compression {fmt}",
        "sealift",
        SAVE_BASE,
        lambda ctx: ctx.sealift("save", *IMAGES, "-o", str(ctx.work / name), "--compression", fmt),
        outputs=_out(name),
        after=lambda ctx, m: _files_bytes(ctx, m, [ctx.work / name]),
        produces=f"sealift-{fmt}",
    )


def _sealift_repeat_save() -> Contender:
    """A save whose layers sealift's cache already holds: an untimed save fills it first."""
    name = "sealift-zstd-repeat.tar"
    warmup = "sealift-zstd-warmup.tar"

    def fill_cache(ctx: Ctx) -> dict[str, object]:
        command = [ctx.python, "-m", "sealift", "save", *IMAGES, "-o", str(ctx.work / warmup)]
        command += ["--compression", "zstd", "-q"]
        start = time.perf_counter()
        subprocess.run(command, env=ctx.env(), check=True, capture_output=True, timeout=1800)
        (ctx.work / warmup).unlink()
        return {"cache_fill_seconds": round(time.perf_counter() - start, 3)}

    return Contender(
        "save",
        REPEAT_SAVE,
        "sealift",
        SAVE_BASE,
        lambda ctx: ctx.sealift(
            "save", *IMAGES, "-o", str(ctx.work / name), "--compression", "zstd"
        ),
        outputs=_out(name),
        prepare=fill_cache,
        after=lambda ctx, m: _files_bytes(ctx, m, [ctx.work / name]),
        note="a second save: an untimed first save filled sealift's layer cache before each trial",
    )


def save_contenders() -> list[Contender]:
    def plain(
        name: str, file: str, script: Callable[[Ctx, Path], str], key: str | None
    ) -> Contender:
        return Contender(
            "save",
            name,
            "docker",
            SAVE_BASE,
            lambda ctx: script(ctx, ctx.work / file),
            outputs=_out(file),
            after=lambda ctx, m: _files_bytes(ctx, m, [ctx.work / file]),
            produces=key,
        )

    return [
        plain(
            SAVE_BASE,
            "docker.tar",
            lambda ctx, o: f"{ctx.docker} save -o {_q(o)} {_imgs()}",
            "docker-tar",
        ),
        plain(
            "docker save | gzip",
            "docker.tar.gz",
            lambda ctx, o: f"{ctx.docker} save {_imgs()} | gzip -c >{_q(o)}",
            None,
        ),
        plain(
            ZSTD_PIPE,
            "docker.tar.zst",
            lambda ctx, o: f"{ctx.docker} save {_imgs()} | zstd -q -T0 -c >{_q(o)}",
            None,
        ),
        _skopeo_save("gzip"),
        _skopeo_save("zstd"),
        _sealift_save("gzip"),
        _sealift_save("zstd"),
        _sealift_repeat_save(),
    ]


# ---------------------------------------------------------------------------------------- load
LOAD_BASE = "docker load -i"


def _verify_loaded(ctx: Ctx, m: Measurement, refs: tuple[str, ...]) -> None:
    want = {ref: ctx.src.tags().get(ref) for ref in refs}
    got = ctx.dst.tags()
    bad = [ref for ref, ident in want.items() if got.get(ref) != ident]
    if bad:
        m.error = f"destination lacks (or has another ID for) {bad}"


def _empty_dst(ctx: Ctx) -> dict[str, object]:
    return {"reset_seconds": round(reset_engine(ctx.dst), 3)}


def _load(name: str, tool: str, artifact: str, command: Callable[[Ctx, Path], str]) -> Contender:
    def script(ctx: Ctx) -> str:
        return command(ctx, ctx.artifacts[artifact])

    def after(ctx: Ctx, m: Measurement) -> None:
        m.extra["bytes"] = ctx.artifacts[artifact].stat().st_size
        _verify_loaded(ctx, m, IMAGES)

    return Contender(
        "load",
        name,
        tool,
        LOAD_BASE,
        script,
        prepare=_empty_dst,
        after=after,
        note=f"input: the {artifact} archive of the save stage; bytes = archive size",
    )


def load_contenders() -> list[Contender]:
    return [
        _load(
            LOAD_BASE,
            "docker",
            "docker-tar",
            lambda c, a: c.at_dst(f"{c.docker} load -q -i {_q(a)}"),
        ),
        _load(
            "sealift load (zstd archive)",
            "sealift",
            "sealift-zstd",
            lambda c, a: c.at_dst(c.sealift("load", str(a))),
        ),
        _load(
            "sealift load (gzip archive)",
            "sealift",
            "sealift-gzip",
            lambda c, a: c.at_dst(c.sealift("load", str(a))),
        ),
    ]


# -------------------------------------------------------------------------------------- update
UPDATE_BASE = "docker save | pv | docker load"
SSH_PIPE = "docker save | ssh | docker load"


def _dst_has_only_from(ctx: Ctx) -> dict[str, object]:
    seconds = reset_engine(ctx.dst, keep=[UPDATE_FROM])
    if not ctx.dst.has_image(UPDATE_FROM):
        seconds += reset_engine(ctx.dst)
        ctx.dst.docker("load", "-q", "-i", str(ctx.artifacts["from-tar"]), timeout=900)
    if ctx.dst.has_image(UPDATE_TO):
        raise RuntimeError(f"could not remove {UPDATE_TO} from the destination")
    return {"reset_seconds": round(seconds, 3)}


def _update_after(count: str) -> Callable[[Ctx, Measurement], None]:
    def after(ctx: Ctx, m: Measurement) -> None:
        lines = (ctx.work / count).read_text().split()
        m.extra["bytes"] = int(lines[-1]) if lines else 0
        _verify_loaded(ctx, m, (UPDATE_TO,))

    return after


def update_contenders() -> list[Contender]:
    def docker(ctx: Ctx) -> str:
        pv = ctx.pv(ctx.work / "update-docker.count")
        return f"{ctx.docker} save {UPDATE_TO} | {pv} | " + ctx.at_dst(f"{ctx.docker} load -q")

    def sealift(ctx: Ctx) -> str:
        pv = ctx.pv(ctx.work / "update-sealift.count")
        save = ctx.sealift(
            "save", UPDATE_TO, "-o", "-", "--compression", "zstd", *ctx.update_save_args
        )
        return f"{save} | {pv} | " + ctx.at_dst(ctx.sealift("load", "-"))

    rows = [
        Contender(
            "update",
            UPDATE_BASE,
            "docker",
            UPDATE_BASE,
            docker,
            prepare=_dst_has_only_from,
            after=_update_after("update-docker.count"),
            note=f"destination holds {UPDATE_FROM}; bytes = through pv",
        ),
        Contender(
            "update",
            "sealift save | pv | sealift load -",
            "sealift",
            UPDATE_BASE,
            sealift,
            prepare=_dst_has_only_from,
            after=_update_after("update-sealift.count"),
            note="a plain stream, no delta (for comparison: the update targets are push's)",
        ),
    ]
    return rows + sealift_push_contenders()


def sealift_push_contenders() -> list[Contender]:
    """The rows over SSH (sealift push, docker save | ssh | docker load): see ssh_push.py."""
    from bench.ssh_push import push_contenders

    return push_contenders()


# ------------------------------------------------------------------------------------- convert
CONVERT_BASE = "skopeo copy docker-archive → oci-archive zstd"
# File to file: no engine takes part, so one kind is enough (its input is Docker 20.10's save).
CONVERT_KINDS: tuple[EngineKind, ...] = ("docker20",)


def convert_contenders() -> list[Contender]:
    def skopeo(ctx: Ctx) -> str:
        src = ctx.artifacts["to-tar"]
        return (
            "skopeo copy -q --dest-compress-format zstd "
            f"docker-archive:{_q(src)} oci-archive:{_q(ctx.work / 'convert-skopeo.tar')}"
        )

    def sealift(ctx: Ctx) -> str:
        src = ctx.artifacts["to-tar"]
        dst = ctx.work / "convert-sealift.tar"
        return ctx.sealift("convert", str(src), str(dst), "--compression", "zstd")

    return [
        Contender(
            "convert",
            CONVERT_BASE,
            "skopeo",
            CONVERT_BASE,
            skopeo,
            outputs=_out("convert-skopeo.tar"),
            after=lambda ctx, m: _files_bytes(ctx, m, [ctx.work / "convert-skopeo.tar"]),
            note=f"input: docker save of {UPDATE_TO} (one image, 3 layers)",
            kinds=CONVERT_KINDS,
        ),
        Contender(
            "convert",
            "sealift convert --compression zstd",
            "sealift",
            CONVERT_BASE,
            sealift,
            outputs=_out("convert-sealift.tar"),
            after=lambda ctx, m: _files_bytes(ctx, m, [ctx.work / "convert-sealift.tar"]),
            kinds=CONVERT_KINDS,
        ),
    ]


def all_contenders() -> list[Contender]:
    return save_contenders() + load_contenders() + update_contenders() + convert_contenders()


def select(contenders: list[Contender], only: list[str]) -> list[Contender]:
    """Keep contenders matching any token (tool, stage, or a substring of the name), plus the
    baselines of every stage that keeps a row."""
    if not only:
        return contenders
    tokens = [t.strip().lower() for t in only if t.strip()]

    def hit(c: Contender) -> bool:
        return any(t in (c.tool, c.stage) or t in c.name.lower() for t in tokens)

    chosen = {c.key for c in contenders if hit(c)}
    stages = {c.stage for c in contenders if c.key in chosen}
    return [c for c in contenders if c.key in chosen or (c.is_baseline and c.stage in stages)]


def docker_save_manifest_layers(tar_path: Path) -> list[str]:
    """Member names of the layer tars of the first image in a ``docker save`` archive."""
    with tarfile.open(tar_path) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(member)
    layers: list[str] = manifest[0]["Layers"]
    return layers
