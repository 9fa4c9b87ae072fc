"""``sealift compose`` on Docker 26 (containerd image store) with compose v2, and update bundles
(``compose save --since``) on both engine kinds (issue 13).

* The issue's project (tests/integration/test_compose.py) saved from a Docker 26 engine, loaded
  with ``compose load --up`` into an emptied Docker 26 engine and started by compose v2 from the
  Debian 13 tree, found as ``docker compose``: a ``docker`` on PATH runs the tree's compose for
  ``docker compose`` and the engine's own client for the rest.
* After one service changed (its tag in .env), ``compose save --since`` the site's inventory
  carries only that service's changed layer, and ``compose load`` of it works on the site.
* A compressed bundle whose spool (SEALIFT_TMPDIR, a small tmpfs) is too small is refused in one
  line saying how much is needed, before anything loads.
"""

from __future__ import annotations

import gzip
import json
import os
import shlex
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealift.ends.engine import Engine
from sealift.space import engine_data_root
from tests.integration.test_compose import (
    COMPOSE_YAML,
    DOTENV,
    OVERRIDE_YAML,
    SERVICES,
    compose_ps_running,
    compose_v2,
    write_project,
)
from tests.support.cli import run_sealift
from tests.support.dockerd import DockerDaemon
from tests.support.engines import both_engine_kinds
from tests.support.images import ImageSet
from tests.support.require import require

pytestmark = [pytest.mark.compose, pytest.mark.engine]

docker26_only = pytest.mark.parametrize("engine_kind", ["docker26"], indirect=True)


def docker_with_compose_v2(engine: DockerDaemon, directory: Path) -> dict[str, str]:
    """A PATH whose ``docker`` runs compose v2 from the tree for ``docker compose`` and the
    engine's own client for everything else."""
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "docker"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = compose ]; then shift; exec {shlex.join(compose_v2())} "$@"; fi\n'
        f'exec {shlex.join(engine.client_command)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return {"PATH": f"{directory}:/usr/sbin:/usr/bin:/sbin:/bin"}


@docker26_only
def test_compose_load_up_runs_the_stack_on_docker26_with_docker_compose_v2(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    stack = write_project(
        tmp_path / "stack",
        {"compose.yaml": COMPOSE_YAML, "compose.override.yaml": OVERRIDE_YAML, ".env": DOTENV},
    )
    saved = tmp_path / "stack.tar"
    saved_summary = (
        run_sealift(
            "compose",
            "save",
            "-H",
            source_engine.host,
            "--profile",
            "debug",
            "-q",
            "--json",
            "-o",
            saved,
            cwd=stack,
        )
        .assert_ok()
        .json()
    )
    images = {"web": test_images.app2, "worker": test_images.app1, "debug": test_images.base}
    # a service's image ID is its config digest, on both stores
    assert {s: d["image_id"] for s, d in saved_summary["services"].items()} == {
        service: image.id for service, image in images.items()
    }

    path = docker_with_compose_v2(empty_dest_engine, tmp_path / "bin")
    project_dir = tmp_path / "site" / "stack"
    loaded = (
        run_sealift(
            "compose",
            "load",
            saved,
            "--project-dir",
            project_dir,
            "--up",
            "-H",
            empty_dest_engine.host,
            "-q",
            "--json",
            env={**os.environ, **path},
        )
        .assert_ok()
        .json()
    )
    assert loaded["compose"] == "docker compose"
    assert loaded["compose_version"].lstrip("v").startswith("2.")
    assert compose_ps_running(empty_dest_engine, compose_v2(), project_dir) == SERVICES
    for service, image in images.items():
        assert empty_dest_engine.config_digest(image.ref) == image.id
        containers = empty_dest_engine.docker(
            "ps", "-q", "--filter", f"label=com.docker.compose.service={service}"
        ).stdout.split()
        inspected = json.loads(empty_dest_engine.docker("inspect", *containers).stdout)[0]
        assert inspected["Image"] == empty_dest_engine.inspect(image.ref)["Id"], service


def carried_layers(archive: Path) -> dict[str, int]:
    """The layers whose blobs the archive carries (diff_id to blob size), from its manifests."""
    report = run_sealift("inspect", "--json", archive).assert_ok().json()
    layers = {layer["digest"]: layer for image in report["images"] for layer in image["layers"]}
    with tarfile.open(archive) as tar:
        blobs = {
            "sha256:" + m.name.rsplit("/", 1)[-1]: m.size
            for m in tar.getmembers()
            if m.name.startswith("blobs/sha256/")
        }
    return {layer["diff_id"]: blobs[digest] for digest, layer in layers.items() if digest in blobs}


@both_engine_kinds
def test_compose_save_since_carries_only_the_changed_layer_and_loads_on_the_site(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    site = empty_dest_engine
    compose_yaml = (
        "services:\n"
        "  web:\n    image: sealift-test/app:${TAG:-1}\n    network_mode: none\n"
        "  worker:\n    image: sealift-test/base:1\n    network_mode: none\n"
    )
    project = write_project(tmp_path / "shop", {"compose.yaml": compose_yaml, ".env": "TAG=1\n"})
    first = tmp_path / "first.tar"
    save = ("compose", "save", "-H", source_engine.host, "-q")
    summary = run_sealift(*save, "--json", "-o", first, cwd=project).assert_ok().json()
    # base's layers are in both services' images: counted once, as in the save stream
    app1_size = source_engine.inspect(test_images.app1.ref)["Size"]
    assert abs(summary["unique_layer_bytes"] - app1_size) <= app1_size // 100, summary
    site_dir = tmp_path / "site" / "shop"
    load = ("compose", "load", "--project-dir", site_dir, "-H", site.host, "-q", "--json")
    run_sealift(*load[:2], first, *load[2:]).assert_ok()
    inventory = tmp_path / "site.json"
    taken = run_sealift("inventory", "-H", site.host, "-o", inventory, "--json").assert_ok()
    assert taken.json()["images"] == 2 and taken.json()["layers"] == 3  # base's two, app:1's
    assert json.loads(inventory.read_text())["created"] == taken.json()["created"]

    (project / ".env").write_text("TAG=2\n")  # web changes: app:2's top layer differs
    update = tmp_path / "update.tar"
    since = run_sealift(*save, "--since", inventory, "-o", update, "--json", cwd=project)
    assert since.assert_ok().json()["layers_written"] == 1
    assert since.json()["layers_left_out"] == len(test_images.app2.diff_ids) - 1

    changed = test_images.app2.diff_ids[-1]
    carried = carried_layers(update)
    assert list(carried) == [changed], carried
    report = run_sealift("inspect", "--json", update).assert_ok().json()
    sizes = {layer["diff_id"]: layer["size"] for i in report["images"] for layer in i["layers"]}
    assert carried[changed] == sizes[changed]  # the blob is the whole changed layer
    assert set(report["update"]["layers_left_out"]) == set(test_images.app2.diff_ids[:-1])
    # what the update weighs is that layer and the metadata: busybox stayed home
    assert update.stat().st_size < carried_layers(first)[test_images.base.diff_ids[0]] / 4

    result = run_sealift(*load[:2], update, *load[2:]).assert_ok().json()
    assert result["layers_sent"] == 1, result
    assert result["services"]["web"]["image"] == "sealift-test/app:2"
    assert site.config_digest(test_images.app2.ref) == test_images.app2.id
    assert site.inspect(test_images.app2.ref)["RootFS"]["Layers"][-1] == changed


@pytest.fixture
def small_spool(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs for SEALIFT_TMPDIR: too small to spool any bundle."""
    require(None if os.geteuid() == 0 else "mounting a tmpfs needs root")
    spool = tmp_path / "spool"
    spool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", spool], check=True)
    try:
        yield spool
    finally:
        subprocess.run(["umount", spool], check=True)


def test_compose_load_says_how_much_space_the_spool_needs_before_loading_anything(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    small_spool: Path,
    tmp_path: Path,
) -> None:
    compose_yaml = "services:\n  app:\n    image: sealift-test/app:1\n    network_mode: none\n"
    project = write_project(tmp_path / "one", {"compose.yaml": compose_yaml})
    bundle = tmp_path / "one.tar"
    run_sealift(
        "compose", "save", "-H", source_engine.host, "-q", "-o", bundle, cwd=project
    ).assert_ok()
    compressed = tmp_path / "one.tar.gz"
    compressed.write_bytes(gzip.compress(bundle.read_bytes(), compresslevel=1))
    site_dir = tmp_path / "site"
    result = run_sealift(
        "compose", "load", compressed, "--project-dir", site_dir, "-H", empty_dest_engine.host,
        env={**os.environ, "SEALIFT_TMPDIR": str(small_spool)},
    )  # fmt: skip
    line = result.assert_one_line_error()
    assert f"not enough free space for loading {compressed}: the spool" in line
    assert f"{small_spool} needs " in line and "free" in line
    assert not site_dir.exists()
    assert not empty_dest_engine.has_image(test_images.app1.ref)


def test_a_local_engines_data_root_is_found_for_the_space_check(dest_engine: DockerDaemon) -> None:
    # Docker 20.10 only: the rig's Docker 26 keeps its data root inside its own mount namespace,
    # where this host cannot see it (so that check is skipped there)
    engine = Engine(dest_engine.host)
    assert engine_data_root(engine) == Path(dest_engine.engine_data_root)
