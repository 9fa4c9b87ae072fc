"""Update bundles against real engines: `sealift inventory` on the site, `save --since` on the
build box, and a load that checks the site still holds what the update leaves out."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from tests.support.cli import run_sealift
from tests.support.images import ImageSet
from tests.support.updates import UpdateSite

pytestmark = [pytest.mark.engine]


def blobs_in(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return {m.name.rsplit("/", 1)[-1] for m in tar.getmembers() if m.name.startswith("blobs/")}


def test_an_update_carries_only_what_the_site_lacks_and_loads_there(
    test_images: ImageSet, update_site: UpdateSite
) -> None:
    site = update_site.site
    inventory = update_site.holding(test_images.app1.ref)
    update, summary = update_site.update(test_images.app2.ref, inventory)
    assert summary["layers_written"] == 1 and summary["layers_left_out"] == 2, summary
    first = update_site.first_bundle
    assert test_images.app2.diff_ids[-1].removeprefix("sha256:") not in blobs_in(first)
    assert update.stat().st_size < first.stat().st_size / 2

    report = run_sealift("inspect", "--json", update).assert_ok().json()
    assert len(report["update"]["layers_left_out"]) == 2
    assert "left out" in run_sealift("verify", update).assert_ok().stdout

    loaded = run_sealift("load", update, "--json", env=site.env()).assert_ok().json()
    assert loaded["layers_sent"] == 1, loaded
    assert site.inspect(test_images.app2.ref)["Id"] == test_images.app2.id
    assert site.run(test_images.app2.ref) == test_images.app2.expected_output

    # plain docker load of the update works on the engine it was made for
    site.docker("rmi", test_images.app2.ref)
    site.docker("load", "-i", str(update))
    assert site.inspect(test_images.app2.ref)["Id"] == test_images.app2.id


def test_an_update_for_a_site_that_lost_a_layer_loads_nothing_and_names_it(
    test_images: ImageSet, update_site: UpdateSite
) -> None:
    site = update_site.site
    inventory = update_site.holding(test_images.app1.ref)
    update, _ = update_site.update(test_images.app2.ref, inventory)

    site.remove_all_images()
    line = run_sealift("load", update, env=site.env()).assert_one_line_error()
    assert "leaves out 2 layers" in line and test_images.app2.diff_ids[0] in line, line
    assert "inventory" in line and "taken" in line, line
    assert not site.image_ids(), "nothing is loaded"
