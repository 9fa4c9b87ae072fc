"""Stage "registry": push the four bench images to a loopback registry and pull them back.

The registry is Debian's ``docker-registry`` (distribution 2.8, ``tests.support.peers.Registry``:
plain HTTP on 127.0.0.1, filesystem storage in a temp dir). Every contender talks to it through
:class:`CountingRelay`, a TCP relay in the bench process that counts the bytes crossing in both
directions (requests, responses, headers and bodies): that count is the row's bytes.

Like with like: both tools move the same zstd blobs and manifests, those of sealift's zstd
archive of the save stage. sealift reads that archive; skopeo reads the same archive unpacked
(untimed) into an OCI layout, its fastest input (``oci-archive:`` would first unpack into a temp
dir inside the timed run), one copy per image, with no compression flag, so it sends the blobs as
they are. Pulls go into one OCI layout per tool (four copies each, so a blob shared by two images
is fetched once). Before every push trial the registry is emptied (stopped, storage removed,
started again; untimed); before every pull and repeat push it holds the four images.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bench.contenders import Contender, Ctx
from bench.engines import IMAGES, EngineKind
from bench.measure import Measurement
from bench.report import Check, Row
from tests.support.peers import Registry

STAGE = "registry"
# No engine takes part, so the stage runs once, on the kind whose save wrote the archive.
KINDS: tuple[EngineKind, ...] = ("docker20",)
PUSH_BASE = "skopeo copy oci:LAYOUT → registry, 4 copies"
PULL_BASE = "skopeo copy registry → oci:LAYOUT, 4 copies"
SEALIFT_PUSH = "sealift copy archive → registry"
SEALIFT_REPEAT = "sealift copy archive → registry (repeat, unchanged)"
SEALIFT_PULL = "sealift copy registry → oci:LAYOUT, 4 copies"
# "Equal bytes": the same blobs and manifests; HTTP headers and probes differ by tool.
SAME_BYTES = 1.01
_CHUNK = 256 * 1024
_MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


class CountingRelay:
    """A TCP relay from 127.0.0.1:``port`` to 127.0.0.1:``upstream_port`` that counts bytes.

    ``upstream_port`` may change between connections (the registry restarts on a new port).
    The relay's own CPU seconds are kept too: it runs in the bench process, outside the timed
    tree, so they show what it takes from the cores.
    """

    def __init__(self) -> None:
        self.upstream_port = 0
        self._bytes = 0
        self._cpu = 0.0
        self._open = 0
        self._idle = threading.Condition()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def take(self, settle: float = 5.0) -> tuple[int, float]:
        """Bytes relayed (both directions) and the relay's CPU seconds since the last call,
        once every connection closed (or ``settle`` seconds passed)."""
        with self._idle:
            self._idle.wait_for(lambda: self._open == 0, timeout=settle)
            taken = self._bytes, self._cpu
            self._bytes, self._cpu = 0, 0.0
        return taken

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._idle:
                self._open += 1
            threading.Thread(target=self._connection, args=(client, upstream), daemon=True).start()

    def _connection(self, client: socket.socket, upstream: socket.socket) -> None:
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        client.close()
        upstream.close()
        with self._idle:
            self._open -= 1
            self._idle.notify_all()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        moved = 0
        try:
            while data := src.recv(_CHUNK):
                dst.sendall(data)
                moved += len(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:  # one side reset: stop the other direction too
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        with self._idle:
            self._bytes += moved
            self._cpu += time.thread_time()


class _Site:
    """The registry, the relay in front of it and skopeo's OCI layout of the archive."""

    def __init__(self, ctx: Ctx) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sealift-bench-registry-"))
        self.registry = Registry(self.root / "registry")
        self.relay = CountingRelay()
        self.layout = ctx.work / "registry-skopeo-input"
        self.archive = ctx.artifacts["sealift-zstd"]
        self.refs = _unpack_layout(self.archive, self.layout)

    def empty(self) -> None:
        """Stop the registry, drop its storage, start it again (empty)."""
        self.registry.stop()
        shutil.rmtree(self.registry.storage, ignore_errors=True)
        self.registry.start()
        self.relay.upstream_port = self.registry.port

    def stop(self) -> None:
        self.registry.stop()
        self.relay.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def manifest_digests(self) -> dict[str, str | None]:
        """Each bench image's manifest digest in the registry (None: not there)."""
        return {ref: _head_manifest(self.registry.address, ref) for ref in IMAGES}


_SITE: list[_Site] = []


def _site() -> _Site:
    if not _SITE:
        raise RuntimeError("the registry stage's setup did not run")
    return _SITE[0]


def setup(ctx: Ctx, notes: dict[str, object]) -> None:
    """Start the registry and relay, unpack skopeo's input (untimed, once per run)."""
    if _SITE:
        _SITE.pop().stop()
    site = _Site(ctx)
    atexit.register(site.stop)
    site.empty()
    _SITE.append(site)
    notes["registry"] = f"docker-registry at {site.registry.address}, relay {site.relay.address}"
    notes["sealift start (the repeat push's floor)"] = _sealift_start(ctx)


def _sealift_start(ctx: Ctx, rounds: int = 3) -> str:
    """Median wall and CPU seconds of ``sealift --version``: what any sealift command costs."""
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        version = [ctx.python, "-m", "sealift", "--version"]
        subprocess.run(version, env=ctx.env(), check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return f"{statistics.median(walls):.2f} s wall, {statistics.median(cpus):.2f} CPU-s"


def _unpack_layout(archive: Path, layout: Path) -> dict[str, str]:
    """Unpack an OCI archive into ``layout``; return each image's manifest digest by ref name."""
    shutil.rmtree(layout, ignore_errors=True)
    layout.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="data")
    index = json.loads((layout / "index.json").read_text())
    refs: dict[str, str] = {}
    for entry in index["manifests"]:
        name = entry.get("annotations", {}).get("org.opencontainers.image.ref.name")
        if name in IMAGES:
            refs[name] = entry["digest"]
    missing = [ref for ref in IMAGES if ref not in refs]
    if missing:
        raise RuntimeError(f"{archive.name} has no ref.name for {missing}")
    return refs


def _head_manifest(address: str, ref: str) -> str | None:
    repo, _, tag = ref.rpartition(":")
    request = urllib.request.Request(
        f"http://{address}/v2/{repo}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": _MANIFEST_TYPES},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            digest = response.headers.get("Docker-Content-Digest")
            return str(digest) if digest else None
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _registry_holds_archive(site: _Site) -> list[str]:
    """The bench images whose manifest in the registry is not the archive's (empty: all match)."""
    held = site.manifest_digests()
    return [ref for ref in IMAGES if held[ref] != site.refs[ref]]


# ------------------------------------------------------------------------------------ prepares
def _prepare_empty(ctx: Ctx) -> dict[str, object]:
    site = _site()
    site.empty()
    site.relay.take()
    return {}


def _prepare_full(ctx: Ctx) -> dict[str, object]:
    """The registry holds the archive's four images (pushed untimed by sealift if not)."""
    site = _site()
    if _registry_holds_archive(site):
        site.empty()
        push = [ctx.python, "-m", "sealift", "copy", str(site.archive), _dest(site), "-q"]
        subprocess.run(push, env=ctx.env(), check=True, capture_output=True, timeout=900)
    site.relay.take()
    return {}


def _pull_layout(ctx: Ctx, tool: str) -> Path:
    return ctx.work / f"registry-pull-{tool}"


def _prepare_pull(tool: str) -> Callable[[Ctx], dict[str, object]]:
    def prepare(ctx: Ctx) -> dict[str, object]:
        shutil.rmtree(_pull_layout(ctx, tool), ignore_errors=True)
        return _prepare_full(ctx)

    return prepare


# -------------------------------------------------------------------------------------- checks
def _count(site: _Site, m: Measurement) -> None:
    m.extra["bytes"], relay_cpu = site.relay.take()
    m.extra["relay_cpu_s"] = round(relay_cpu, 3)


def _after_push(ctx: Ctx, m: Measurement) -> None:
    site = _site()
    _count(site, m)
    wrong = _registry_holds_archive(site)
    if wrong:
        m.error = f"registry lacks (or has other manifests for) {wrong}"


def _after_pull(tool: str) -> Callable[[Ctx, Measurement], None]:
    def after(ctx: Ctx, m: Measurement) -> None:
        site = _site()
        _count(site, m)
        index = json.loads((_pull_layout(ctx, tool) / "index.json").read_text())
        got = {e["digest"] for e in index["manifests"]}
        missing = [ref for ref in IMAGES if site.refs[ref] not in got]
        if missing:
            m.error = f"the layout lacks the archive's manifests of {missing}"

    return after


# ---------------------------------------------------------------------------------- contenders
def _dest(site: _Site) -> str:
    return f"docker://{site.relay.address}/"


def _skopeo_push(ctx: Ctx) -> str:
    site = _site()
    return "\n".join(
        f"skopeo copy -q --dest-tls-verify=false oci:{shlex.quote(f'{site.layout}:{ref}')} "
        f"docker://{site.relay.address}/{ref}"
        for ref in IMAGES
    )


def _sealift_push(ctx: Ctx) -> str:
    site = _site()
    return ctx.sealift("copy", str(site.archive), _dest(site))


def _skopeo_pull(ctx: Ctx) -> str:
    site = _site()
    layout = _pull_layout(ctx, "skopeo")
    return "\n".join(
        f"skopeo copy -q --src-tls-verify=false docker://{site.relay.address}/{ref} "
        f"oci:{shlex.quote(f'{layout}:{ref}')}"
        for ref in IMAGES
    )


def _sealift_pull(ctx: Ctx) -> str:
    site = _site()
    layout = _pull_layout(ctx, "sealift")
    return "\n".join(
        ctx.sealift("copy", f"docker://{site.relay.address}/{ref}", f"oci:{layout}")
        for ref in IMAGES
    )


def contenders() -> list[Contender]:
    rows = [
        Contender(
            STAGE,
            PUSH_BASE,
            "skopeo",
            PUSH_BASE,
            _skopeo_push,
            prepare=_prepare_empty,
            after=_after_push,
            note="input: sealift's zstd archive unpacked into an OCI layout (untimed); "
            "blobs sent as they are",
        ),
        Contender(
            STAGE,
            SEALIFT_PUSH,
            "sealift",
            PUSH_BASE,
            _sealift_push,
            prepare=_prepare_empty,
            after=_after_push,
        ),
        Contender(
            STAGE,
            SEALIFT_REPEAT,
            "sealift",
            PUSH_BASE,
            _sealift_push,
            prepare=_prepare_full,
            after=_after_push,
            note="the registry already holds all four images",
        ),
        Contender(
            STAGE,
            PULL_BASE,
            "skopeo",
            PULL_BASE,
            _skopeo_pull,
            prepare=_prepare_pull("skopeo"),
            after=_after_pull("skopeo"),
        ),
        Contender(
            STAGE,
            SEALIFT_PULL,
            "sealift",
            PULL_BASE,
            _sealift_pull,
            prepare=_prepare_pull("sealift"),
            after=_after_pull("sealift"),
        ),
    ]
    return [dataclasses.replace(row, kinds=KINDS) for row in rows]


def checks(rows: dict[str, Row]) -> list[Check]:
    """Issue 12's bench targets, for the rows that ran."""
    out: list[Check] = []

    def ratio(name: str, base: str, what: str, limit: float, target: str) -> None:
        row, ref = rows.get(f"{STAGE}:{name}"), rows.get(f"{STAGE}:{base}")
        if row is None or ref is None:
            return
        a = row.wall() if what == "wall" else row.num(what)
        b = ref.wall() if what == "wall" else ref.num(what)
        measured = a / b if a is not None and b else None
        out.append(Check(target, row.contender.key, measured, limit, f"x {ref.contender.name}"))

    ratio(SEALIFT_PUSH, PUSH_BASE, "wall", 0.5, "registry push wall ≤ 0.5x skopeo")
    ratio(SEALIFT_PUSH, PUSH_BASE, "bytes", SAME_BYTES, "registry push bytes = skopeo's (±1%)")
    ratio(SEALIFT_PULL, PULL_BASE, "wall", 0.5, "registry pull wall ≤ 0.5x skopeo")
    ratio(SEALIFT_PULL, PULL_BASE, "bytes", SAME_BYTES, "registry pull bytes = skopeo's (±1%)")
    ratio(SEALIFT_REPEAT, SEALIFT_PUSH, "wall", 0.05, "repeat push wall ≤ 0.05x the first")
    ratio(SEALIFT_REPEAT, SEALIFT_PUSH, "bytes", 0.05, "repeat push bytes ≤ 0.05x the first")
    return out
