"""The two engines of a bench run and the shared benchmark images.

The engines are the test rig's (``tests.support``): ``make_engine("docker20", ...)`` is a
``DockerDaemon`` (Debian's dockerd 20.10, classic image store), ``make_engine("docker26", ...)`` a
``Docker26Daemon`` (Debian 13's dockerd 26 on the containerd image store, from the tree
scripts/install-test-deps caches). Both run on overlay2 (the containerd store: its overlayfs
snapshotter) wherever overlayfs mounts on their data root's filesystem, vfs (``native``) only as the
fallback, as users' engines do; ``engine.storage_driver`` says which. No iptables/bridge; private
data root, exec root, pidfile and socket. Their data roots live under
``/tmp/sealift-bench/engines`` and are removed when the daemon stops, so every run gives a fresh
source engine of each kind the images again: from that kind's cached ``docker save`` in the build
dir ``/tmp/sealift-bench-build``, else by building them (the debootstrap rootfs, the downloaded
.debs and the app trees are reused; only ``docker build`` runs again).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]
MAKE_IMAGES = REPO.parent / "shared" / "bench" / "make-images.sh"
BUILD_DIR = Path("/tmp/sealift-bench-build")
IMAGES = ("bench/base:bookworm", "bench/runtime:1", "bench/app:1.0", "bench/app:1.1")
UPDATE_FROM = "bench/app:1.0"
UPDATE_TO = "bench/app:1.1"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.measure import children  # noqa: E402
from tests.support.docker26 import Docker26Daemon, missing_docker26_reason  # noqa: E402
from tests.support.dockerd import DOCKER_CLI, DockerDaemon, EngineKind  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "BUILD_DIR",
    "DOCKER_CLI",
    "IMAGES",
    "MAKE_IMAGES",
    "REPO",
    "UPDATE_FROM",
    "UPDATE_TO",
    "Docker26Daemon",
    "DockerDaemon",
    "EngineKind",
    "build_images",
    "engine_processes",
    "image_cache",
    "make_engine",
    "missing_docker26_reason",
    "reset_engine",
]


def make_engine(kind: EngineKind, name: str, workdir: Path) -> DockerDaemon:
    """A bench engine of ``kind`` (not started): ``docker20`` or ``docker26``."""
    if kind == "docker26":
        return Docker26Daemon(name, workdir)
    return DockerDaemon(name, workdir)


def image_cache(build_dir: Path = BUILD_DIR, kind: EngineKind = "docker20") -> Path:
    """``docker save`` of the four images, keyed by the script's hash (a new script rebuilds) and
    by engine kind: each kind keeps the images as its own build stored them."""
    digest = hashlib.sha256(MAKE_IMAGES.read_bytes()).hexdigest()[:12]
    prefix = "images" if kind == "docker20" else f"images-{kind}"
    return build_dir / f"{prefix}-{digest}.tar"


def build_images(daemon: DockerDaemon, log: Path, build_dir: Path = BUILD_DIR) -> str:
    """Give ``daemon`` the four bench images; say how (and how long) for the report.

    Each engine kind builds them itself with make-images.sh (``docker build``, classic builder),
    so the images are stored as that engine stores what users build: Docker 20.10 as layer
    directories, Docker 26's containerd store as gzip blobs (loading Docker 20.10's uncompressed
    save there would leave uncompressed blobs, which no build or pull makes). A fresh engine first
    loads the cached ``docker save`` of a previous build of its kind (same image IDs, same stored
    blobs: Docker 26 keeps an archive's blobs as they are), then make-images.sh runs anyway: it
    is the authority and builds whatever is still missing.
    """
    if not MAKE_IMAGES.exists():
        raise RuntimeError(f"{MAKE_IMAGES} is missing (shared/ must sit beside the repo)")
    cache = image_cache(build_dir, daemon.kind)
    start = time.perf_counter()
    how = "built"
    if cache.exists():
        loaded = daemon.docker("load", "-q", "-i", str(cache), check=False, timeout=1800)
        if loaded.returncode == 0:
            how = f"loaded from {cache.name}, then checked"
        else:
            cache.unlink(missing_ok=True)
    _make_images(daemon, log, build_dir)
    if not cache.exists():
        partial = cache.with_suffix(f".{os.getpid()}.partial")
        daemon.docker("save", "-o", str(partial), *IMAGES, timeout=1800)
        partial.rename(cache)
    return f"{how} by make-images.sh in {time.perf_counter() - start:.1f}s"


def _make_images(daemon: DockerDaemon, log: Path, build_dir: Path) -> None:
    env = daemon.env()
    # The script calls plain `docker`: make it the engine's own client, as for every other call.
    client_dir = daemon.write_client_wrapper(daemon.workdir / "client-bin").parent
    env["PATH"] = f"{client_dir}:{env.get('PATH', '')}"
    with open(log, "wb") as out:
        result = subprocess.run(
            ["bash", str(MAKE_IMAGES), str(build_dir)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=3600,
        )
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"make-images.sh failed (exit {result.returncode}); log {log}:\n{tail}")
    missing = [ref for ref in IMAGES if not daemon.has_image(ref)]
    if missing:
        raise RuntimeError(f"make-images.sh did not build {missing}; log {log}")


def reset_engine(daemon: DockerDaemon, keep: Iterable[str] = ()) -> float:
    """Remove every image (or every image but ``keep``'s chains); return the seconds it took.

    Removing images is the engine's housekeeping, not part of any transfer (on the vfs fallback
    it deletes ~1.2 GB of files): this is why it is done outside the timed section.
    """
    start = time.perf_counter()
    keep = list(keep)
    if not keep:
        daemon.remove_all_images()
    else:
        for ref, _ident in daemon.tags().items():
            if ref not in keep:
                daemon.docker("rmi", ref, check=False)
        dangling = daemon.docker("images", "-q", "-f", "dangling=true").stdout.split()
        if dangling:
            daemon.docker("rmi", "-f", *dangling, check=False)
    return time.perf_counter() - start


def engine_processes(*daemons: DockerDaemon) -> list[list[int]]:
    """Per engine, in order: its dockerd pid, then the containerd it started (a child).

    An engine that is not running gives an empty list, so the order still matches ``daemons``.
    """
    found: list[list[int]] = []
    for daemon in daemons:
        pid = daemon.pid
        if pid is None or not Path(f"/proc/{pid}").exists():
            found.append([])
            continue
        found.append([pid, *(kid for kid in children(pid) if _command(kid) == "containerd")])
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
