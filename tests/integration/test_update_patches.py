"""Update bundles with binary patches against real engines (Docker 20.10): a site holding
edge:1 gets edge:2's changed top layer as a patch, rebuilt by `sealift load` against the layer
its engine holds; plain `docker load` (Docker 20.10 and 26) refuses the bundle and leaves
nothing behind; a site that lost the base or a damaged patch is refused, naming the layer, with
nothing loaded."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run_sealift
from tests.support.dockerd import DockerDaemon
from tests.support.engines import EnginePair
from tests.support.images import BuiltImage, ImageSet, build_edge_images

pytestmark = [pytest.mark.engine]

PATCH_BUNDLE_BUDGET = 64 * 1024
"""The whole update bundle, tar headers and metadata included, for a one-file change."""


@pytest.fixture(scope="module")
def edge_images(source_engine: DockerDaemon, test_images: ImageSet) -> tuple[BuiltImage, ...]:
    return build_edge_images(source_engine)


def _site_holding(
    site: DockerDaemon, source: DockerDaemon, refs: list[str], tmp_path: Path
) -> Path:
    """Load ``refs`` into the site, and return the site's inventory."""
    first = tmp_path / "first.tar"
    run_sealift("save", *refs, "-o", first, env=source.env()).assert_ok()
    run_sealift("load", first, env=site.env()).assert_ok()
    inventory = tmp_path / "site.json"
    run_sealift("inventory", "-o", inventory, env=site.env()).assert_ok()
    return inventory


def _update(
    source: DockerDaemon, ref: str, inventory: Path, tmp_path: Path, *more: str
) -> tuple[Path, dict[str, Any]]:
    update = tmp_path / "update.tar"
    summary = (
        run_sealift(
            "save", ref, "--since", inventory, "-o", update, "--json", *more, env=source.env()
        )
        .assert_ok()
        .json()
    )
    return update, summary


def _tags(site: DockerDaemon) -> set[str]:
    listed = site.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    return set(listed.split())


def test_a_changed_layer_crosses_as_a_patch_and_sealift_load_rebuilds_it(
    edge_images: tuple[BuiltImage, BuiltImage],
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    tmp_path: Path,
) -> None:
    old, new = edge_images
    site = empty_dest_engine
    inventory = _site_holding(site, source_engine, [old.ref], tmp_path)
    update, summary = _update(source_engine, new.ref, inventory, tmp_path)

    (patched,) = summary["layers_patched"]
    assert patched["diff_id"] == new.diff_ids[-1] and patched["base_diff_id"] == old.diff_ids[-1]
    assert summary["layers_written"] == 0, summary
    assert update.stat().st_size < PATCH_BUNDLE_BUDGET < patched["layer_bytes"], summary

    report = run_sealift("inspect", "--json", update).assert_ok().json()
    assert report["update"]["needs_sealift_load"] is True
    assert [p["base_diff_id"] for p in report["update"]["layers_patched"]] == [old.diff_ids[-1]]
    assert "needs `sealift load`" in run_sealift("inspect", update).assert_ok().stdout
    verified = run_sealift("verify", update).assert_ok().stdout
    assert "1 layers are patches" in verified and "without the bases" in verified, verified

    run_sealift("load", update, env=site.env()).assert_ok()
    assert site.inspect(new.ref)["Id"] == new.id
    assert site.run(new.ref) == new.expected_output


def test_plain_docker_load_of_a_patch_bundle_fails_and_leaves_nothing(
    edge_images: tuple[BuiltImage, BuiltImage],
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    tmp_path: Path,
) -> None:
    old, new = edge_images
    site = empty_dest_engine
    inventory = _site_holding(site, source_engine, [old.ref], tmp_path)
    update, _ = _update(source_engine, new.ref, inventory, tmp_path)
    images_before, tags_before = set(site.image_ids()), _tags(site)

    loaded = site.docker("load", "-i", str(update), check=False)
    assert loaded.returncode != 0, loaded.stdout
    assert set(site.image_ids()) == images_before and _tags(site) == tags_before
    assert not site.has_image(new.ref)


def test_plain_docker_load_on_docker_26_fails_too_and_leaves_nothing(
    edge_images: tuple[BuiltImage, BuiltImage],
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    engine26: EnginePair,
    tmp_path: Path,
) -> None:
    old, new = edge_images
    inventory = _site_holding(empty_dest_engine, source_engine, [old.ref], tmp_path)
    update, _ = _update(source_engine, new.ref, inventory, tmp_path)
    site = engine26.dest
    site.remove_all_images()
    first = tmp_path / "first.tar"  # written by _site_holding
    run_sealift("load", first, env=site.env()).assert_ok()
    images_before, tags_before = set(site.image_ids()), _tags(site)

    loaded = site.docker("load", "-i", str(update), check=False)
    assert loaded.returncode != 0, loaded.stdout
    assert set(site.image_ids()) == images_before and _tags(site) == tags_before


def test_a_site_that_lost_the_base_is_refused_naming_the_layer(
    edge_images: tuple[BuiltImage, BuiltImage],
    test_images: ImageSet,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    tmp_path: Path,
) -> None:
    old, new = edge_images
    site = empty_dest_engine
    inventory = _site_holding(site, source_engine, [test_images.base.ref, old.ref], tmp_path)
    update, _ = _update(source_engine, new.ref, inventory, tmp_path)

    site.docker("rmi", old.ref)
    line = run_sealift("load", update, env=site.env()).assert_one_line_error()
    assert new.diff_ids[-1] in line and "does not hold" in line, line
    assert not site.has_image(new.ref) and new.ref not in _tags(site)


def test_a_damaged_patch_is_refused_and_nothing_is_tagged(
    edge_images: tuple[BuiltImage, BuiltImage],
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    tmp_path: Path,
) -> None:
    old, new = edge_images
    site = empty_dest_engine
    inventory = _site_holding(site, source_engine, [old.ref], tmp_path)
    update, _ = _update(source_engine, new.ref, inventory, tmp_path)
    damaged = tmp_path / "damaged.tar"
    _flip_a_byte_of_the_patch(update, damaged)

    line = run_sealift("load", damaged, env=site.env()).assert_one_line_error()
    assert new.diff_ids[-1] in line and "damaged" in line, line
    assert "damaged" in run_sealift("verify", damaged).assert_one_line_error()
    assert not site.has_image(new.ref)


def test_no_delta_carries_the_layer_whole(
    edge_images: tuple[BuiltImage, BuiltImage],
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    tmp_path: Path,
) -> None:
    old, new = edge_images
    site = empty_dest_engine
    inventory = _site_holding(site, source_engine, [old.ref], tmp_path)
    update, summary = _update(source_engine, new.ref, inventory, tmp_path, "--no-delta")
    assert summary["layers_written"] == 1 and summary["layers_patched"] == [], summary
    assert update.stat().st_size > PATCH_BUNDLE_BUDGET

    site.docker("load", "-i", str(update))
    assert site.inspect(new.ref)["Id"] == new.id


def _flip_a_byte_of_the_patch(original: Path, damaged: Path) -> None:
    with tarfile.open(original) as source, tarfile.open(damaged, "w") as out:
        for member in source.getmembers():
            data = source.extractfile(member) if member.isfile() else None
            content = data.read() if data is not None else b""
            if member.name.startswith("sealift/patches/"):
                content = content[:-20] + bytes([content[-20] ^ 0xFF]) + content[-19:]
            out.addfile(member, io.BytesIO(content) if data is not None else None)
