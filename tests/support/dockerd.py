"""A private, throwaway Docker 20.10 engine for integration tests.

``DockerDaemon`` starts Debian's ``/usr/sbin/dockerd`` as root with its own data root, exec root,
pidfile, config file and unix socket, on the ``overlay2`` storage driver where overlayfs mounts on
the data root's filesystem (else ``vfs``; ``storage_driver`` says which), with no networking set-up
(no iptables, no bridge). When no system containerd is running, dockerd starts its own
containerd under ``<exec-root>/containerd``; ``containerd_socket`` points there.

The client used is always Debian's ``/usr/bin/docker`` (20.10): ``/usr/local/bin/docker`` may be a
much newer client that negotiates differently. ``tests.support.docker26`` holds the other engine
kind, Docker 26 with the containerd image store, with the same client-side interface.

Image identity: ``image_id``, ``image_ids()`` and ``tags()`` speak of config digests, the image ID
every engine kind and archive agrees on; ``inspect(ref)["Id"]`` is what the engine itself calls the
image (the config digest on 20.10, the manifest or index digest on the containerd store).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from tests.support import procs
from tests.support.service import Service
from tests.support.storage import Overlay2OrVfs, storage_driver_for

__all__ = [
    "DOCKERD",
    "DOCKER_CLI",
    "DockerDaemon",
    "DockerDaemonError",
    "EngineKind",
    "build_image",
    "image_id",
    "missing_engine_reason",
]

DOCKERD = Path("/usr/sbin/dockerd")
DOCKER_CLI = Path("/usr/bin/docker")
BUSYBOX = Path("/usr/bin/busybox")
SYSTEM_CONTAINERD_SOCKET = Path("/run/containerd/containerd.sock")

EngineKind = Literal["docker20", "docker26"]
"""``docker20`` (this module) or ``docker26`` (``tests.support.docker26``)."""

_DOCKER_ENV_DROP = (
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_API_VERSION",
    "DOCKER_DEFAULT_PLATFORM",
    "DOCKER_CONTENT_TRUST",
)


def dockerd_flags(
    storage_driver: str,
    *,
    data_root: str | Path,
    exec_root: str | Path,
    pidfile: str | Path,
    host: str,
) -> list[str]:
    """The dockerd flags every test and bench engine runs with: private paths, no networking."""
    return [
        f"--storage-driver={storage_driver}",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        "--bridge=none",
        "--shutdown-timeout=2",
        f"--data-root={data_root}",
        f"--exec-root={exec_root}",
        f"--pidfile={pidfile}",
        f"--host={host}",
    ]


class DockerDaemonError(RuntimeError):
    """The test engine could not be started or used."""


def missing_engine_reason() -> str | None:
    """Why a private dockerd cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root to run a private dockerd"
    for tool in (DOCKERD, DOCKER_CLI):
        if not tool.exists():
            return f"{tool} is missing (run scripts/install-test-deps)"
    if shutil.which("containerd") is None and not SYSTEM_CONTAINERD_SOCKET.exists():
        return "containerd is missing (run scripts/install-test-deps)"
    if shutil.which("runc") is None:
        return "runc is missing (run scripts/install-test-deps)"
    return None


class DockerDaemon(Service):
    """One private dockerd. Use as a context manager, or call ``start()`` / ``stop()``.

    ``storage_driver`` is ``overlay2`` where overlayfs works on the data root's filesystem, else
    ``vfs``; pass ``storage_driver="vfs"`` to have the fallback on purpose.
    """

    kind: ClassVar[EngineKind] = "docker20"

    def __init__(
        self, name: str, workdir: Path, *, storage_driver: Overlay2OrVfs | None = None
    ) -> None:
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        tag = f"sealift-{name}-{os.getpid()}"
        # Unix socket paths must stay under ~100 chars: keep them in /tmp, not in pytest's tmp dirs.
        self.socket_path = Path(f"/tmp/{tag}.sock")
        self.host = f"unix://{self.socket_path}"
        self.data_root = self.workdir / "data"
        # The exec root holds containerd's sockets: short, private, removed on stop.
        self._exec_parent = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir="/tmp"))
        self.exec_root = self._exec_parent / "x"
        self.pidfile = self.workdir / "dockerd.pid"
        self.log_path = self.workdir / "dockerd.log"
        self.config_file = self.workdir / "daemon.json"
        self.client_config_dir = self.workdir / "client-config"
        self.storage_driver: str = storage_driver or storage_driver_for(self.data_root)
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def containerd_socket(self) -> Path:
        """The containerd socket this engine uses (its own one, unless a system one was running)."""
        own = self.exec_root / "containerd" / "containerd.sock"
        if own.exists() or not SYSTEM_CONTAINERD_SOCKET.exists():
            return own
        return SYSTEM_CONTAINERD_SOCKET

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 90) -> Self:
        if self.running:
            return self
        reason = missing_engine_reason()
        if reason:
            raise DockerDaemonError(reason)
        for path in (self.data_root, self.exec_root, self.client_config_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        # An explicit (empty-ish) config file keeps /etc/docker/daemon.json out of the picture.
        self.config_file.write_text(json.dumps({"features": {"buildkit": False}}) + "\n")
        (self.client_config_dir / "config.json").write_text("{}\n")
        cmd = [
            str(DOCKERD),
            f"--config-file={self.config_file}",
            *dockerd_flags(
                self.storage_driver,
                data_root=self.data_root,
                exec_root=self.exec_root,
                pidfile=self.pidfile,
                host=self.host,
            ),
        ]
        self._spawn(cmd, self._daemon_env())
        self._wait_until_up(timeout, f"dockerd {self.name!r}")
        return self

    def _spawn(self, cmd: list[str], env: Mapping[str, str]) -> None:
        log = self._open_log()
        log.write(("\n=== " + " ".join(cmd) + "\n").encode())
        log.flush()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env),
        )

    def _answers_or_died(self) -> bool:
        if not self.running:
            return True
        probe = subprocess.run(
            [*self.client_command, "version", "--format", "{{.Server.Version}}"],
            env=self.env(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        return probe.returncode == 0

    def _wait_until_up(self, timeout: float, what: str) -> None:
        """Wait for the engine to answer; stop it and raise with its log's tail if it does not."""
        if procs.wait_for(self._answers_or_died, timeout, interval=0.3) and self.running:
            return
        code = self._proc.poll() if self._proc is not None else None
        tail = procs.log_tail(self.log_path)
        self.stop()
        raise DockerDaemonError(
            f"{what} did not come up within {timeout}s (exit code {code}); "
            f"log {self.log_path}:\n{tail}"
        )

    def stop(self) -> None:
        """Stop dockerd, its containerd and any shim, unmount, remove sockets and data."""
        proc = self._proc
        extra: list[int] = []
        # containerd shims daemonise (re-parent to init); find them by their -address argument.
        own_socket = self.exec_root / "containerd" / "containerd.sock"
        extra.extend(procs.pids_with_cmdline(str(own_socket)))
        extra.extend(procs.pids_with_cmdline(str(self.data_root)))
        procs.kill_tree(proc.pid if proc is not None else None, extra=extra, proc=proc)
        self._proc = None
        self._close_log()
        procs.unmount_under(self.exec_root)
        procs.unmount_under(self.data_root)
        self.socket_path.unlink(missing_ok=True)
        shutil.rmtree(self._exec_parent, ignore_errors=True)
        if not procs.mounts_under(self.data_root):
            shutil.rmtree(self.data_root, ignore_errors=True)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, host={self.host!r}, "
            f"storage_driver={self.storage_driver!r}, running={self.running})"
        )

    @property
    def engine_data_root(self) -> str:
        """The data root as the engine reports it (``docker info``'s DockerRootDir)."""
        return str(self.data_root)

    # ------------------------------------------------------------------ clients
    @property
    def client_command(self) -> list[str]:
        """The argv prefix of this engine's own docker client."""
        return [str(DOCKER_CLI)]

    def write_client_wrapper(self, directory: Path) -> Path:
        """An executable ``directory/docker`` running this engine's client (for scripts and
        remote hosts that call plain ``docker``)."""
        directory.mkdir(parents=True, exist_ok=True)
        wrapper = directory / "docker"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.join(self.client_command)} "$@"\n')
        wrapper.chmod(0o755)
        return wrapper

    def _daemon_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DOCKER_ENV_DROP}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        # dockerd finds containerd, runc and docker-init on PATH: prefer Debian's.
        env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin:" + env["PATH"]
        return env

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """os.environ for a client of this engine: DOCKER_HOST set, no context/config surprises."""
        env = {k: v for k, v in os.environ.items() if k not in _DOCKER_ENV_DROP}
        env["DOCKER_HOST"] = self.host
        env["DOCKER_BUILDKIT"] = "0"
        env["DOCKER_CONFIG"] = str(self.client_config_dir)
        env["DOCKER_CLI_HINTS"] = "false"
        if extra:
            env.update(extra)
        return env

    def docker(
        self,
        *args: str | os.PathLike[str],
        check: bool = True,
        input: str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run the engine's own client against it; text in, text out."""
        cmd = [*self.client_command, *map(str, args)]
        result = subprocess.run(
            cmd,
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise DockerDaemonError(
                f"{' '.join(cmd)} failed with exit code {result.returncode}:\n"
                f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
            )
        return result

    def docker_bytes(
        self,
        *args: str | os.PathLike[str],
        input: bytes | None = None,
        timeout: float = 300,
    ) -> bytes:
        """Run the client with binary stdin/stdout (e.g. ``docker save``); raise on failure."""
        cmd = [*self.client_command, *map(str, args)]
        result = subprocess.run(
            cmd, env=self.env(), input=input, capture_output=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise DockerDaemonError(
                f"{' '.join(cmd)} failed with exit code {result.returncode}: "
                f"{result.stderr.decode(errors='replace')[-2000:]}"
            )
        return result.stdout

    def docker_save(self, archive: Path, *refs: str) -> Path:
        """``docker save REFS > archive`` with the engine's own client; returns ``archive``."""
        archive.write_bytes(self.docker_bytes("save", *refs))
        return archive

    # ------------------------------------------------------------------ queries
    def config_digest_of(self, engine_id: str) -> str:
        """The config digest of the image the engine calls ``engine_id`` (the same on 20.10)."""
        return engine_id

    def config_digest(self, ref: str) -> str:
        """The image ID (config digest) of ``ref``, whatever the engine calls it."""
        engine_id = self.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
        return self.config_digest_of(engine_id)

    def engine_id_for(self, config_digest: str) -> str:
        """What the engine calls the image whose config digest is ``config_digest`` (to name it
        in ``docker`` commands: the containerd store does not know images by config digest)."""
        for ident in self.engine_ids():
            if self.config_digest_of(ident) == config_digest:
                return ident
        raise DockerDaemonError(f"no image with config {config_digest} on engine {self.name}")

    def engine_ids(self) -> list[str]:
        """What the engine calls each of its images (``docker images -a -q``), untagged too."""
        out = self.docker("images", "-a", "-q", "--no-trunc").stdout
        return sorted(set(out.split()))

    def image_ids(self) -> list[str]:
        """All image IDs (config digests, ``sha256:...``) on the engine, untagged ones too."""
        return sorted({self.config_digest_of(ident) for ident in self.engine_ids()})

    def tags(self) -> dict[str, str]:
        """``repo:tag`` -> image ID (config digest) for every tagged image."""
        out = self.docker(
            "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"
        ).stdout
        result: dict[str, str] = {}
        for line in out.splitlines():
            ref, _, ident = line.partition(" ")
            if ref and not ref.endswith(":<none>") and not ref.startswith("<none>"):
                result[ref] = self.config_digest_of(ident)
        return result

    def has_image(self, ref: str) -> bool:
        return self.docker("image", "inspect", ref, check=False).returncode == 0

    def inspect(self, ref: str) -> dict[str, Any]:
        data = json.loads(self.docker("image", "inspect", ref).stdout)
        assert isinstance(data, list) and len(data) == 1
        item = data[0]
        assert isinstance(item, dict)
        return item

    def remove_all_images(self) -> None:
        """Remove every container and image: an empty engine for the next test."""
        containers = self.docker("ps", "-a", "-q").stdout.split()
        if containers:
            self.docker("rm", "-f", *containers)
        leftover = self.engine_ids()
        for _attempt in range(3):
            if not leftover:
                break
            # Dependent images can make one pass leave some behind: go round again.
            self.docker("rmi", "-f", *leftover, check=False)
            leftover = self.engine_ids()
        if leftover:
            raise DockerDaemonError(f"could not empty engine {self.name}: {leftover}")

    def run(self, ref: str, *cmd: str, timeout: float = 120) -> str:
        """``docker run --rm --pull=never --network none REF [CMD...]``; returns stdout."""
        return self.docker(
            "run", "--rm", "--pull=never", "--network", "none", ref, *cmd, timeout=timeout
        ).stdout


def image_id(daemon: DockerDaemon, ref: str) -> str:
    """The image ID (config digest, ``sha256:...``) of ``ref`` on ``daemon``."""
    return daemon.config_digest(ref)


def build_image(
    daemon: DockerDaemon,
    tag_or_tags: str | Sequence[str],
    dockerfile_text: str,
    files: Mapping[str, bytes | Path] | None = None,
    *,
    timeout: float = 600,
) -> str:
    """Build an image with the classic builder (no BuildKit, no network); return its ID.

    ``files`` maps context-relative names to content or to a file to copy. Keep Dockerfiles to
    ``FROM scratch`` / ``FROM <local image>`` plus COPY/ENV/CMD/LABEL: ``RUN`` would need a
    container, and nothing may be pulled. ``/usr/bin/busybox`` (busybox-static) is the usual
    payload.
    """
    tags = [tag_or_tags] if isinstance(tag_or_tags, str) else list(tag_or_tags)
    if not tags:
        raise ValueError("build_image needs at least one tag")
    context = Path(tempfile.mkdtemp(prefix="ctx-", dir=daemon.workdir))
    try:
        for rel, content in (files or {}).items():
            target = context / rel
            if (
                target.resolve() != context.resolve()
                and context.resolve() not in target.resolve().parents
            ):
                raise ValueError(f"context file {rel!r} escapes the build context")
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copy2(content, target)
            else:
                target.write_bytes(content)
        (context / "Dockerfile").write_text(dockerfile_text)
        args: list[str] = ["build", "--quiet", "--network", "none", "--pull=false"]
        for tag in tags:
            args += ["--tag", tag]
        args.append(str(context))
        daemon.docker(*args, timeout=timeout)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return image_id(daemon, tags[0])
