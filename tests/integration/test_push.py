"""``sealift push`` / ``pull`` over a real sshd into real engines, bytes counted on the wire.

Push and pull, to agent and to bare-docker remotes, run against both engine kinds
(``@both_engine_kinds``: source and destination engines are both Docker 20.10, or both Docker 26
with the containerd image store); the podman cases use Docker 20.10 sources.

Each "host" is an OpenSSH server on 127.0.0.1 whose sessions get ``DOCKER_HOST`` (their own
dockerd), ``PATH`` (with or without sealift) and ``XDG_CACHE_HOME`` (their own staging) through
``SetEnv``. ssh reaches them through a ProxyCommand relay (tests/support/ssh_relay.py) that counts
every byte crossing and can cut a connection at a fixed byte count.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import procs
from tests.support.cli import REPO_ROOT, SealiftResult, run_sealift
from tests.support.dockerd import DOCKER_CLI, DockerDaemon, image_id
from tests.support.engines import both_engine_kinds
from tests.support.images import BuiltImage, ImageSet
from tests.support.peers import Podman, Sshd
from tests.support.ssh_relay import read_counts, relay_command, total_bytes

pytestmark = [pytest.mark.ssh, pytest.mark.engine]

SLACK = 48 * 1024
"""Fixed cost of a push: ssh handshakes, the offer (configs), the answers."""


@dataclass
class Host:
    sshd: Sshd
    alias: str
    cache: Path

    @property
    def url(self) -> str:
        return f"ssh://{self.alias}"


def _bin_dir(
    directory: Path,
    tools: tuple[str, ...],
    engine: DockerDaemon | None,
    podman: Podman | None = None,
) -> Path:
    """``tools`` as commands in ``directory``; ``docker`` is ``engine``'s own client."""
    directory.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        path = directory / tool
        if tool == "sealift":
            path.write_text(
                f'#!/bin/sh\nPYTHONPATH={REPO_ROOT / "src"} exec {sys.executable} -m sealift "$@"\n'
            )
        elif tool == "docker" and engine is not None:
            engine.write_client_wrapper(directory)
        elif tool == "docker":
            path.write_text(f'#!/bin/sh\nexec {DOCKER_CLI} "$@"\n')
        elif tool == "podman":
            assert podman is not None
            flags = (
                f"--root {podman.root} --runroot {podman.runroot} --storage-driver vfs "
                f"--tmpdir {podman.tmpdir} --events-backend none --cgroup-manager cgroupfs"
            )
            path.write_text(f'#!/bin/sh\nexec /usr/bin/podman {flags} "$@"\n')
        path.chmod(0o755)
    return directory


@pytest.fixture
def start_host(sshd_factory: Callable[..., Sshd], tmp_path: Path) -> Callable[..., Host]:
    counter = iter(range(100))

    def start(
        engine: DockerDaemon | None,
        tools: tuple[str, ...],
        podman: Podman | None = None,
        cache: Path | None = None,
    ) -> Host:
        """``cache``: the XDG cache (and so the staging) the host's sessions use, when several
        hosts share one (engines on one machine)."""
        index = next(counter)
        alias = f"host{index}"
        root = tmp_path / alias
        cache = cache or root / "cache"
        bin_dir = _bin_dir(root / "bin", tools, engine, podman)
        # sealift hosts also need /usr/bin:/bin (the login shell's pyenv shims run on bash);
        # docker- or podman-only hosts see only their tool.
        path = f"{bin_dir}:/usr/bin:/bin" if "sealift" in tools else str(bin_dir)
        env = {"PATH": path, "XDG_CACHE_HOME": str(cache)}
        if "sealift" in tools:
            # the login shell's ~/.bashrc puts pyenv's shims first on the PATH, whose
            # ``sealift`` is the installed one: PYTHONPATH makes it run the tree under test
            env["PYTHONPATH"] = str(REPO_ROOT / "src")
        if engine is not None:
            env["DOCKER_HOST"] = engine.host
            env["DOCKER_CONFIG"] = str(engine.client_config_dir)
        else:
            env["DOCKER_HOST"] = "unix:///nonexistent.sock"
        sshd = sshd_factory(env, alias=alias)
        return Host(sshd, alias, cache)

    return start


@pytest.fixture
def connect(start_host: Callable[..., Host], tmp_path: Path) -> Callable[..., tuple[Host, Wire]]:
    """``host, wire = connect(engine, tools, podman)``: one started host and the wire to it."""

    def connect_one(
        engine: DockerDaemon | None, tools: tuple[str, ...], podman: Podman | None = None
    ) -> tuple[Host, Wire]:
        host = start_host(engine, tools, podman)
        return host, Wire(tmp_path / "wire", [host])

    return connect_one


class Wire:
    """An ssh_config for a set of hosts, every connection through the counting relay."""

    def __init__(self, directory: Path, hosts: list[Host], extra: str = "") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.hosts = hosts
        self.extra = extra
        self.runs = 0
        self.log = directory / "none.log"

    def env(
        self, engine: DockerDaemon, cut_after: int | None = None, cut_down: int | None = None
    ) -> dict[str, str]:
        self.runs += 1
        self.log = self.directory / f"wire-{self.runs}.log"
        config = self.directory / f"ssh_config-{self.runs}"
        blocks = []
        proxy = relay_command(self.log, cut_after, cut_after_down=cut_down)
        for host in self.hosts:
            lines = host.sshd.ssh_config.read_text().splitlines()
            blocks.append("\n".join([lines[0], f"  ProxyCommand {proxy}", *lines[1:]]))
        config.write_text("\n".join(blocks) + "\n" + self.extra)
        env = engine.env()
        env["SEALIFT_SSH_COMMAND"] = f"ssh -F {config}"
        return env

    @property
    def bytes(self) -> int:
        return total_bytes(self.log)

    @property
    def connections(self) -> int:
        return len(read_counts(self.log))


def push(
    wire: Wire, source: DockerDaemon, *args: str, cut_after: int | None = None
) -> SealiftResult:
    return run_sealift("push", *args, env=wire.env(source, cut_after), timeout=300)


def pull(
    wire: Wire, dest: DockerDaemon, remote: Host, ref: str, cache: Path, cut: int | None = None
) -> SealiftResult:
    """``sealift pull REMOTE REF --json`` into ``dest``, staging in ``cache``, through ``wire``."""
    env = wire.env(dest, cut_down=cut)
    env["XDG_CACHE_HOME"] = str(cache)
    return run_sealift("pull", remote.url, ref, "--json", env=env, timeout=300)


def assert_arrived(dest: DockerDaemon, ref: str, image: BuiltImage, *, exact: bool = True) -> None:
    """``ref`` on ``dest`` is ``image``: same config digest (the image ID), and the engine lists
    it under that tag by the source engine's own ID (on the containerd store the manifest
    digest: with sealift on both sides, protocol 3, blobs and manifests cross as they are).

    ``exact=False`` for a bare-docker remote (mode 2), which is sent a rebuilt thin archive."""
    assert image_id(dest, ref) == image.id
    shown = dest.inspect(ref)["Id"]
    assert shown in dest.engine_ids()
    if exact:
        assert shown == image.engine_id, "the engine's ID (manifest digest) survived"


def load_as_zstd_blobs(
    source: DockerDaemon, dest: DockerDaemon, image: BuiltImage, tmp: Path
) -> None:
    """``dest`` gets ``image`` from a sealift zstd archive: on the containerd store it then holds
    other blobs of the image's layers than ``source`` offers."""
    archive = tmp / "zstd-blobs.tar"
    env = source.env()
    run_sealift("save", image.ref, "-o", archive, "--compression", "zstd", env=env).assert_ok()
    run_sealift("load", archive, env=dest.env()).assert_ok()
    archive.unlink()


def layer_sizes(engine: DockerDaemon, ref: str, tmp: Path, codec: str = "zstd") -> list[int]:
    """Compressed sizes of ``ref``'s layers (as sealift compresses them with ``codec``)."""
    archive = tmp / f"sizes-{codec}.tar"
    run_sealift("save", ref, "-o", archive, "--compression", codec, env=engine.env()).assert_ok()
    report = run_sealift("inspect", "--json", archive).assert_ok().json()
    archive.unlink()
    return [layer["size"] for layer in report["images"][0]["layers"]]


# ------------------------------------------------------------------------------- mode 1: agent
@both_engine_kinds
def test_first_push_update_and_noop(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
    tmp_path: Path,
) -> None:
    dest = empty_dest_engine
    host, wire = connect(dest, ("sealift", "docker"))

    # first push: everything arrives, compressed, same image ID, the image runs
    result = push(wire, source_engine, test_images.app1.ref, host.url, "--json").assert_ok()
    summary = result.json()["hosts"][0]
    assert summary["ok"] and summary["mode"] == "agent", summary
    assert_arrived(dest, test_images.app1.ref, test_images.app1)
    assert dest.run(test_images.app1.ref) == test_images.app1.expected_output
    zstd_sizes = layer_sizes(source_engine, test_images.app1.ref, tmp_path)
    raw_sizes = layer_sizes(source_engine, test_images.app1.ref, tmp_path, "none")
    assert wire.bytes <= 1.1 * sum(zstd_sizes) + SLACK, (wire.bytes, zstd_sizes)
    assert wire.bytes < sum(raw_sizes), "the wire must carry compressed bytes"
    assert not any(host.cache.glob("sealift/staging/*")), "staging is cleaned after success"

    # --dry-run: says what it would send, sends no layer, changes nothing
    result = push(wire, source_engine, test_images.app2.ref, host.url, "--dry-run").assert_ok()
    assert "would send 1 layers" in result.stdout and "skip 2" in result.stdout, result.stdout
    assert wire.bytes <= 16 * 1024, wire.bytes
    assert not dest.has_image(test_images.app2.ref)

    # update: only the changed top layer crosses
    top = layer_sizes(source_engine, test_images.app2.ref, tmp_path)[-1]
    result = push(wire, source_engine, test_images.app2.ref, host.url, "--json").assert_ok()
    summary = result.json()["hosts"][0]
    assert summary["layers_sent"] == 1 and summary["layers_skipped"] == 2, summary
    assert wire.bytes <= 1.1 * top + SLACK, (wire.bytes, top)
    assert dest.run(test_images.app2.ref) == test_images.app2.expected_output

    # nothing to send: an image the remote has, and a new tag for it
    source_engine.docker("tag", test_images.app2.ref, "sealift-test/app:stable")
    try:
        result = push(
            wire, source_engine, test_images.app2.ref, "sealift-test/app:stable", host.url, "--json"
        ).assert_ok()
    finally:
        source_engine.docker("rmi", "sealift-test/app:stable")
    # one ssh handshake (~7 KiB with OpenSSH 9's post-quantum key exchange) and ~2 KiB of talk
    assert wire.bytes <= 12 * 1024, wire.bytes
    assert_arrived(dest, "sealift-test/app:stable", test_images.app2)
    summary = result.json()
    # the containerd store names the image by its manifest digest, which the first push kept
    # (protocol 3) and the offer carries: the host only tags it
    assert {i["status"] for i in summary["hosts"][0]["images"]} == {"present"}, summary
    if source_engine.kind == "docker20":
        # Docker 26's API names images by manifest digest only: its images are read to build
        # the offer (their configs give the image IDs), so there the source is always read
        assert not summary["source_read"], "nothing needed: the source engine is not even saved"


@pytest.mark.parametrize("engine_kind", ["docker26"], indirect=True)
def test_agent_on_a_store_holding_other_blobs_stages_them_from_its_engine(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
    tmp_path: Path,
) -> None:
    """The host's containerd store holds app:1's layers as zstd blobs (from a zstd archive), the
    push offers other blobs of them: the thin load is hidden, so the agent stages those layers
    from its own engine and loads app:2 whole; they never cross the wire."""
    dest = empty_dest_engine
    load_as_zstd_blobs(source_engine, dest, test_images.app1, tmp_path)
    host, wire = connect(dest, ("sealift", "docker"))
    top = layer_sizes(source_engine, test_images.app2.ref, tmp_path)[-1]
    result = push(wire, source_engine, test_images.app2.ref, host.url, "--json").assert_ok()
    summary = result.json()["hosts"][0]
    assert summary["layers_sent"] == 1 and summary["layers_skipped"] == 2, summary
    assert wire.bytes <= 1.1 * top + SLACK, (wire.bytes, top)
    assert image_id(dest, test_images.app2.ref) == test_images.app2.id
    assert dest.run(test_images.app2.ref) == test_images.app2.expected_output
    assert not any(host.cache.glob("sealift/staging/*")), "staging is cleaned after success"


@both_engine_kinds
def test_cut_mid_layer_then_resume(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
    tmp_path: Path,
) -> None:
    dest = empty_dest_engine
    host, wire = connect(dest, ("sealift", "docker"))
    large = test_images.large
    push(wire, source_engine, test_images.base.ref, host.url).assert_ok()
    big = layer_sizes(source_engine, large.ref, tmp_path)[-1]
    cut = 8 * 1024 * 1024

    cut_result = push(wire, source_engine, large.ref, host.url, cut_after=cut)
    cut_result.assert_one_line_error()
    assert not dest.has_image(large.ref), "a cut push leaves no tag"
    assert large.id not in dest.image_ids(), "a cut push leaves no half image"
    partial = list(host.cache.glob("sealift/staging/*.partial"))
    assert len(partial) == 1 and partial[0].stat().st_size > 4 * 1024 * 1024, partial

    result = push(wire, source_engine, large.ref, host.url, "--json").assert_ok()
    assert result.json()["hosts"][0]["layers_resumed"] == 1
    # the second push sends little more than what had not arrived
    assert wire.bytes <= big - cut + 4 * 1024 * 1024, (wire.bytes, big)
    assert_arrived(dest, large.ref, large)
    assert dest.run(large.ref) == large.expected_output
    assert not any(host.cache.glob("sealift/staging/*"))


@both_engine_kinds
def test_two_hosts_and_a_dead_one(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    second_dest_engine: DockerDaemon,
    start_host: Callable[..., Host],
    tmp_path: Path,
) -> None:
    second_dest_engine.remove_all_images()
    one = start_host(empty_dest_engine, ("sealift", "docker"))
    two = start_host(second_dest_engine, ("sealift", "docker"))
    dead_port = procs.free_port()
    dead = (
        "Host deadhost\n  HostName 127.0.0.1\n"
        f"  Port {dead_port}\n  BatchMode yes\n  ConnectTimeout 5\n"
    )
    wire = Wire(tmp_path / "wire", [one, two], extra=dead)
    started = time.monotonic()
    result = push(
        wire,
        source_engine,
        test_images.app1.ref,
        one.url,
        "ssh://deadhost",
        two.url,
        "--json",
    )
    assert time.monotonic() - started < 120
    line = result.assert_one_line_error()
    assert "deadhost" in line and "1 of 3" in line, line
    hosts = {h["host"]: h for h in json.loads(result.stdout)["hosts"]}
    assert hosts[one.alias]["ok"] and hosts[two.alias]["ok"], hosts
    assert not hosts["deadhost"]["ok"] and hosts["deadhost"]["error"]
    for engine in (empty_dest_engine, second_dest_engine):
        assert_arrived(engine, test_images.app1.ref, test_images.app1)


@both_engine_kinds
def test_two_engines_sharing_one_staging_both_take_a_concurrent_push(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    second_dest_engine: DockerDaemon,
    start_host: Callable[..., Host],
    tmp_path: Path,
) -> None:
    second_dest_engine.remove_all_images()
    shared = tmp_path / "shared-cache"
    one = start_host(empty_dest_engine, ("sealift", "docker"), cache=shared)
    two = start_host(second_dest_engine, ("sealift", "docker"), cache=shared)
    wire = Wire(tmp_path / "wire", [one, two])
    result = push(wire, source_engine, test_images.app1.ref, one.url, two.url, "--json")
    hosts = result.assert_ok().json()["hosts"]
    assert all(host["ok"] for host in hosts), hosts
    for engine in (empty_dest_engine, second_dest_engine):
        assert_arrived(engine, test_images.app1.ref, test_images.app1)
    assert not any(shared.glob("sealift/staging/*")), "staging is cleaned after both"


@both_engine_kinds
def test_pull_sends_only_missing_layers(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
    tmp_path: Path,
) -> None:
    dest = empty_dest_engine
    remote, wire = connect(source_engine, ("sealift", "docker"))
    cache = tmp_path / "local-cache"

    pull(wire, dest, remote, test_images.app1.ref, cache).assert_ok()
    assert_arrived(dest, test_images.app1.ref, test_images.app1)
    top = layer_sizes(source_engine, test_images.app2.ref, tmp_path)[-1]
    result = pull(wire, dest, remote, test_images.app2.ref, cache).assert_ok()
    assert result.json()["hosts"][0]["layers_sent"] == 1
    assert wire.bytes <= 1.1 * top + SLACK, (wire.bytes, top)
    assert dest.run(test_images.app2.ref) == test_images.app2.expected_output


@both_engine_kinds
def test_pull_cut_mid_layer_then_resume(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
    tmp_path: Path,
) -> None:
    dest = empty_dest_engine
    remote, wire = connect(source_engine, ("sealift", "docker"))
    cache = tmp_path / "local-cache"
    large = test_images.large

    pull(wire, dest, remote, test_images.base.ref, cache).assert_ok()
    big = layer_sizes(source_engine, large.ref, tmp_path)[-1]
    cut = 8 * 1024 * 1024
    pull(wire, dest, remote, large.ref, cache, cut).assert_one_line_error()
    assert not dest.has_image(large.ref)
    partial = list(cache.glob("sealift/staging/*.partial"))
    assert len(partial) == 1 and partial[0].stat().st_size > 4 * 1024 * 1024, partial
    result = pull(wire, dest, remote, large.ref, cache).assert_ok()
    assert result.json()["hosts"][0]["layers_resumed"] == 1
    assert wire.bytes <= big - cut + 4 * 1024 * 1024, (wire.bytes, big)
    assert dest.run(large.ref) == large.expected_output
    assert not any(cache.glob("sealift/staging/*"))


# ----------------------------------------------------------------------- mode 2: bare engines
@both_engine_kinds
def test_docker_only_remote_first_push_and_update(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
    tmp_path: Path,
) -> None:
    dest = empty_dest_engine
    host, wire = connect(dest, ("docker",))
    result = push(wire, source_engine, test_images.app1.ref, host.url, "--json").assert_ok()
    assert result.json()["hosts"][0]["mode"] == "docker"
    gzip_sizes = layer_sizes(source_engine, test_images.app1.ref, tmp_path, "gzip")
    assert wire.bytes <= 1.1 * sum(gzip_sizes) + SLACK, (wire.bytes, gzip_sizes)
    assert dest.run(test_images.app1.ref) == test_images.app1.expected_output

    sizes = layer_sizes(source_engine, test_images.app2.ref, tmp_path, "gzip")
    result = push(wire, source_engine, test_images.app2.ref, host.url, "--json").assert_ok()
    # a thin archive: the containerd store too, since it holds base's blobs from app:1's push;
    # base's ~1 MB layer stays home (Docker 26's inventory answer is wordier: twice the slack)
    assert result.json()["hosts"][0]["layers_skipped"] == 2
    assert wire.bytes <= 1.1 * sizes[-1] + 2 * SLACK < sizes[0], (wire.bytes, sizes)
    assert_arrived(dest, test_images.app2.ref, test_images.app2)
    assert dest.run(test_images.app2.ref) == test_images.app2.expected_output


@pytest.mark.parametrize("engine_kind", ["docker26"], indirect=True)
def test_docker_only_containerd_remote_holding_other_blobs_gets_the_image_whole(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
    tmp_path: Path,
) -> None:
    """The host holds app:1's layers as zstd blobs (loaded from a zstd archive), the push sends
    other blobs of the same layers: the thin archive leaves out blobs the store lacks, so it
    hides app:2, and the push sends it again whole."""
    dest = empty_dest_engine
    load_as_zstd_blobs(source_engine, dest, test_images.app1, tmp_path)
    host, wire = connect(dest, ("docker",))
    result = push(wire, source_engine, test_images.app2.ref, host.url, "--json").assert_ok()
    assert result.json()["hosts"][0]["layers_skipped"] == 0
    assert_arrived(dest, test_images.app2.ref, test_images.app2, exact=False)
    assert dest.run(test_images.app2.ref) == test_images.app2.expected_output


@both_engine_kinds
def test_docker_only_remote_takes_a_zstd_archive(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
    tmp_path: Path,
) -> None:
    """A zstd bundle pushed to hosts with only docker: Docker 20.10 cannot read zstd layers, so
    they reach it in a form it loads; the containerd store keeps them as they are."""
    archive = tmp_path / "app-zstd.tar"
    image = test_images.app1
    run_sealift(
        "save", image.ref, "-o", archive, "--compression", "zstd", env=source_engine.env()
    ).assert_ok()
    host, wire = connect(empty_dest_engine, ("docker",))
    result = push(wire, source_engine, str(archive), host.url, "--json").assert_ok()
    assert result.json()["hosts"][0]["mode"] == "docker"
    assert image_id(empty_dest_engine, image.ref) == image.id
    assert empty_dest_engine.run(image.ref) == image.expected_output
    if empty_dest_engine.kind == "docker26":
        digest = run_sealift("inspect", "--json", archive).assert_ok().json()["images"][0]
        assert empty_dest_engine.inspect(image.ref)["Id"] == digest["manifest_digest"]


def test_podman_only_remote(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    podman: Podman,
    connect: Callable[..., tuple[Host, Wire]],
    tmp_path: Path,
) -> None:
    host, wire = connect(None, ("podman",), podman)
    for image in (test_images.app1, test_images.app2):
        result = push(wire, source_engine, image.ref, host.url, "--json").assert_ok()
        assert result.json()["hosts"][0]["mode"] == "podman"
        assert podman.image_id(image.ref) == image.id
    # podman takes the thin archive too: only app:2's top layer crossed
    top = layer_sizes(source_engine, test_images.app2.ref, tmp_path, "gzip")[-1]
    assert result.json()["hosts"][0]["layers_skipped"] == 2
    assert wire.bytes <= 1.1 * top + SLACK, (wire.bytes, top)


def test_sealift_without_an_engine_falls_back_to_podman(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    podman: Podman,
    connect: Callable[..., tuple[Host, Wire]],
) -> None:
    # sealift and docker are on the PATH but no Docker engine answers: podman does the work
    host, wire = connect(None, ("sealift", "podman"), podman)
    result = push(wire, source_engine, test_images.app1.ref, host.url, "--json").assert_ok()
    assert result.json()["hosts"][0]["mode"] == "podman"
    assert podman.image_id(test_images.app1.ref) == test_images.app1.id


# ------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    "args",
    [
        ("sealift-test/app:1;touch /tmp/PWNED", "ssh://host0"),
        ("$(touch /tmp/PWNED)", "ssh://host0"),
        ("sealift-test/app:1", "ssh://-oProxyCommand=touch${IFS}/tmp/PWNED"),
        ("sealift-test/app:1", "ssh://host0;touch /tmp/PWNED"),
        ("sealift-test/app:1", "ssh://us er@host0"),
        ("sealift-test/app:1", "ssh://host0:99999"),
        ("--help;x", "ssh://host0"),
    ],
)
def test_hostile_names_are_refused(args: tuple[str, ...], tmp_path: Path) -> None:
    marker = Path("/tmp/PWNED")
    marker.unlink(missing_ok=True)
    log = tmp_path / "ssh-ran"
    env = dict(os.environ)
    # an ssh that records being run: nothing may run at all
    fake = tmp_path / "fake-ssh"
    fake.write_text(f"#!/bin/sh\necho ran >> {log}\nexit 255\n")
    fake.chmod(0o755)
    env["SEALIFT_SSH_COMMAND"] = str(fake)
    env["DOCKER_HOST"] = "unix:///nonexistent.sock"
    result = run_sealift("push", "--", *args, env=env)
    assert result.returncode == 2, str(result)
    assert not log.exists() and not marker.exists()


def test_pull_needs_sealift_on_the_remote(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
) -> None:
    host, wire = connect(source_engine, ("docker",))
    result = run_sealift("pull", host.url, test_images.base.ref, env=wire.env(source_engine))
    line = result.assert_one_line_error()
    assert "sealift on the remote PATH" in line and host.alias in line, line


def test_wrong_host_key_is_a_clear_error(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
    tmp_path: Path,
) -> None:
    host, wire = connect(None, ("docker",))
    known = host.sshd.known_hosts
    other = tmp_path / "other_key"
    procs_run = __import__("subprocess").run
    procs_run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    key = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    known.write_text(f"{host.alias} {key}\n")
    started = time.monotonic()
    result = push(wire, source_engine, test_images.base.ref, host.url)
    assert time.monotonic() - started < 30
    line = result.assert_one_line_error()
    assert host.alias in line and "Host key verification failed" in line, line
