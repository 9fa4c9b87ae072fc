"""Update bundles with binary patches against real engines (Docker 20.10): a site holding
edge:1 gets edge:2's changed top layer as a patch, rebuilt by `sealift load` against the layer
its engine holds; plain `docker load` (Docker 20.10 and 26) refuses the bundle and leaves
nothing behind; a site that lost the base or a damaged patch is refused, naming the layer, with
nothing loaded."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support.cli import run_sealift
from tests.support.dockerd import DockerDaemon, image_id
from tests.support.engines import EnginePair
from tests.support.images import BuiltImage, ImageSet, build_edge_images
from tests.support.updates import UpdateSite

pytestmark = [pytest.mark.engine]

PATCH_BUNDLE_BUDGET = 64 * 1024
"""The whole update bundle, tar headers and metadata included, for a one-file change."""


@pytest.fixture(scope="module")
def edge_images(source_engine: DockerDaemon, test_images: ImageSet) -> tuple[BuiltImage, ...]:
    return build_edge_images(source_engine)


def _tags(site: DockerDaemon) -> set[str]:
    listed = site.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    return set(listed.split())


def test_a_changed_layer_crosses_as_a_patch_and_sealift_load_rebuilds_it(
    edge_images: tuple[BuiltImage, BuiltImage],
    update_site: UpdateSite,
) -> None:
    old, new = edge_images
    site = update_site.site
    inventory = update_site.holding(old.ref)
    update, summary = update_site.update(new.ref, inventory)

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


def test_a_dry_run_shows_each_layers_base_and_sizes_and_writes_nothing(
    edge_images: tuple[BuiltImage, BuiltImage],
    update_site: UpdateSite,
) -> None:
    old, new = edge_images
    inventory = update_site.holding(old.ref)
    since = ("save", new.ref, "--since", inventory, "--dry-run")
    build_box = update_site.build_box.env()

    shown = run_sealift(*since, env=build_box).assert_ok().stdout
    assert "1 as patches" in shown and "layer 2 of sealift-test/edge:1" in shown, shown
    planned = run_sealift(*since, "--json", env=build_box).assert_ok().json()
    (layer,) = planned["layers"]
    assert (layer["diff_id"], layer["base"]) == (new.diff_ids[-1], old.diff_ids[-1]), layer
    assert layer["sent"] == "patch" and layer["patch_bytes"] < layer["layer_bytes"] // 100
    assert 0 < planned["bytes"] < PATCH_BUNDLE_BUDGET, planned
    assert not list(update_site.workdir.glob("update*")), "a dry run writes nothing"

    bundle, _ = update_site.update(new.ref, inventory)
    assert bundle.stat().st_size == planned["bytes"]


def test_plain_docker_load_of_a_patch_bundle_fails_and_leaves_nothing(
    edge_images: tuple[BuiltImage, BuiltImage],
    update_site: UpdateSite,
) -> None:
    old, new = edge_images
    site = update_site.site
    inventory = update_site.holding(old.ref)
    update, _ = update_site.update(new.ref, inventory)
    images_before, tags_before = set(site.image_ids()), _tags(site)

    loaded = site.docker("load", "-i", str(update), check=False)
    assert loaded.returncode != 0, loaded.stdout
    assert set(site.image_ids()) == images_before and _tags(site) == tags_before
    assert not site.has_image(new.ref)


def test_plain_docker_load_on_docker_26_fails_too_and_leaves_nothing(
    edge_images: tuple[BuiltImage, BuiltImage],
    update_site: UpdateSite,
    engine26: EnginePair,
) -> None:
    old, new = edge_images
    inventory = update_site.holding(old.ref)
    update, _ = update_site.update(new.ref, inventory)
    site = engine26.dest
    site.remove_all_images()
    run_sealift("load", update_site.first_bundle, env=site.env()).assert_ok()
    images_before, tags_before = set(site.image_ids()), _tags(site)

    loaded = site.docker("load", "-i", str(update), check=False)
    assert loaded.returncode != 0, loaded.stdout
    assert set(site.image_ids()) == images_before and _tags(site) == tags_before


def test_a_site_that_lost_the_base_is_refused_naming_the_layer(
    edge_images: tuple[BuiltImage, BuiltImage],
    test_images: ImageSet,
    update_site: UpdateSite,
) -> None:
    old, new = edge_images
    site = update_site.site
    inventory = update_site.holding(test_images.base.ref, old.ref)
    update, _ = update_site.update(new.ref, inventory)

    site.docker("rmi", old.ref)
    line = run_sealift("load", update, env=site.env()).assert_one_line_error()
    assert new.diff_ids[-1] in line and "does not hold" in line, line
    assert not site.has_image(new.ref) and new.ref not in _tags(site)


def test_a_damaged_patch_is_refused_and_nothing_is_tagged(
    edge_images: tuple[BuiltImage, BuiltImage],
    update_site: UpdateSite,
) -> None:
    old, new = edge_images
    site = update_site.site
    inventory = update_site.holding(old.ref)
    update, _ = update_site.update(new.ref, inventory)
    damaged = update_site.workdir / "damaged.tar"
    _flip_a_byte_of_the_patch(update, damaged)

    line = run_sealift("load", damaged, env=site.env()).assert_one_line_error()
    assert new.diff_ids[-1] in line and "damaged" in line, line
    assert "damaged" in run_sealift("verify", damaged).assert_one_line_error()
    assert not site.has_image(new.ref)


def test_no_delta_carries_the_layer_whole(
    edge_images: tuple[BuiltImage, BuiltImage],
    update_site: UpdateSite,
) -> None:
    old, new = edge_images
    site = update_site.site
    inventory = update_site.holding(old.ref)
    update, summary = update_site.update(new.ref, inventory, "--no-delta")
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


def test_a_site_on_docker_26_rebuilds_patches_from_its_content_store(
    engine26: EnginePair, tmp_path: Path
) -> None:
    build_box, site = engine26.source, engine26.dest
    site.remove_all_images()
    old, new = build_edge_images(build_box)
    updates = UpdateSite(site, build_box, tmp_path)
    inventory = updates.holding(old.ref)
    assert json.loads(inventory.read_text())["containerd_store"] is True
    update, summary = updates.update(new.ref, inventory)
    (patched,) = summary["layers_patched"]
    assert patched["diff_id"] == new.diff_ids[-1] and patched["base_diff_id"] == old.diff_ids[-1]
    # the base image's layers cross whole: on the containerd store only the layers of images
    # the inventory lists by manifest digest are left out (edge:2's manifest is new)
    assert patched["patch_bytes"] < 4096 < PATCH_BUNDLE_BUDGET < patched["layer_bytes"], summary

    images_before, tags_before = set(site.image_ids()), _tags(site)
    loaded = site.docker("load", "-i", str(update), check=False)
    assert loaded.returncode != 0, loaded.stdout
    assert set(site.image_ids()) == images_before and _tags(site) == tags_before

    run_sealift("load", update, env=site.env()).assert_ok()
    assert image_id(site, new.ref) == new.id, "the build box's config digest"
    assert site.inspect(new.ref)["RootFS"]["Layers"] == list(new.diff_ids)
    assert site.run(new.ref) == new.expected_output
