"""Real peers for interop tests: skopeo, containerd (ctr), podman, sshd and a local registry.

Every helper keeps its state in a directory of its own (no ``/var/lib/containers``, no
``~/.ssh``), talks only over unix sockets or 127.0.0.1, and never reaches the network.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from tests.support import procs
from tests.support.service import Service

__all__ = [
    "Containerd",
    "PeerError",
    "Podman",
    "Registry",
    "Skopeo",
    "Sshd",
    "StandaloneContainerd",
    "missing_tools",
    "umoci",
]

Args = str | os.PathLike[str]


class PeerError(RuntimeError):
    """A peer tool failed or could not be started."""


def missing_tools(*names: str) -> list[str]:
    """The names (commands or absolute paths) that are not installed."""
    missing = []
    for name in names:
        found = Path(name).exists() if name.startswith("/") else shutil.which(name) is not None
        if not found:
            missing.append(name)
    return missing


def _run(
    cmd: Sequence[Args],
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float = 300,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    argv = [str(a) for a in cmd]
    result = subprocess.run(
        argv,
        env=dict(env) if env is not None else None,
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    text = subprocess.CompletedProcess(
        argv,
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )
    if check and result.returncode != 0:
        raise PeerError(
            f"{' '.join(argv)} failed with exit code {result.returncode}:\n"
            f"stdout: {text.stdout[-3000:]}\nstderr: {text.stderr[-3000:]}"
        )
    return text


def _wait_until_serving(
    peer: Service,
    proc: subprocess.Popen[bytes],
    serving: Callable[[], bool],
    *,
    timeout: float,
    name: str,
) -> None:
    """Wait for ``serving()``; if ``proc`` exits or never serves, stop ``peer`` and raise."""
    procs.wait_for(lambda: proc.poll() is not None or serving(), timeout)
    if proc.poll() is not None or not serving():
        tail = procs.log_tail(peer.log_path)
        peer.stop()
        raise PeerError(f"{name} did not start; log {peer.log_path}:\n{tail}")


def _insecure_policy(path: Path) -> Path:
    path.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}) + "\n")
    return path


# ---------------------------------------------------------------------------------------- skopeo
class Skopeo:
    """``skopeo`` with its own trust policy and temp dir (no /etc/containers surprises)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.policy = _insecure_policy(self.workdir / "policy.json")
        self.tmpdir = self.workdir / "tmp"
        self.tmpdir.mkdir(exist_ok=True)
        registries = self.workdir / "registries.conf"
        registries.write_text("unqualified-search-registries = []\n")
        self._env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(registries)}

    def run(
        self, *args: Args, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return _run(
            ["skopeo", "--policy", self.policy, "--tmpdir", self.tmpdir, *args],
            env=self._env,
            check=check,
            timeout=timeout,
        )

    def copy(
        self, src: str, dst: str, *extra: Args, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``skopeo copy [extra] SRC DST`` (e.g. ``docker-archive:/x.tar``, ``oci:/dir:ref``)."""
        return self.run("copy", "--quiet", *extra, src, dst, check=check)

    def inspect(self, ref: str, *, config: bool = False, raw: bool = False) -> dict[str, Any]:
        """``skopeo inspect`` as JSON; ``config``: the image config, ``raw``: the manifest."""
        args: list[Args] = ["inspect"]
        if config:
            args.append("--config")
        if raw:
            args.append("--raw")
        result: dict[str, Any] = json.loads(self.run(*args, ref).stdout)
        return result

    def copy_config_digest(self, src: str, *extra: Args) -> str:
        """Copy ``src`` into a fresh ``dir:`` (skopeo checks every blob on the way) and return
        the config digest (image ID) it wrote. Picks the host platform from an index."""
        dest = Path(tempfile.mkdtemp(prefix="copy-", dir=self.tmpdir))
        try:
            self.copy(src, f"dir:{dest}", *extra)
            manifest = json.loads((dest / "manifest.json").read_text())
            return str(manifest["config"]["digest"])
        finally:
            shutil.rmtree(dest, ignore_errors=True)

    def config_digest(self, ref: str) -> str:
        """The image ID (config digest) of ``ref`` as skopeo reads it."""
        manifest = self.inspect(ref, raw=True)
        if "manifests" in manifest:
            raise PeerError(f"{ref} is an index; pick a platform first")
        return str(manifest["config"]["digest"])


# ----------------------------------------------------------------------------------------- umoci
def umoci(
    *args: Args, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``umoci`` (an independent OCI layout reader/unpacker; it checks every digest)."""
    return _run(["umoci", *args], check=check, timeout=timeout)


# ------------------------------------------------------------------------------------ containerd
class Containerd:
    """A ``ctr`` client for one containerd socket and namespace."""

    def __init__(self, socket: Path, namespace: str = "test") -> None:
        self.socket = Path(socket)
        self.namespace = namespace

    def with_namespace(self, namespace: str | None = None) -> Containerd:
        """The same containerd, another namespace (fresh and unique by default)."""
        return Containerd(self.socket, namespace or f"test-{uuid.uuid4().hex[:10]}")

    def ctr(
        self, *args: Args, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return _run(
            ["ctr", "--address", self.socket, "--namespace", self.namespace, *args],
            check=check,
            timeout=timeout,
        )

    def import_archive(
        self,
        archive: Path,
        *,
        all_platforms: bool = False,
        platform: str | None = None,
        base_name: str | None = None,
        unpack: bool = True,
        snapshotter: str = "native",
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``ctr images import``. Unpacking (default) makes containerd check every diff_id."""
        args: list[Args] = ["images", "import", "--snapshotter", snapshotter]
        if all_platforms:
            args.append("--all-platforms")
        if platform:
            args += ["--platform", platform]
        if base_name:
            args += ["--base-name", base_name]
        if not unpack:
            args.append("--no-unpack")
        args.append(archive)
        return self.ctr(*args, check=check)

    def images(self) -> dict[str, str]:
        """Image name -> target digest (manifest or index) in this namespace."""
        out = self.ctr("images", "ls").stdout
        images: dict[str, str] = {}
        for line in out.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3:
                images[fields[0]] = fields[2]
        return images

    def content(self, digest: str) -> bytes:
        result = subprocess.run(
            [
                "ctr",
                "--address",
                str(self.socket),
                "--namespace",
                self.namespace,
                "content",
                "get",
                digest,
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise PeerError(f"ctr content get {digest}: {result.stderr.decode(errors='replace')}")
        return result.stdout

    def config_digest(self, name: str, platform: str = "linux/amd64") -> str:
        """The image ID (config digest) of ``name``, choosing ``platform`` in an index."""
        target = self.images()[name]
        doc = json.loads(self.content(target))
        while "manifests" in doc:
            wanted = platform.split("/")
            chosen = None
            for desc in doc["manifests"]:
                plat = desc.get("platform") or {}
                have = [plat.get("os"), plat.get("architecture")]
                if plat.get("variant"):
                    have.append(plat["variant"])
                if have[: len(wanted)] == wanted:
                    chosen = desc
                    break
            if chosen is None:
                raise PeerError(f"{name}: no manifest for {platform} in {target}")
            doc = json.loads(self.content(chosen["digest"]))
        return str(doc["config"]["digest"])

    def remove_all(self) -> None:
        names = list(self.images())
        if names:
            self.ctr("images", "rm", *names, check=False)


class StandaloneContainerd(Containerd, Service):
    """A containerd of our own (root, state, socket under a private dir); CRI disabled."""

    def __init__(self, workdir: Path, namespace: str = "test") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._short = Path(tempfile.mkdtemp(prefix="sealift-ctrd-", dir="/tmp"))
        super().__init__(self._short / "containerd.sock", namespace)
        self.root = self.workdir / "root"
        self.state = self._short / "state"
        self.config = self.workdir / "config.toml"
        self.log_path = self.workdir / "containerd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Self:
        if missing_tools("containerd", "ctr"):
            raise PeerError("containerd/ctr not installed (run scripts/install-test-deps)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.state}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",'
            ' "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",'
            ' "io.containerd.snapshotter.v1.devmapper"]\n'
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
            "[ttrpc]\n"
            f'  address = "{self.socket}.ttrpc"\n'
            "[debug]\n"
            '  address = ""\n'
            "[metrics]\n"
            '  address = ""\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            f'  path = "{self.root}/opt"\n'
        )
        self._proc = subprocess.Popen(
            ["containerd", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=self._open_log(),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def serving() -> bool:
            return self.ctr("version", check=False, timeout=10).returncode == 0

        _wait_until_serving(self, self._proc, serving, timeout=timeout, name="containerd")
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        extra = procs.pids_with_cmdline(str(self.socket))
        procs.kill_tree(proc.pid if proc is not None else None, extra=extra, proc=proc)
        self._close_log()
        procs.unmount_under(self.root)
        procs.unmount_under(self._short)
        shutil.rmtree(self._short, ignore_errors=True)
        if not procs.mounts_under(self.root):
            shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------------------- podman
class Podman:
    """Podman as root with its own storage (vfs), no network, no systemd, no journald."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = self.workdir / "root"
        self._short = Path(tempfile.mkdtemp(prefix="sealift-podman-", dir="/tmp"))
        self.runroot = self._short / "run"
        self.tmpdir = self.workdir / "tmp"
        for path in (self.root, self.runroot, self.tmpdir):
            path.mkdir(parents=True, exist_ok=True)
        storage = self.workdir / "storage.conf"
        storage.write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root}"\nrunroot = "{self.runroot}"\n'
        )
        registries = self.workdir / "registries.conf"
        registries.write_text("unqualified-search-registries = []\n")
        self.policy = _insecure_policy(self.workdir / "policy.json")
        self._env = {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(storage),
            "CONTAINERS_REGISTRIES_CONF": str(registries),
            "TMPDIR": str(self.tmpdir),
        }

    def run(
        self,
        *args: Args,
        check: bool = True,
        timeout: float = 300,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd: list[Args] = [
            "podman",
            "--root",
            self.root,
            "--runroot",
            self.runroot,
            "--storage-driver",
            "vfs",
            "--tmpdir",
            self.tmpdir,
            "--events-backend",
            "none",
            "--cgroup-manager",
            "cgroupfs",
            *args,
        ]
        return _run(cmd, env=self._env, check=check, timeout=timeout, input=input)

    def load(self, archive: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``podman load -i ARCHIVE``; stdout has ``Loaded image: ...`` lines."""
        return self.run("load", "--input", archive, check=check)

    def image_id(self, ref: str) -> str:
        """The image ID as ``sha256:...`` (podman prints it without the prefix)."""
        out = self.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
        return out if out.startswith("sha256:") else f"sha256:{out}"

    def images(self) -> dict[str, str]:
        """``name:tag`` -> ``sha256:id`` for every tagged image."""
        out = self.run(
            "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"
        ).stdout
        found: dict[str, str] = {}
        for line in out.splitlines():
            ref, _, ident = line.partition(" ")
            if "<none>" in ref:
                continue
            found[ref] = ident if ident.startswith("sha256:") else f"sha256:{ident}"
        return found

    def image_ids(self) -> set[str]:
        """Every image ID (``sha256:...``), tagged or not."""
        out = self.run("images", "--all", "--quiet", "--no-trunc").stdout.split()
        return {i if i.startswith("sha256:") else f"sha256:{i}" for i in out}

    def remove_all(self) -> None:
        self.run("rmi", "--all", "--force", check=False)

    def close(self) -> None:
        self.remove_all()
        procs.unmount_under(self.root)
        procs.unmount_under(self._short)
        shutil.rmtree(self._short, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------------------------------ sshd
class Sshd(Service):
    """An OpenSSH server on 127.0.0.1 with throwaway keys, plus a matching ssh_config.

    Clients connect with ``ssh -F sshd.ssh_config sshd.alias ...`` (or ``sshd.ssh(...)``).
    ``set_env`` becomes ``SetEnv`` in sshd_config (e.g. ``DOCKER_HOST`` and ``PATH`` for sessions).
    """

    SSHD = Path("/usr/sbin/sshd")

    def __init__(
        self,
        workdir: Path,
        set_env: Mapping[str, str] | None = None,
        *,
        alias: str = "sealift-test-host",
        extra_config: str = "",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.set_env = dict(set_env or {})
        self.alias = alias
        self.extra_config = extra_config
        self.port = 0
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        self.client_key = self.workdir / "id_ed25519"
        self.authorized_keys = self.workdir / "authorized_keys"
        self.config = self.workdir / "sshd_config"
        self.ssh_config = self.workdir / "ssh_config"
        self.known_hosts = self.workdir / "known_hosts"
        self.pidfile = self.workdir / "sshd.pid"
        self.log_path = self.workdir / "sshd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _keygen(self, path: Path, comment: str) -> None:
        if not path.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])

    def start(self, timeout: float = 30) -> Self:
        missing = missing_tools(str(self.SSHD), "ssh", "ssh-keygen")
        if missing:
            raise PeerError(f"missing {missing} (run scripts/install-test-deps)")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
        self._keygen(self.host_key, "sealift-test-hostkey")
        self._keygen(self.client_key, "sealift-test-client")
        self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        self.client_key.chmod(0o600)
        last_error = ""
        for _attempt in range(5):
            self.port = procs.free_port()
            self._write_configs()
            self.log_path.unlink(missing_ok=True)
            # -D: stay in the foreground so we own the process; -e is implied by -E LOG.
            self._proc = subprocess.Popen(
                [str(self.SSHD), "-D", "-f", str(self.config), "-E", str(self.log_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )

            def ready() -> bool:
                if self._proc is None or self._proc.poll() is not None:
                    return True
                return "Server listening" in procs.log_tail(self.log_path, 200)

            procs.wait_for(ready, timeout, interval=0.1)
            if (
                self._proc.poll() is None
                and self.ssh("true", check=False, timeout=30).returncode == 0
            ):
                return self
            last_error = procs.log_tail(self.log_path)
            self.stop()
        raise PeerError(f"sshd did not start; log {self.log_path}:\n{last_error}")

    def _write_configs(self) -> None:
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.pidfile}",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "StrictModes no",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "MaxStartups 64:30:128",
            "MaxSessions 64",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
        ]
        if self.set_env:
            # SetEnv values are word-split by sshd: quote them.
            pairs = " ".join(f'"{k}={v}"' for k, v in self.set_env.items())
            lines.append(f"SetEnv {pairs}")
        if self.extra_config:
            lines.append(self.extra_config.strip())
        self.config.write_text("\n".join(lines) + "\n")
        host_pub = Path(f"{self.host_key}.pub").read_text().split()
        key = f"{host_pub[0]} {host_pub[1]}"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key}\n{self.alias} {key}\n")
        self.ssh_config.write_text(
            f"Host {self.alias}\n"
            "  HostName 127.0.0.1\n"
            f"  Port {self.port}\n"
            "  User root\n"
            f"  IdentityFile {self.client_key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            f"  HostKeyAlias {self.alias}\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            "  ControlMaster no\n"
            "  ControlPath none\n"
            "  LogLevel ERROR\n"
            "  ConnectTimeout 10\n"
        )

    def ssh_command(self, *remote: str) -> list[str]:
        """``ssh -F <our config> <alias> REMOTE...`` as an argv list."""
        return ["ssh", "-F", str(self.ssh_config), self.alias, *remote]

    def ssh(
        self, *remote: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return _run(self.ssh_command(*remote), check=check, timeout=timeout)

    def stop(self) -> None:
        if self._proc is not None:
            # Session processes run in their own sessions: find them by our config path too.
            extra = procs.pids_with_cmdline(str(self.config))
            procs.kill_tree(self._proc.pid, extra=extra, proc=self._proc, grace=5)
            self._proc = None


# -------------------------------------------------------------------------------------- registry
class Registry(Service):
    """Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1, filesystem storage.

    ``mode``: ``plain`` (HTTP, no auth); ``tls`` (HTTPS with a certificate from a CA the tests
    make, ``ca_file``, no auth); ``basic-tls`` (the same plus htpasswd basic auth for
    ``user``/``password``); ``token``
    (plain HTTP, ``auth: token`` with :class:`tests.support.registry.TokenIssuer` as its token
    service, which grants pull only on the repositories in ``denied``).
    """

    BINARY = "docker-registry"
    MODES = ("plain", "tls", "basic-tls", "token")
    user = "sealift"
    password = "s3cret-test-password"

    def __init__(self, workdir: Path, mode: str = "plain", denied: Sequence[str] = ()) -> None:
        if mode not in self.MODES:
            raise ValueError(f"unknown registry mode {mode!r}")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self.denied = tuple(denied)
        self.storage = self.workdir / "storage"
        self.config = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self.port = 0
        self.ca_file: Path | None = None
        self.issuer: Any = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` (use as the registry part of a reference)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        scheme = "https" if self.mode in ("tls", "basic-tls") else "http"
        return f"{scheme}://{self.address}"

    def _mode_config(self) -> str:
        from tests.support.registry import TokenIssuer, htpasswd_line
        from tests.support.tls import make_ca_and_server_cert

        if self.mode in ("tls", "basic-tls"):
            (self.workdir / "tls").mkdir(exist_ok=True)
            self.ca_file, cert, key = make_ca_and_server_cert(self.workdir / "tls", "127.0.0.1")
            tls = f"  tls:\n    certificate: {cert}\n    key: {key}\n"
            if self.mode == "tls":
                return tls
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(htpasswd_line(self.user, self.password) + "\n")
            return tls + f"auth:\n  htpasswd:\n    realm: sealift-test\n    path: {htpasswd}\n"
        if self.mode == "token":
            self.issuer = TokenIssuer(
                self.workdir / "token", {self.user: self.password}, self.denied
            ).start()
            return (
                "auth:\n  token:\n"
                f"    realm: {self.issuer.realm}\n"
                f"    service: {self.issuer.SERVICE}\n"
                f"    issuer: {self.issuer.ISSUER}\n"
                f"    rootcertbundle: {self.issuer.bundle}\n"
            )
        return ""

    def start(self, timeout: float = 30) -> Self:
        if missing_tools(self.BINARY):
            raise PeerError("docker-registry not installed (run scripts/install-test-deps)")
        self.storage.mkdir(parents=True, exist_ok=True)
        self.port = procs.free_port()
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {self.storage}\n"
            "  delete:\n    enabled: true\n"
            "http:\n"
            f"  addr: 127.0.0.1:{self.port}\n" + self._mode_config()
        )
        self._proc = subprocess.Popen(
            [self.BINARY, "serve", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=self._open_log(),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None

        def serving() -> bool:
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=context) as resp:
                    return int(resp.status) == 200
            except urllib.error.HTTPError as exc:
                return exc.code == 401  # up, and asking for a login
            except (urllib.error.URLError, OSError):
                return False

        _wait_until_serving(self, self._proc, serving, timeout=timeout, name="docker-registry")
        return self

    def stop(self) -> None:
        if self._proc is not None:
            procs.kill_tree(self._proc.pid, proc=self._proc, grace=5)
            self._proc = None
        if self.issuer is not None:
            self.issuer.stop()
            self.issuer = None
        self._close_log()
