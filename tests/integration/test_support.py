"""The test infrastructure itself: private engines and peers come up and behave as the other
integration tests assume. These need no sealift code, so they also tell a broken machine from a
broken sealift."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import procs
from tests.support.docker26 import Docker26Daemon, missing_docker26_reason, pids_rooted_in
from tests.support.dockerd import DockerDaemon, DockerDaemonError, image_id
from tests.support.engines import EnginePair, EnginePool, both_engine_kinds
from tests.support.fixtures import TOOL_FIXTURE_IMAGES
from tests.support.images import ImageSet
from tests.support.peers import Containerd, Podman, Registry, Skopeo, Sshd
from tests.support.require import require
from tests.support.storage import overlay_mounts_on


def docker_info(daemon: DockerDaemon) -> dict[str, Any]:
    info = json.loads(daemon.docker("info", "--format", "{{json .}}").stdout)
    assert isinstance(info, dict)
    return info


@pytest.mark.engine
@both_engine_kinds
def test_engines_are_private_and_separate(
    source_engine: DockerDaemon, dest_engine: DockerDaemon
) -> None:
    assert source_engine.host != dest_engine.host
    assert source_engine.kind == dest_engine.kind
    for daemon in (source_engine, dest_engine):
        assert len(daemon.host) < 100
        info = docker_info(daemon)
        assert info["DockerRootDir"] == daemon.engine_data_root
        assert daemon.containerd_socket.exists()
        overlay = overlay_mounts_on(daemon.workdir)
        if daemon.kind == "docker20":
            assert info["ServerVersion"].startswith("20.10")
            assert info["Driver"] == daemon.storage_driver == ("overlay2" if overlay else "vfs")
        else:
            assert info["ServerVersion"].startswith("26.")
            assert info["Driver"] == daemon.storage_driver == ("overlayfs" if overlay else "native")
            assert ["driver-type", "io.containerd.snapshotter.v1"] in info["DriverStatus"]


@pytest.mark.engine
def test_both_engine_kinds_can_be_had_as_pairs(
    engine20: EnginePair, engine26: EnginePair, source_engine: DockerDaemon
) -> None:
    assert (engine20.source.kind, engine20.dest.kind) == ("docker20", "docker20")
    assert (engine26.source.kind, engine26.dest.kind) == ("docker26", "docker26")
    assert source_engine is engine20.source, "without a parameter, the engines are Docker 20.10"
    hosts = {e.host for e in (engine20.source, engine20.dest, engine26.source, engine26.dest)}
    assert len(hosts) == 4


@pytest.mark.engine
@both_engine_kinds
def test_standard_images_run_offline(source_engine: DockerDaemon, test_images: ImageSet) -> None:
    for image in test_images.small:
        assert image_id(source_engine, image.ref) == image.id
        assert source_engine.run(image.ref) == image.expected_output
    assert image_id(source_engine, "sealift-test/base:latest") == test_images.base.id
    # app:1 and app:2 share base's layers and differ only in their top layer.
    assert test_images.app1.diff_ids[:2] == test_images.base.diff_ids
    assert test_images.app2.diff_ids[:2] == test_images.base.diff_ids
    assert test_images.app1.diff_ids[2] != test_images.app2.diff_ids[2]
    assert test_images.app1.env == test_images.app2.env
    assert "APP=demo" in test_images.app1.env
    assert test_images.app1.labels == {"org.example.sealift-test": "app"}


@pytest.mark.engine
@both_engine_kinds
def test_large_image_content(source_engine: DockerDaemon, test_images: ImageSet) -> None:
    large = test_images.large
    assert len(large.diff_ids) == 3
    assert source_engine.run(large.ref) == large.expected_output


@pytest.mark.engine
@both_engine_kinds
def test_docker_save_load_round_trip_between_engines(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    """Plain docker save | docker load: the baseline sealift is compared with."""
    archive = source_engine.docker_save(tmp_path / "docker-save.tar", test_images.app1.ref)
    empty_dest_engine.docker("load", "--input", archive)
    assert image_id(empty_dest_engine, test_images.app1.ref) == test_images.app1.id
    assert empty_dest_engine.inspect(test_images.app1.ref)["Id"] == test_images.app1.engine_id
    assert empty_dest_engine.run(test_images.app1.ref) == test_images.app1.expected_output
    empty_dest_engine.remove_all_images()
    assert empty_dest_engine.image_ids() == []


@pytest.mark.engine
def test_docker26_engine_stops_clean_with_a_container_running(
    engine26: EnginePair, engine_pool: EnginePool, tmp_path: Path
) -> None:
    """A third Docker 26 engine beside the session's two: after stop() no process is rooted in
    its private root and nothing is mounted under it or its data root."""
    base = engine_pool.images("docker26").base
    engine = Docker26Daemon("extra", tmp_path / "extra")
    try:
        engine.start()
        archive = engine26.source.docker_save(tmp_path / "base.tar", base.ref)
        engine.docker("load", "--input", archive)
        engine.docker("run", "-d", "--pull=never", "--network", "none", base.ref, "sleep", "600")
        assert len(pids_rooted_in(engine.root)) >= 3, "dockerd, containerd, a shim"
        assert procs.mounts_under(engine.root)
    finally:
        engine.stop()
    assert pids_rooted_in(engine.root) == []
    assert engine.leftover_mounts == []
    assert procs.mounts_under(engine.instance_dir) == []
    assert procs.mounts_under(engine.data_root) == []
    assert not engine.instance_dir.exists() and not engine.data_root.exists()
    assert engine26.source.running and engine26.dest.running, "the others are left alone"


@pytest.mark.engine
def test_docker26_engine_that_fails_to_start_leaves_nothing(tmp_path: Path) -> None:
    require(missing_docker26_reason())
    engine = Docker26Daemon("broken", tmp_path / "broken", extra_args=["--no-such-flag"])
    with pytest.raises(DockerDaemonError, match="did not come up"):
        engine.start()
    assert not engine.running
    assert procs.mounts_under(engine.instance_dir) == []
    assert not engine.instance_dir.exists()


@pytest.mark.interop
@pytest.mark.parametrize(
    "name",
    # Docker 20.10 reads plain, gzip and xz archives, not zstd.
    sorted(
        n
        for n, spec in TOOL_FIXTURE_IMAGES.items()
        if spec.kind == "docker-archive" and not n.endswith(".zst")
    ),
)
def test_docker_loads_docker_archive_fixtures(
    name: str, tool_fixtures: Path, empty_dest_engine: DockerDaemon
) -> None:
    out = empty_dest_engine.docker("load", "--input", tool_fixtures / name).stdout
    assert "Loaded image" in out
    assert set(empty_dest_engine.image_ids()) == set(TOOL_FIXTURE_IMAGES[name].ids.values())


@pytest.mark.interop
def test_skopeo_reads_fixtures(skopeo: Skopeo, tool_fixtures: Path) -> None:
    assert (
        skopeo.config_digest(
            f"docker-archive:{tool_fixtures}/docker20-save-multi.tar:fixture/app:1"
        )
        == TOOL_FIXTURE_IMAGES["docker20-save-multi.tar"].ids["fixture/app:1"]
    )
    assert (
        skopeo.config_digest(f"oci-archive:{tool_fixtures}/skopeo-oci-archive-zstd.tar")
        == TOOL_FIXTURE_IMAGES["skopeo-oci-archive-zstd.tar"].ids["app-1"]
    )


@pytest.mark.interop
def test_containerd_imports_fixture(containerd: Containerd, tool_fixtures: Path) -> None:
    containerd.import_archive(tool_fixtures / "docker20-save-multi.tar")
    names = containerd.images()
    assert set(names) == {
        "docker.io/fixture/base:1",
        "docker.io/fixture/base:latest",
        "docker.io/fixture/app:1",
    }
    assert (
        containerd.config_digest("docker.io/fixture/app:1")
        == (TOOL_FIXTURE_IMAGES["docker20-save-multi.tar"].ids["fixture/app:1"])
    )


@pytest.mark.interop
def test_podman_loads_fixture(podman: Podman, tool_fixtures: Path) -> None:
    out = podman.load(tool_fixtures / "podman-oci-archive.tar").stdout
    assert "Loaded image" in out
    assert (
        podman.image_id("localhost/fixture/app:1")
        == (TOOL_FIXTURE_IMAGES["podman-oci-archive.tar"].ids["localhost/fixture/app:1"])
    )


@pytest.mark.ssh
def test_sshd_sets_environment(sshd_factory: Callable[..., Sshd]) -> None:
    server = sshd_factory({"DOCKER_HOST": "unix:///tmp/sealift-nowhere.sock"})
    out = server.ssh("echo $DOCKER_HOST; id -u").stdout.split()
    assert out == ["unix:///tmp/sealift-nowhere.sock", "0"]
    assert server.known_hosts.read_text().count("ssh-ed25519") == 2


def test_fixture_table_matches_archives(tool_fixtures: Path) -> None:
    """The expected IDs in tests/support/fixtures.py are the configs the archives carry."""
    for name, spec in TOOL_FIXTURE_IMAGES.items():
        path = tool_fixtures / name
        assert path.exists(), name
        if spec.kind == "docker-archive" and path.suffix == ".tar":
            with tarfile.open(path) as tar:
                member = tar.extractfile("manifest.json")
                assert member is not None
                manifest = json.load(member)
            # "<hex>.json" (Docker 20.10) or "blobs/sha256/<hex>" (Docker 25+)
            configs = {
                "sha256:" + entry["Config"].removesuffix(".json").rsplit("/", 1)[-1]
                for entry in manifest
            }
            assert configs == set(spec.ids.values()), name


@pytest.mark.interop
def test_registry_accepts_a_push(registry: Registry, skopeo: Skopeo, tool_fixtures: Path) -> None:
    target = f"docker://{registry.address}/fixture/app:1"
    skopeo.copy(
        f"docker-archive:{tool_fixtures}/docker20-save-multi.tar:fixture/app:1",
        target,
        "--dest-tls-verify=false",
    )
    assert (
        skopeo.copy_config_digest(target, "--src-tls-verify=false")
        == TOOL_FIXTURE_IMAGES["docker20-save-multi.tar"].ids["fixture/app:1"]
    )
