"""The one pipeline over real sshd and engines: push from an archive, pull into files, and
transfers into one place at once (shared staging, one layout)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_push import (  # fixtures and helpers of the push tests
    SLACK,
    Host,
    Wire,
    _bin_dir,
    connect,
    layer_sizes,
    push,
    start_host,
)
from tests.support.cli import run_sealift
from tests.support.dockerd import DockerDaemon
from tests.support.engines import both_engine_kinds
from tests.support.images import ImageSet
from tests.support.peers import Sshd

pytestmark = [pytest.mark.ssh, pytest.mark.engine]

__all__ = ["connect", "start_host"]  # pytest finds the fixtures through these


def save(engine: DockerDaemon, ref: str, path: Path, *args: str) -> Path:
    run_sealift("save", ref, "-o", path, *args, env=engine.env()).assert_ok()
    return path


def test_push_from_an_archive_sends_each_host_only_what_it_lacks(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    second_dest_engine: DockerDaemon,
    start_host: Callable[..., Host],
    tmp_path: Path,
) -> None:
    second_dest_engine.remove_all_images()
    archive = save(
        source_engine, test_images.app2.ref, tmp_path / "bundle.tar", "--compression", "zstd"
    )
    one = start_host(empty_dest_engine, ("sealift", "docker"))
    two = start_host(second_dest_engine, ("sealift", "docker"))
    warm = Wire(tmp_path / "warm", [two])
    push(warm, source_engine, test_images.app1.ref, two.url).assert_ok()

    wire = Wire(tmp_path / "wire", [one, two])
    result = push(wire, source_engine, str(archive), one.url, two.url, "--json").assert_ok()
    hosts = {h["host"]: h for h in result.json()["hosts"]}
    assert hosts[one.alias]["layers_sent"] == 3, hosts
    assert hosts[two.alias]["layers_sent"] == 1 and hosts[two.alias]["layers_skipped"] == 2, hosts
    for engine in (empty_dest_engine, second_dest_engine):
        assert engine.inspect(test_images.app2.ref)["Id"] == test_images.app2.id
        assert engine.run(test_images.app2.ref) == test_images.app2.expected_output
    sizes = layer_sizes(source_engine, test_images.app2.ref, tmp_path)
    everything, top = sum(sizes), sizes[-1]
    assert wire.bytes <= 1.1 * (everything + top) + 2 * SLACK, (wire.bytes, everything, top)


def test_a_cut_push_from_an_archive_resumes_inside_the_layer(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
    tmp_path: Path,
) -> None:
    large = test_images.large
    archive = save(source_engine, large.ref, tmp_path / "large.tar", "--compression", "zstd")
    host, wire = connect(empty_dest_engine, ("sealift", "docker"))
    cut = push(wire, source_engine, f"archive:{archive}", host.url, cut_after=8 * 1024 * 1024)
    cut.assert_one_line_error()
    assert not empty_dest_engine.has_image(large.ref)
    result = push(wire, source_engine, f"archive:{archive}", host.url, "--json").assert_ok()
    assert result.json()["hosts"][0]["layers_resumed"] == 1
    assert empty_dest_engine.inspect(large.ref)["Id"] == large.id


@both_engine_kinds
@pytest.mark.parametrize("destination", ["archive", "layout"])
def test_pull_into_a_file_or_a_layout_keeps_the_remotes_manifest(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
    tmp_path: Path,
    destination: str,
) -> None:
    """Blobs cross as the remote holds them (protocol 3), so the file's manifest is the
    remote's: on Docker 26 its engine ID; Docker 20.10 holds no manifest, so there it is the one
    its export gives, the same on every pull."""
    remote, wire = connect(source_engine, ("sealift", "docker"))
    app = test_images.app1

    def pull_into(name: str) -> str:
        output = f"oci:{tmp_path / name}" if destination == "layout" else str(tmp_path / name)
        env = wire.env(source_engine)
        env["XDG_CACHE_HOME"] = str(tmp_path / "local-cache")
        result = run_sealift(
            "pull", remote.url, app.ref, "-o", output, "--json", env=env, timeout=300
        ).assert_ok()
        assert [image["ids"] for image in result.json()["images"]] == [[app.id]]
        run_sealift("verify", output).assert_ok()
        report = run_sealift("inspect", "--json", output).assert_ok().json()
        assert [image["id"] for image in report["images"]] == [app.id]
        assert not any((tmp_path / "local-cache").glob("sealift/staging/*")), "staging emptied"
        return str(report["images"][0]["manifest_digest"])

    first = pull_into("one")
    if source_engine.kind == "docker26":
        assert first == source_engine.inspect(app.ref)["Id"] == app.engine_id
    else:
        assert pull_into("two") == first, "the manifest is the same on every pull"


def test_two_pushes_into_one_hosts_shared_staging_both_succeed(
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    second_dest_engine: DockerDaemon,
    sshd_factory: Callable[..., Sshd],
    tmp_path: Path,
) -> None:
    """Two engines on one machine (or two CI jobs deploying at once) share one staging
    directory: the second receiver of a layer waits for the first and reuses its bytes."""
    second_dest_engine.remove_all_images()
    shared_cache = tmp_path / "one-machine-cache"
    hosts = []
    for index, engine in enumerate((empty_dest_engine, second_dest_engine)):
        bin_dir = _bin_dir(tmp_path / f"bin{index}", ("sealift", "docker"), engine)
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "XDG_CACHE_HOME": str(shared_cache),
            "DOCKER_HOST": engine.host,
            "DOCKER_CONFIG": str(engine.client_config_dir),
        }
        alias = f"same{index}"
        hosts.append(Host(sshd_factory(env, alias=alias), alias, shared_cache))
    wire = Wire(tmp_path / "wire", hosts)
    large = test_images.large
    result = push(wire, source_engine, large.ref, *(h.url for h in hosts), "--json").assert_ok()
    assert all(h["ok"] for h in result.json()["hosts"]), result.stdout
    for engine in (empty_dest_engine, second_dest_engine):
        assert engine.inspect(large.ref)["Id"] == large.id
    assert not any(shared_cache.glob("sealift/staging/*")), "staging is emptied by the last one"
