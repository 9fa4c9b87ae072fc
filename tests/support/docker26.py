"""A private, throwaway Docker 26 engine with the containerd image store, for integration tests.

Debian 13's ``docker.io`` (26.1, with containerd 1.7) runs here from a Debian 13 tree that
``scripts/install-test-deps`` builds with debootstrap and caches (``docker26_tree()``). Each
``Docker26Daemon`` gets a private root so that several run at once, here and in other test runs
on the machine, without sharing a byte of state:

* ``<instance>/root``: an overlay mount, the cached tree as its read-only lower layer and a
  per-instance tmpfs (``<instance>/rw``) as upper and work dirs. Being a mount point, it is a
  root runc can pivot into (a plain directory would need ``mount --rbind TREE TREE``).
* ``/proc``, ``/dev``, ``/dev/pts`` bound in, ``/sys`` recursively (dockerd needs the cgroup mounts
  under it), a fresh tmpfs on ``/run`` (exec root, pidfile, socket), and the data root bound from
  ``<workdir>/data`` on a real filesystem (overlay cannot be the upper layer of an overlay: the
  snapshotter's own mounts live there).
* ``/etc/docker/daemon.json`` = ``{"features":{"containerd-snapshotter":true}}``; dockerd runs by
  ``chroot`` with ``--host=unix:///run/NAME.sock``, reached from outside at ``root/run/NAME.sock``.

``stop()`` kills every process whose root is inside the private root (dockerd, its containerd,
the shims, containers), undoes every mount and removes the instance; a start that fails does the
same. The client is the tree's own docker 26, run through the tree's own dynamic loader so that it
sees the host's files (build contexts, archives) as they are.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal, Self

from tests.support import procs
from tests.support.dockerd import DockerDaemon, DockerDaemonError, EngineKind, dockerd_flags
from tests.support.storage import kernel_has_overlayfs, overlay_mounts_on

__all__ = [
    "DOCKER26_TREE_LINK",
    "Docker26Daemon",
    "docker26_tree",
    "missing_docker26_reason",
    "sweep_stale_instances",
]

DOCKER26_TREE_LINK = Path("/var/cache/sealift-test/docker26-tree")
"""Where scripts/install-test-deps links the current tree; ``SEALIFT_DOCKER26_TREE`` overrides."""

DAEMON_JSON = {"features": {"containerd-snapshotter": True}}
INSTANCE_PREFIX = "sealift-d26-"
ENGINE_DATA_ROOT = "/var/lib/docker"
RW_SIZE = "256m"
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Snapshotter = Literal["overlayfs", "native"]


def docker26_tree() -> Path:
    """The Debian 13 tree holding Docker 26 (resolved, so a relinked cache does not move it)."""
    configured = os.environ.get("SEALIFT_DOCKER26_TREE")
    return Path(configured or DOCKER26_TREE_LINK).resolve()


def missing_docker26_reason() -> str | None:
    """Why a Docker 26 engine cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root to run a private Docker 26 engine"
    tree = docker26_tree()
    for part in ("usr/sbin/dockerd", "usr/bin/docker", "usr/bin/containerd", "usr/bin/ctr"):
        if not (tree / part).exists():
            return f"no Docker 26 tree at {tree} (run scripts/install-test-deps)"
    if not kernel_has_overlayfs():
        return "the kernel has no overlayfs (the Docker 26 engines' private roots need it)"
    if shutil.which("chroot") is None or shutil.which("mount") is None:
        return "chroot or mount is missing"
    return None


def _tree_loader(tree: Path) -> tuple[Path, str]:
    """The tree's dynamic loader and library path: its binaries then run on any host glibc."""
    for loader in sorted(tree.glob("lib64/ld-linux-*.so.*")) + sorted(tree.glob("lib/ld-linux*")):
        libs = sorted(tree.glob("usr/lib/*-linux-gnu*"))
        if libs:
            return loader, ":".join(str(lib) for lib in libs)
    raise DockerDaemonError(f"no dynamic loader in the Docker 26 tree {tree}")


def pids_rooted_in(root: Path) -> list[int]:
    """Live processes whose root directory is ``root`` (dockerd, its containerd, the shims)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "root").readlink() == root:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def container_pids(root: Path) -> list[int]:
    """The containers' processes: whatever runs under the shims rooted in ``root``."""
    found: list[int] = []
    for pid in pids_rooted_in(root):
        try:
            command = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if command.startswith("containerd-shim"):
            found.extend(procs.descendants(pid))
    return found


def _remove_instance(instance: Path, data_root: Path | None = None) -> list[Path]:
    """Unmount everything under ``instance`` (and ``data_root``) and remove both; returns the
    mounts that would not go (then nothing is removed: never delete through a mount)."""
    roots = [instance] if data_root is None else [instance, data_root]
    for root in roots:
        procs.unmount_under(root)
    leftover = [point for root in roots for point in procs.mounts_under(root)]
    if not leftover:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
    return leftover


def sweep_stale_instances() -> None:
    """Undo the instances of test sessions that died without stopping their engines."""
    pattern = re.compile(re.escape(INSTANCE_PREFIX) + r".+-(\d+)-[^-]+$")
    for instance in Path(tempfile.gettempdir()).glob(INSTANCE_PREFIX + "*"):
        match = pattern.match(instance.name)
        if match is None or procs.pid_alive(int(match.group(1))):
            continue
        root = instance / "root"
        if pids_rooted_in(root):
            continue  # an engine still runs there: not ours to judge
        _remove_instance(instance)


class Docker26Daemon(DockerDaemon):
    """One private Docker 26 engine on the containerd image store (see the module docstring).

    ``storage_driver`` is the containerd snapshotter: ``overlayfs`` where overlayfs works on the
    data root's filesystem, else ``native`` (the containerd store's vfs).
    """

    kind: ClassVar[EngineKind] = "docker26"

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        snapshotter: Snapshotter | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tree = docker26_tree()
        # Short: the socket path inside it must stay under ~100 characters.
        self.instance_dir = Path(
            tempfile.mkdtemp(prefix=f"{INSTANCE_PREFIX}{name}-{os.getpid()}-", dir="/tmp")
        )
        self.root = self.instance_dir / "root"
        self.exec_root = self.root / "run" / name
        self.socket_path = self.root / "run" / f"{name}.sock"
        self.host = f"unix://{self.socket_path}"
        self.pidfile = self.root / "run" / f"{name}.pid"
        self.data_root = self.workdir / "data"
        self.log_path = self.workdir / "dockerd.log"
        self.client_config_dir = self.workdir / "client-config"
        self.extra_args = list(extra_args)
        self.storage_driver = snapshotter or (
            "overlayfs" if overlay_mounts_on(self.workdir) else "native"
        )
        self.leftover_mounts: list[Path] = []
        self._config_digests: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def containerd_socket(self) -> Path:
        """The socket of the containerd this dockerd started for itself (host path)."""
        return self.exec_root / "containerd" / "containerd.sock"

    @property
    def engine_data_root(self) -> str:
        return ENGINE_DATA_ROOT

    @property
    def client_command(self) -> list[str]:
        loader, libs = _tree_loader(self.tree)
        return [str(loader), "--library-path", libs, str(self.tree / "usr/bin/docker")]

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 90) -> Self:
        if self.running:
            return self
        reason = missing_docker26_reason()
        if reason:
            raise DockerDaemonError(reason)
        sweep_stale_instances()
        try:
            self._mount_private_root()
            self._launch()
        except (DockerDaemonError, OSError) as exc:
            self.stop()
            raise DockerDaemonError(f"Docker 26 engine {self.name!r} did not start: {exc}") from exc
        self._wait_until_up(timeout, f"Docker 26 engine {self.name!r}")
        return self

    def _mount(self, *args: str | Path) -> None:
        argv = ["mount", *map(str, args)]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise DockerDaemonError(f"{' '.join(argv)}: {result.stderr.strip()}")

    def _mount_private_root(self) -> None:
        rw = self.instance_dir / "rw"
        rw.mkdir(exist_ok=True)
        self.root.mkdir(exist_ok=True)
        self._mount("-t", "tmpfs", "-o", f"size={RW_SIZE},mode=0755", "sealift-d26-rw", rw)
        (rw / "upper").mkdir()
        (rw / "work").mkdir()
        layers = f"lowerdir={self.tree},upperdir={rw / 'upper'},workdir={rw / 'work'}"
        self._mount("-t", "overlay", "-o", layers, "sealift-d26-root", self.root)
        self._mount("--bind", "/proc", self.root / "proc")
        self._mount("--bind", "/dev", self.root / "dev")
        self._mount("--bind", "/dev/pts", self.root / "dev/pts")
        self._mount("--rbind", "/sys", self.root / "sys")
        self._mount("-t", "tmpfs", "-o", "mode=0755", "sealift-d26-run", self.root / "run")
        self.data_root.mkdir(parents=True, exist_ok=True)
        engine_data_root = self.root / ENGINE_DATA_ROOT.lstrip("/")
        engine_data_root.mkdir(parents=True, exist_ok=True)
        self._mount("--bind", self.data_root, engine_data_root)
        # Nothing mounted in here reaches the host's mounts, and nothing of the host's comes in.
        self._mount("--make-rslave", self.root)
        self._mount("--make-private", rw)
        config = self.root / "etc/docker/daemon.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(DAEMON_JSON) + "\n")

    def _launch(self) -> None:
        self.client_config_dir.mkdir(parents=True, exist_ok=True)
        (self.client_config_dir / "config.json").write_text("{}\n")
        cmd = [
            "chroot",
            str(self.root),
            "/usr/sbin/dockerd",
            *dockerd_flags(
                self.storage_driver,
                data_root=ENGINE_DATA_ROOT,
                exec_root=f"/run/{self.name}",
                pidfile=f"/run/{self.name}.pid",
                host=f"unix:///run/{self.name}.sock",
            ),
            *self.extra_args,
        ]
        self._spawn(cmd, {"PATH": CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8"})

    def stop(self) -> None:
        """Kill every process rooted in the private root, undo every mount, remove the data."""
        proc = self._proc
        # Containers still running would hold dockerd's shutdown for their 10 s stop timeout.
        procs.kill_tree(None, extra=container_pids(self.root), grace=0)
        procs.kill_tree(
            proc.pid if proc is not None else None, extra=pids_rooted_in(self.root), proc=proc
        )
        # A shim may have been started while dockerd was going down: once more.
        rest = [*container_pids(self.root), *pids_rooted_in(self.root)]
        procs.kill_tree(None, extra=rest, grace=5)
        self._proc = None
        self._close_log()
        self.leftover_mounts = _remove_instance(self.instance_dir, self.data_root)

    # ------------------------------------------------------------------ queries
    def config_digest_of(self, engine_id: str) -> str:
        """The store calls an image by its manifest (or index) digest: read the config's."""
        if engine_id not in self._config_digests:
            self._config_digests[engine_id] = self._config_digest_in_content(engine_id)
        return self._config_digests[engine_id]

    def _config_digest_in_content(self, digest: str) -> str:
        document = json.loads(self.ctr("content", "get", digest))
        for manifest in document.get("manifests", ()):
            platform = manifest.get("platform", {})
            if (platform.get("os"), platform.get("architecture")) == ("linux", "amd64"):
                return self._config_digest_in_content(str(manifest["digest"]))
        config = document.get("config")
        if not isinstance(config, dict):
            raise DockerDaemonError(f"{digest} on {self.name} is neither a manifest nor an index")
        return str(config["digest"])

    def ctr(self, *args: str, timeout: float = 60) -> str:
        """The tree's ``ctr`` on this engine's containerd, namespace ``moby``; returns stdout."""
        socket = f"/run/{self.name}/containerd/containerd.sock"
        argv = ["chroot", str(self.root), "ctr", "--address", socket, "--namespace", "moby", *args]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={"PATH": CHROOT_PATH},
        )
        if result.returncode != 0:
            raise DockerDaemonError(f"{' '.join(argv)}: {result.stderr.strip()[-2000:]}")
        return result.stdout
