"""`sealift copy` with exact blobs between every pair of ends: archive, OCI layout, registry,
Docker 20.10 (classic store) and Docker 26 (containerd store).

One image goes from a gzip archive into the first end, then from there into the second, then is
read back. The image ID (config digest) survives every pair. The manifest digest survives wherever
both ends hold blobs as they are given; a Docker 20.10 engine keeps no compressed blobs (it stores
layers unpacked and rebuilds manifests on export), so every pair with it adapts, and the copy's
`--json` says so. (SSH hosts: tests/integration/test_copy_ssh.py.)
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run_sealift
from tests.support.engines import EnginePair
from tests.support.peers import Registry

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.docker26]

ENDS = ("archive", "layout", "registry", "docker20", "docker26")
KEEPS_BLOBS = {"archive", "layout", "registry", "docker26"}
REF = "matrix/app:1"


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


@pytest.mark.parametrize(("first", "second"), list(itertools.permutations(ENDS, 2)))
def test_an_image_survives_every_pair_of_ends(
    first: str,
    second: str,
    origin: Path,
    engine20: EnginePair,
    engine26: EnginePair,
    registry: Registry,
    tmp_path: Path,
) -> None:
    engines = {"docker20": engine20.dest, "docker26": engine26.dest}
    for engine in engines.values():
        engine.remove_all_images()

    def where(end: str, name: str) -> str:
        if end in engines:  # as a destination, the name gives the one image copied its tag
            return f"docker-daemon:{REF}"
        if end == "archive":
            return str(tmp_path / f"{name}.tar")
        if end == "layout":
            return f"oci:{tmp_path / name}"
        return f"docker://{registry.address}/{name}/app:1"

    def copy(source_end: str, source: str, dest_end: str, dest: str) -> dict[str, Any]:
        args = [source, dest, "--json", "-q"]
        if source_end in engines:
            args += ["--src-daemon-host", engines[source_end].host]
        if dest_end in engines:
            args += ["--dest-daemon-host", engines[dest_end].host]
        summary: dict[str, Any] = run_sealift("copy", *args).assert_ok().json()
        return summary

    ((config_digest, origin_manifest),) = report_of(str(origin)).items()
    copy("archive", str(origin), first, where(first, "one"))
    summary = copy(first, where(first, "one"), second, where(second, "two"))
    back = tmp_path / "back.tar"
    copy(second, where(second, "two"), "archive", str(back))

    ((read_id, read_manifest),) = report_of(str(back)).items()
    assert read_id == config_digest, "the image ID survives every pair"
    if {first, second} <= KEEPS_BLOBS:
        assert read_manifest == origin_manifest, f"{first} -> {second} keeps blobs as they are"
        assert not any(image["adapted"] for image in summary["images"]), summary
    if "docker20" in (first, second):
        assert engines["docker20"].inspect(REF)["Id"] == config_digest
    if first == "docker26" or (second == "docker26" and first in KEEPS_BLOBS):
        assert engines["docker26"].inspect(REF)["Id"] == origin_manifest
