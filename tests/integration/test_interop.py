"""Archives written by sealift are read by the real tools, with image IDs kept.

Sources: every archive in ``../shared/fixtures/tools`` (written by Docker 20.10, skopeo and
podman) converted with ``sealift convert``, and the standard test images saved from a private
engine with ``sealift save``. Readers: Docker 20.10 ``docker load``, ``skopeo copy`` from
``docker-archive:`` and ``oci-archive:``, ``ctr images import`` (unpacked, so containerd checks
every diff_id) and ``podman load``.

The image ID is the config digest; see tests/support/fixtures.py for why the OCI fixtures carry
other IDs than the Docker ones.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run_sealift
from tests.support.dockerd import DockerDaemon
from tests.support.fixtures import (
    APP_OUTPUT,
    BUILDX_APP_ID,
    BUILDX_INDEX_DIGEST,
    DOCKER_APP_ID,
    OCI_APP_ID,
    OCI_BASE_ID,
    TOOL_FIXTURE_IMAGES,
)
from tests.support.images import ImageSet
from tests.support.peers import Containerd, Podman, Skopeo, umoci
from tests.support.require import require_tools
from tests.unit import hostile
from tests.unit.test_large_layers import zeros_layer

pytestmark = pytest.mark.interop

FIXTURES = sorted(TOOL_FIXTURE_IMAGES)
HOST_PLATFORM = "linux/amd64"
# Docker 20.10 reads gzip (and uncompressed) layers only; zstd is for the newer readers.
DOCKER20_COMPRESSIONS = ("gzip", "none")


def expected_ids(name: str) -> set[str]:
    """The image IDs a reader must end up with after ``convert`` (host platform only)."""
    spec = TOOL_FIXTURE_IMAGES[name]
    if spec.platforms:
        return {spec.platforms[HOST_PLATFORM]}
    return spec.image_ids


def expected_docker_tags(name: str) -> set[str]:
    """Tags ``docker images`` shows after loading (OCI ref names like ``app-1`` are not tags)."""
    spec = TOOL_FIXTURE_IMAGES[name]
    if spec.kind != "docker-archive":
        return set()
    return set(spec.ids)


def archive_members(archive: Path) -> dict[str, Any]:
    """``manifest.json`` and ``index.json`` of an (uncompressed) archive, where present."""
    found: dict[str, Any] = {}
    with tarfile.open(archive) as tar:
        for name in ("manifest.json", "index.json"):
            try:
                member = tar.extractfile(name)
            except KeyError:
                continue
            if member is not None:
                found[name] = json.load(member)
    return found


class Converted:
    """Caches ``sealift convert`` outputs for the module: (fixture, compression) -> archive."""

    def __init__(self, fixtures: Path, workdir: Path) -> None:
        self.fixtures = fixtures
        self.workdir = workdir
        self._done: dict[tuple[str, str], Path] = {}

    def __call__(self, name: str, compression: str = "gzip") -> Path:
        key = (name, compression)
        if key not in self._done:
            out = self.workdir / f"{name}.{compression}.tar"
            args: list[str | Path] = ["convert", "-q", self.fixtures / name, out]
            args += ["--compression", compression]
            if TOOL_FIXTURE_IMAGES[name].platforms:
                args += ["--platform", HOST_PLATFORM]
            run_sealift(*args).assert_ok()
            assert out.is_file() and out.stat().st_size > 0
            self._done[key] = out
        return self._done[key]


@pytest.fixture(scope="module")
def converted(tool_fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> Converted:
    return Converted(tool_fixtures, tmp_path_factory.mktemp("converted"))


# ------------------------------------------------------------------ convert: sealift's own view
@pytest.mark.parametrize("name", FIXTURES)
def test_convert_output_verifies_and_inspects(name: str, converted: Converted) -> None:
    archive = converted(name)
    run_sealift("verify", archive).assert_ok()
    report = run_sealift("inspect", "--json", archive).assert_ok().json()
    images = report["images"]
    assert {img["id"] for img in images} == expected_ids(name)
    tags = {tag for img in images for tag in img["tags"]}
    for ref in expected_docker_tags(name):
        assert any(tag == ref or tag.endswith("/" + ref) for tag in tags), (ref, tags)
    for img in images:
        assert img["platform"] == HOST_PLATFORM
        assert img["manifest_digest"].startswith("sha256:")
        for layer in img["layers"]:
            assert layer["digest"].startswith("sha256:")
            assert layer["diff_id"].startswith("sha256:")
            assert isinstance(layer["size"], int) and layer["size"] > 0
            assert "gzip" in layer["media_type"]


# --------------------------------------------------------------------------- Docker 20.10 load
@pytest.mark.engine
@pytest.mark.parametrize("compression", DOCKER20_COMPRESSIONS)
@pytest.mark.parametrize("name", FIXTURES)
def test_docker20_loads_converted_fixture(
    name: str, compression: str, converted: Converted, empty_dest_engine: DockerDaemon
) -> None:
    archive = converted(name, compression)
    out = empty_dest_engine.docker("load", "--input", archive).stdout
    assert "Loaded image" in out
    assert set(empty_dest_engine.image_ids()) == expected_ids(name)
    tags = set(empty_dest_engine.tags())
    assert expected_docker_tags(name) <= tags, (tags, out)
    for app_id in expected_ids(name) & {DOCKER_APP_ID, OCI_APP_ID}:
        assert empty_dest_engine.run(app_id) == APP_OUTPUT


# ---------------------------------------------------------------------------------------- skopeo
@pytest.mark.parametrize("name", FIXTURES)
def test_skopeo_reads_converted_fixture_as_docker_archive(
    name: str, converted: Converted, skopeo: Skopeo
) -> None:
    archive = converted(name)
    entries = archive_members(archive)["manifest.json"]
    seen = {
        skopeo.copy_config_digest(f"docker-archive:{archive}:@{i}") for i in range(len(entries))
    }
    assert seen == expected_ids(name)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("name", FIXTURES)
def test_skopeo_reads_converted_fixture_as_oci_archive(
    name: str, compression: str, converted: Converted, skopeo: Skopeo
) -> None:
    archive = converted(name, compression)
    index = archive_members(archive)["index.json"]
    ref_names = [
        (desc.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        for desc in index["manifests"]
    ]
    if len(index["manifests"]) == 1:
        seen = {skopeo.copy_config_digest(f"oci-archive:{archive}")}
    else:
        assert all(ref_names), f"every image in a multi-image archive needs a ref name: {index}"
        seen = {skopeo.copy_config_digest(f"oci-archive:{archive}:{ref}") for ref in set(ref_names)}
    assert seen == expected_ids(name)


def test_oci_ref_names_pick_the_right_image(converted: Converted, skopeo: Skopeo) -> None:
    """``oci-archive:FILE:REF`` must name one image: base:1 and app:1 must not share ref "1".

    skopeo (and podman) take the first index entry whose ref name matches, so a ref name that is
    only the tag silently yields the wrong image. Writing the name as docker prints it
    (``fixture/app:1``) as ``org.opencontainers.image.ref.name`` keeps every ref unique.
    """
    archive = converted("docker20-save-multi.tar")
    index = archive_members(archive)["index.json"]
    by_ref: dict[str, set[str]] = {}
    for desc in index["manifests"]:
        annotations = desc.get("annotations") or {}
        ref = annotations.get("org.opencontainers.image.ref.name")
        assert ref, desc
        by_ref.setdefault(ref, set()).add(desc["digest"])
    ambiguous = {ref: digests for ref, digests in by_ref.items() if len(digests) > 1}
    assert not ambiguous, f"ref names shared by different images: {ambiguous}"
    ids = TOOL_FIXTURE_IMAGES["docker20-save-multi.tar"].ids
    for desc in index["manifests"]:
        ref = desc["annotations"]["org.opencontainers.image.ref.name"]
        name = desc["annotations"].get("io.containerd.image.name", ref)
        short = name.removeprefix("docker.io/")
        got = skopeo.copy_config_digest(f"oci-archive:{archive}:{ref}")
        assert got == ids[short], (ref, name)


# ------------------------------------------------------------------------------------ containerd
@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("name", FIXTURES)
def test_containerd_imports_converted_fixture(
    name: str, compression: str, converted: Converted, containerd: Containerd
) -> None:
    archive = converted(name, compression)
    containerd.import_archive(archive)
    images = containerd.images()
    assert images, "ctr imported nothing"
    seen = {containerd.config_digest(image) for image in images}
    assert seen == expected_ids(name)
    for ref in expected_docker_tags(name):
        assert any(image == ref or image.endswith("/" + ref) for image in images), (ref, images)


# ---------------------------------------------------------------------------------------- podman
@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("name", FIXTURES)
def test_podman_loads_converted_fixture(
    name: str, compression: str, converted: Converted, podman: Podman
) -> None:
    archive = converted(name, compression)
    out = podman.load(archive).stdout
    assert "Loaded image" in out
    assert podman.image_ids() == expected_ids(name)
    tags = set(podman.images())
    for ref in expected_docker_tags(name):
        assert any(tag.endswith("/" + ref) or tag == ref for tag in tags), (ref, tags)


# --------------------------------------------------------------------------- other conversions
def test_convert_via_stdin_and_stdout(tool_fixtures: Path, tmp_path: Path, skopeo: Skopeo) -> None:
    source = (tool_fixtures / "docker20-save-app.tar.gz").read_bytes()
    out = tmp_path / "out.tar"
    run_sealift("convert", "-q", "-", "-", input=source, stdout_path=out).assert_ok()
    run_sealift("verify", out).assert_ok()
    app_id = TOOL_FIXTURE_IMAGES["docker20-save-app.tar.gz"].ids["fixture/app:1"]
    assert skopeo.copy_config_digest(f"docker-archive:{out}") == app_id


def test_convert_to_oci_layout_and_back(
    tool_fixtures: Path, tmp_path: Path, skopeo: Skopeo
) -> None:
    layout = tmp_path / "layout"
    run_sealift(
        "convert", "-q", tool_fixtures / "docker20-save-multi.tar", f"oci:{layout}"
    ).assert_ok()
    assert (layout / "oci-layout").is_file() and (layout / "index.json").is_file()
    index = json.loads((layout / "index.json").read_text())
    ids = TOOL_FIXTURE_IMAGES["docker20-save-multi.tar"].image_ids
    seen = set()
    for desc in index["manifests"]:
        ref = desc["annotations"]["org.opencontainers.image.ref.name"]
        seen.add(skopeo.copy_config_digest(f"oci:{layout}:{ref}"))
    assert seen == ids
    back = tmp_path / "back.tar"
    run_sealift("convert", "-q", layout, back).assert_ok()
    report = run_sealift("inspect", "--json", back).assert_ok().json()
    assert {img["id"] for img in report["images"]} == ids


def test_umoci_unpacks_oci_layout_output(tool_fixtures: Path, tmp_path: Path) -> None:
    """An independent OCI implementation lists the refs and unpacks the right filesystems."""
    require_tools("umoci")
    layout = tmp_path / "layout"
    source = tool_fixtures / "docker20-save-multi.tar"
    run_sealift("convert", "-q", source, f"oci:{layout}").assert_ok()
    refs = set(umoci("ls", "--layout", layout).stdout.split())
    index = json.loads((layout / "index.json").read_text())
    names = {d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"]}
    assert refs == names and len(refs) == 3
    app_ref = next(ref for ref in refs if ref.endswith("fixture/app:1"))
    bundle = tmp_path / "bundle"
    umoci("unpack", "--image", f"{layout}:{app_ref}", bundle)
    assert (bundle / "rootfs" / "app.txt").read_text() == "app v1\n"
    assert (bundle / "rootfs" / "bin" / "busybox").stat().st_size > 100_000
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["/bin/busybox", "sh", "-c", "cat /app.txt; echo $APP"]
    assert "APP=demo" in config["process"]["env"]


def test_multiplatform_all_keeps_both_platforms(tool_fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "multi.tar"
    run_sealift(
        "convert", "-q", tool_fixtures / "podman-multiplatform-oci-layout", out, "--platform", "all"
    ).assert_ok()
    report = run_sealift("inspect", "--json", out).assert_ok().json()
    platforms = {img["platform"]: img["id"] for img in report["images"]}
    assert platforms == {"linux/amd64": OCI_APP_ID, "linux/arm64/v8": OCI_BASE_ID}


# ------------------------------------------------------------------- sealift save -> real tools
SAVE_COMPRESSIONS = ("gzip", "zstd", "none")


@pytest.fixture(scope="module")
def saved_archive(
    source_engine: DockerDaemon, test_images: ImageSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Path]]:
    """``sealift save`` of base:1, base:latest, app:1 and app:2 (cached per compression)."""
    workdir = tmp_path_factory.mktemp("saved")
    done: dict[str, Path] = {}

    def get(compression: str) -> Path:
        if compression not in done:
            out = workdir / f"saved-{compression}.tar"
            refs = [*test_images.base.tags, test_images.app1.ref, test_images.app2.ref]
            run_sealift(
                "save",
                *refs,
                "-o",
                out,
                "-H",
                source_engine.host,
                "-q",
                "--compression",
                compression,
            ).assert_ok()
            done[compression] = out
        return done[compression]

    yield get


def saved_ids(test_images: ImageSet) -> set[str]:
    return {image.id for image in test_images.small}


def saved_tags(test_images: ImageSet) -> set[str]:
    return {tag for image in test_images.small for tag in image.tags}


@pytest.mark.engine
@pytest.mark.parametrize("compression", DOCKER20_COMPRESSIONS)
def test_docker20_loads_sealift_save(
    compression: str,
    saved_archive: Callable[[str], Path],
    test_images: ImageSet,
    empty_dest_engine: DockerDaemon,
) -> None:
    empty_dest_engine.docker("load", "--input", saved_archive(compression))
    assert set(empty_dest_engine.image_ids()) == saved_ids(test_images)
    tags = empty_dest_engine.tags()
    for image in test_images.small:
        for tag in image.tags:
            assert tags.get(tag) == image.id, (tag, tags)
        assert empty_dest_engine.run(image.ref) == image.expected_output


@pytest.mark.engine
@pytest.mark.parametrize("compression", SAVE_COMPRESSIONS)
def test_skopeo_reads_sealift_save(
    compression: str, saved_archive: Callable[[str], Path], test_images: ImageSet, skopeo: Skopeo
) -> None:
    archive = saved_archive(compression)
    for image in test_images.small:
        for tag in image.tags:
            assert skopeo.copy_config_digest(f"docker-archive:{archive}:{tag}") == image.id, tag


@pytest.mark.engine
@pytest.mark.parametrize("compression", SAVE_COMPRESSIONS)
def test_containerd_imports_sealift_save(
    compression: str,
    saved_archive: Callable[[str], Path],
    test_images: ImageSet,
    containerd: Containerd,
) -> None:
    containerd.import_archive(saved_archive(compression))
    images = containerd.images()
    for image in test_images.small:
        for tag in image.qualified_tags:
            assert tag in images, (tag, images)
            assert containerd.config_digest(tag) == image.id


@pytest.mark.engine
@pytest.mark.parametrize("compression", SAVE_COMPRESSIONS)
def test_podman_loads_sealift_save(
    compression: str, saved_archive: Callable[[str], Path], test_images: ImageSet, podman: Podman
) -> None:
    podman.load(saved_archive(compression))
    assert podman.image_ids() == saved_ids(test_images)
    tags = podman.images()
    for image in test_images.small:
        for tag in image.tags:
            matches = [ident for ref, ident in tags.items() if ref.endswith("/" + tag)]
            assert matches == [image.id], (tag, tags)


# ------------------------------------------------------- names skopeo users type, attestations
FAMILIAR_NAMES = ("myapp:1.0", "myorg/api:1.2", "registry:5000/x/y:1")


@pytest.mark.engine
def test_skopeo_finds_a_saved_image_by_the_name_it_was_saved_as(
    tool_fixtures: Path, tmp_path: Path, empty_dest_engine: DockerDaemon, skopeo: Skopeo
) -> None:
    """``skopeo copy oci-archive:stack.tar:myapp:1.0 ...`` for an image saved as myapp:1.0."""
    engine = empty_dest_engine
    engine.docker("load", "--input", tool_fixtures / "docker20-save-app.tar.gz")
    for name in FAMILIAR_NAMES:
        engine.docker("tag", "fixture/app:1", name)
    stack = tmp_path / "stack.tar"
    run_sealift("save", *FAMILIAR_NAMES, "-o", stack, "-H", engine.host, "-q").assert_ok()
    for name in FAMILIAR_NAMES:
        assert skopeo.copy_config_digest(f"oci-archive:{stack}:{name}") == DOCKER_APP_ID, name
    layout = tmp_path / "layout"
    skopeo.copy(f"oci-archive:{stack}:myapp:1.0", f"oci:{layout}:copied")
    index = json.loads((layout / "index.json").read_text())
    assert [d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"]] == [
        "copied"
    ]
    names = {
        d["annotations"]["org.opencontainers.image.ref.name"]: d["annotations"][
            "io.containerd.image.name"
        ]
        for d in archive_members(stack)["index.json"]["manifests"]
    }
    assert names == {
        "myapp:1.0": "docker.io/library/myapp:1.0",
        "myorg/api:1.2": "docker.io/myorg/api:1.2",
        "registry:5000/x/y:1": "registry:5000/x/y:1",
    }


def test_skopeo_copies_the_attested_index_whole(converted: Converted, skopeo: Skopeo) -> None:
    """skopeo reads the converted buildx archive's nested index with its attestation intact."""
    archive = converted("docker26-buildx-provenance.tar")
    layout = Path(tempfile.mkdtemp(prefix="attested-", dir=skopeo.tmpdir))
    skopeo.copy(f"oci-archive:{archive}:att/app:1", f"oci:{layout}:app", "--all")
    (top,) = json.loads((layout / "index.json").read_text())["manifests"]
    assert top["digest"] == BUILDX_INDEX_DIGEST, "the index and everything under it kept"
    assert skopeo.copy_config_digest(f"oci-archive:{archive}:att/app:1") == BUILDX_APP_ID


@pytest.mark.engine
def test_an_image_with_a_gibibyte_of_zeros_loads(
    tmp_path: Path, empty_dest_engine: DockerDaemon
) -> None:
    """A 1 GiB file of zeros compresses past 1000:1 and is no bomb: sealift's archive of it
    (zstd, its uncompressed size recorded) loads into Docker 20.10 with its image ID."""
    blob, diff_id = zeros_layer("gzip")
    built = hostile.build_docker(
        layer_tars=[b""], layer_blobs=[blob], diff_ids=[diff_id], repo_tags=["zeros/db:1"]
    )
    source = tmp_path / "docker-save.tar"
    source.write_bytes(built.tar())
    archive = tmp_path / "zeros.tar"
    run_sealift("convert", "-q", source, archive, "--compression", "zstd").assert_ok()
    run_sealift("load", "-q", archive, "-H", empty_dest_engine.host).assert_ok()
    assert empty_dest_engine.tags() == {"zeros/db:1": built.config_digest}
