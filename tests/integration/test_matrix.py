"""`sealift copy` with exact blobs between every pair of ends: archive, OCI layout, registry,
Docker 20.10 (classic store), Docker 26 (containerd store), and SSH hosts of both engine kinds,
with sealift there (``agent``) or only docker (``bare``).

One image goes from a gzip archive into the first end, then from there into the second, then is
read back into an archive. The image ID (config digest) survives every pair. The manifest digest
survives wherever both ends hold blobs as they are given. These pairs adapt, and why:

* a Docker 20.10 engine, directly or behind SSH, keeps no compressed blobs (it stores layers
  unpacked and rebuilds manifests on export): every pair with it gets a rebuilt manifest;
* a bare-docker host is only a destination (reading a host needs sealift there): its image is
  read back through its engine, so it adapts as that engine does (Docker 26 keeps the archive's
  blobs, Docker 20.10 rebuilds).

The SSH hosts (one sshd each, started once for the module) sit in front of third engines of
each kind, so an SSH end never meets the engine it stands for; the agent and bare hosts of one
kind share that engine and are never paired with each other. Between an SSH end and the file
ends, the archive stands for the layout and the registry (they hand over blobs alike).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_push import _bin_dir
from tests.support.cli import REPO_ROOT, run_sealift
from tests.support.dockerd import DockerDaemon
from tests.support.engines import EnginePair, EnginePool, missing_reason
from tests.support.peers import Registry, Sshd
from tests.support.require import require, require_tools

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.docker26, pytest.mark.ssh]

FILE_ENDS = ("archive", "layout", "registry")
ENGINE_ENDS = ("docker20", "docker26")
SSH_ENDS = ("agent20", "agent26", "bare20", "bare26")
ENDS = FILE_ENDS + ENGINE_ENDS + SSH_ENDS
KEEPS_BLOBS = {"archive", "layout", "registry", "docker26", "agent26", "bare26"}
CLASSIC_STORE = {"docker20", "agent20", "bare20"}
READABLE = set(ENDS) - {"bare20", "bare26"}
"""Ends a copy can read from: a host without sealift is a destination only."""
REF = "matrix/app:1"


def _pairs() -> list[tuple[str, str]]:
    """Every ordered pair the matrix runs: the first end must be readable, and two SSH ends of
    one engine (agent20 and bare20, agent26 and bare26) are one place, not a pair."""
    return [
        (first, second)
        for first, second in itertools.permutations(ENDS, 2)
        if first in READABLE
        and not _one_engine(first, second)
        and not _same_as_archive(first, second)
    ]


def _same_as_archive(first: str, second: str) -> bool:
    """A layout or a registry hands an SSH end blobs exactly as an archive does: the archive
    stands for all three there, which keeps the module's run time down."""
    files_but_archive = set(FILE_ENDS) - {"archive"}
    return (first in files_but_archive and second in SSH_ENDS) or (
        first in SSH_ENDS and second in files_but_archive
    )


def _one_engine(first: str, second: str) -> bool:
    return first in SSH_ENDS and second in SSH_ENDS and first[-2:] == second[-2:]


@dataclass
class SshHosts:
    """The module's SSH hosts: an sshd per SSH end, one ssh_config naming them all."""

    engines: dict[str, DockerDaemon]
    ssh_config: Path

    def env(self) -> dict[str, str]:
        return {"SEALIFT_SSH_COMMAND": f"ssh -F {self.ssh_config}"}


@pytest.fixture(scope="module")
def ssh_hosts(
    engine_pool: EnginePool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SshHosts]:
    require_tools("/usr/sbin/sshd", "ssh", "ssh-keygen")
    for kind in ("docker20", "docker26"):
        require(missing_reason(kind))
    root = tmp_path_factory.mktemp("matrix-hosts")
    engines: dict[str, DockerDaemon] = {}
    servers: list[Sshd] = []
    try:
        for end in SSH_ENDS:
            engine = engine_pool.engine("docker20" if end.endswith("20") else "docker26", "dst2")
            tools = ("sealift", "docker") if end.startswith("agent") else ("docker",)
            bin_dir = _bin_dir(root / end / "bin", tools, engine)
            env = {
                "PATH": f"{bin_dir}:/usr/bin:/bin" if "sealift" in tools else str(bin_dir),
                "XDG_CACHE_HOME": str(root / end / "cache"),
                "PYTHONPATH": str(REPO_ROOT / "src"),
                "DOCKER_HOST": engine.host,
                "DOCKER_CONFIG": str(engine.client_config_dir),
            }
            servers.append(Sshd(root / end / "sshd", env, alias=end).start())
            engines[end] = engine
        config = root / "ssh_config"
        config.write_text("\n".join(server.ssh_config.read_text() for server in servers))
        yield SshHosts(engines, config)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def origin(engine20: EnginePair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """app:1 of the standard images in a sealift archive (gzip), named matrix/app:1."""
    from tests.support.images import build_test_images

    images = build_test_images(engine20.source)
    engine20.source.docker("tag", images.app1.ref, REF)
    path = tmp_path_factory.mktemp("matrix") / "origin.tar"
    run_sealift("save", REF, "-o", path, "-H", engine20.source.host).assert_ok()
    return path


def report_of(spec: str, *extra: str) -> dict[str, str]:
    """Config digest -> manifest digest of what ``spec`` holds (read through an archive)."""
    report = run_sealift("inspect", "--json", spec, *extra).assert_ok().json()
    return {row["id"]: row["manifest_digest"] for row in report["images"]}


@pytest.mark.parametrize(("first", "second"), _pairs())
def test_an_image_survives_every_pair_of_ends(
    first: str,
    second: str,
    origin: Path,
    engine20: EnginePair,
    engine26: EnginePair,
    registry: Registry,
    ssh_hosts: SshHosts,
    tmp_path: Path,
) -> None:
    engines = {"docker20": engine20.dest, "docker26": engine26.dest, **ssh_hosts.engines}
    for end in (first, second):
        if end in engines:
            engines[end].remove_all_images()
    names: dict[str, str] = {}
    """The name each SSH end gave the image (a host keeps the names it is sent)."""

    def where(end: str, name: str, *, reading: bool = False) -> str:
        if end in ENGINE_ENDS:  # as a destination, the name gives the one image copied its tag
            return f"docker-daemon:{REF}"
        if end in SSH_ENDS:
            if not reading:
                return f"ssh://{end}"
            if end.startswith("bare"):
                return f"docker-daemon:{names[end]}"
            return f"ssh://{end}/{names[end]}"
        if end == "archive":
            return str(tmp_path / f"{name}.tar")
        if end == "layout":
            return f"oci:{tmp_path / name}"
        return f"docker://{registry.address}/{name}/app:1"

    def copy(source_end: str, source: str, dest_end: str, dest: str) -> dict[str, Any]:
        args = [source, dest, "--json", "-q"]
        if source_end in ENGINE_ENDS or source_end.startswith("bare"):
            args += ["--src-daemon-host", engines[source_end].host]
        if dest_end in ENGINE_ENDS:
            args += ["--dest-daemon-host", engines[dest_end].host]
        env = {**os.environ, **ssh_hosts.env()}
        result = run_sealift("copy", *args, env=env, timeout=300)
        summary: dict[str, Any] = result.assert_ok().json()
        if dest_end in SSH_ENDS:
            (image,) = summary["images"]
            names[dest_end] = image["names"][0]
        return summary

    ((config_digest, origin_manifest),) = report_of(str(origin)).items()
    copy("archive", str(origin), first, where(first, "one"))
    summary = copy(first, where(first, "one", reading=True), second, where(second, "two"))
    back = tmp_path / "back.tar"
    copy(second, where(second, "two", reading=True), "archive", str(back))

    ((read_id, read_manifest),) = report_of(str(back)).items()
    assert read_id == config_digest, "the image ID survives every pair"
    if {first, second} <= KEEPS_BLOBS:
        assert read_manifest == origin_manifest, f"{first} -> {second} keeps blobs as they are"
        assert not any(image["adapted"] for image in summary["images"]), summary
    for end in (first, second):
        if end not in engines:
            continue
        shown = engines[end].inspect(names.get(end, REF))["Id"]
        if end in CLASSIC_STORE:
            assert shown == config_digest, f"{end} names the image by its config digest"
        elif end == first or first in KEEPS_BLOBS:
            assert shown == origin_manifest, f"{end} holds the blobs and manifest it was given"
