"""What Docker 25+ writes, and what `docker buildx` adds to every image (SOURCES.md in
``shared/fixtures/tools``).

``docker26-save-multi.tar``: a Docker 25+ save (OCI layout + manifest.json) whose ref names are
bare tags (``1`` for both fixture/base:1 and fixture/app:1): the full name is in
``io.containerd.image.name``, and the two ``1`` must never be confused.

``docker26-buildx-provenance.tar``: att/app:1 in a nested index beside BuildKit's attestation
manifest (platform unknown/unknown, one ``application/vnd.in-toto+json`` blob that is JSON, not a
tar). sealift checks the attestation's digests, carries it byte for byte, lists it under its
image in ``inspect``, and never hands it to an engine (manifest.json lists the image only).
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sealift.ends.archive import ArchiveSource
from sealift.formats.write import docker_manifest_document
from sealift.model import Image
from tests.unit.hostile import (
    TOOL_FIXTURES,
    Result,
    assert_clean_error,
    assert_ok,
    check_inspect_shape,
    check_written_archive,
    run_sealift,
)

pytestmark = pytest.mark.timeout(180)

MULTI = TOOL_FIXTURES / "docker26-save-multi.tar"
BUILDX = TOOL_FIXTURES / "docker26-buildx-provenance.tar"

BASE_ID = "sha256:fad09a2bf06a39fe27f663fab24fd6181ea54a8ac9c88443aaab0d1453263a7a"
APP_ID = "sha256:8abab36f1a39cc694e1d7d1a64f83d3afa533724c2312bbd483d16956bca7b5c"
BASE_MANIFEST = "sha256:d3a03b45244fcecdea9f05ab85575a340797c2afc81990506ab1335af9478e44"
APP_MANIFEST = "sha256:a20baf01bc901621788b2d56b8ebc7f60e0190dcb31c1635ee9a9599f948519f"

BUILDX_ID = "sha256:3f339950253b04fd8d891b48d76567991702a4f91d46a9ef4d72b846b6767371"
BUILDX_INDEX = "sha256:b26fa8b8d20a574584f4319214da467281cf7df4827148356434207feeb4429b"
BUILDX_MANIFEST = "sha256:382054257fb2ea997e245335f39bf2836d5a9bf7cfe2383c0e2ba65e1af13c1c"
ATTESTATION = "sha256:7caedf51e324dbc8664fff506a97155517c8ee58e69ec79a5cef619068bea195"
ATTESTATION_CONFIG = "sha256:6efe21eb3322c8cbcad21ed03d3f416fca767aeae35460a2850a1ee3bb67026c"
PROVENANCE = "sha256:ffcfafc386502e82346df9e2c0c333a4d182e6cc41b4448b714e5dd83e681d38"
IN_TOTO = "application/vnd.in-toto+json"


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    for d in ("cwd", "tmp", "dst"):
        (tmp_path / d).mkdir()
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def sealift(work: Path, *args: str) -> Result:
    return run_sealift(*args, cwd=work / "cwd", tmp=work / "tmp", timeout=120)


def inspect(work: Path, path: Path) -> dict[str, Any]:
    r = sealift(work, "inspect", "--json", str(path))
    assert_ok(r)
    report: dict[str, Any] = r.json()
    check_inspect_shape(report)
    return report


def convert(work: Path, source: Path, *options: str) -> Path:
    out = work / "dst" / "out.tar"
    assert_ok(sealift(work, "convert", *options, str(source), f"archive:{out}"))
    assert_ok(sealift(work, "verify", str(out)))
    return out


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            info.name: tar.extractfile(info).read()  # type: ignore[union-attr]
            for info in tar
            if info.isfile()
        }


def blob(files: dict[str, bytes], digest: str) -> bytes:
    return files["blobs/sha256/" + digest.removeprefix("sha256:")]


# ------------------------------------------------------------------------------ attestations


def test_buildx_archive_verifies_with_its_attestation(work: Path) -> None:
    r = sealift(work, "verify", "--json", str(BUILDX))
    assert_ok(r)
    assert r.json()["images"] == 1, "the attestation is not an image"


def test_inspect_lists_the_attestation_under_its_image(work: Path) -> None:
    report = inspect(work, BUILDX)
    (image,) = report["images"]
    assert image["id"] == BUILDX_ID
    assert image["manifest_digest"] == BUILDX_MANIFEST
    assert image["index_digest"] == BUILDX_INDEX
    assert image["tags"] == ["docker.io/att/app:1"]
    (attestation,) = image["attestations"]
    assert attestation["manifest_digest"] == ATTESTATION
    assert attestation["attests"] == BUILDX_MANIFEST
    assert [(b["digest"], b["media_type"]) for b in attestation["blobs"]] == [(PROVENANCE, IN_TOTO)]
    assert attestation["blobs"][0]["predicate_type"] == "https://slsa.dev/provenance/v0.2"
    assert report["attestations"] == [] and report["unique_layers"] == 1


def test_inspect_text_names_the_attestation(work: Path) -> None:
    r = sealift(work, "inspect", str(BUILDX))
    assert_ok(r)
    text = r.stdout.decode()
    assert "att/app:1" in text and f"attestation {ATTESTATION[:19]}" in text
    assert "unknown/unknown" not in text
    assert text.strip().splitlines()[-1].startswith("1 images,")


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_convert_keeps_every_blob_byte_for_byte(source: str, work: Path) -> None:
    """The layer is gzip already: nothing changes, the nested index keeps its digest."""
    out = work / "dst" / "out.tar"
    if source == "file":
        assert_ok(sealift(work, "convert", str(BUILDX), f"archive:{out}"))
    else:
        r = run_sealift(
            "convert", "-", f"archive:{out}", cwd=work / "cwd", tmp=work / "tmp", stdin=BUILDX
        )
        assert_ok(r)
    before, after = members(BUILDX), members(out)
    blobs = {name for name in before if name.startswith("blobs/")}
    assert {name: after[name] for name in blobs} == {name: before[name] for name in blobs}
    index = json.loads(after["index.json"])
    assert [d["digest"] for d in index["manifests"]] == [BUILDX_INDEX]
    assert check_written_archive(out) == {BUILDX_ID}
    (image,) = inspect(work, out)["images"]
    assert image["index_digest"] == BUILDX_INDEX
    assert [a["manifest_digest"] for a in image["attestations"]] == [ATTESTATION]


def test_recompressing_keeps_the_attestation_and_points_it_at_the_new_manifest(
    work: Path,
) -> None:
    out = convert(work, BUILDX, "--compression", "zstd")
    files = members(out)
    for digest in (ATTESTATION, ATTESTATION_CONFIG, PROVENANCE):
        assert blob(files, digest) == blob(members(BUILDX), digest), digest
    (image,) = inspect(work, out)["images"]
    assert image["id"] == BUILDX_ID
    assert image["manifest_digest"] != BUILDX_MANIFEST
    (attestation,) = image["attestations"]
    assert attestation["manifest_digest"] == ATTESTATION
    assert attestation["attests"] == image["manifest_digest"]
    nested = json.loads(blob(files, image["index_digest"]))
    by_digest = {d["digest"]: d for d in nested["manifests"]}
    annotations = by_digest[ATTESTATION]["annotations"]
    assert annotations["vnd.docker.reference.digest"] == image["manifest_digest"]
    assert annotations["vnd.docker.reference.type"] == "attestation-manifest"
    assert by_digest[ATTESTATION]["platform"] == {"architecture": "unknown", "os": "unknown"}


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_docker_manifest_json_lists_only_the_image(compression: str, work: Path) -> None:
    out = convert(work, BUILDX, "--compression", compression)
    (entry,) = json.loads(members(out)["manifest.json"])
    assert entry["Config"] == "blobs/sha256/" + BUILDX_ID.removeprefix("sha256:")
    assert entry["RepoTags"] == ["att/app:1"]
    assert len(entry["Layers"]) == 1


def test_the_model_keeps_attestations_from_engines() -> None:
    with ArchiveSource(BUILDX) as source:
        (entry,) = source.entries()
        assert [image.id.__str__() for image in entry.loadable_images()] == [BUILDX_ID]
        (attestation,) = entry.attestations()
        assert attestation.manifest is not None
        assert str(attestation.manifest.digest) == ATTESTATION
        assert str(attestation.attests) == BUILDX_MANIFEST
        assert all(layer.opaque for layer in attestation.layers)
        for_engine = entry.without_attestations()
        assert [str(image.id) for image in for_engine.images()] == [BUILDX_ID]
        assert list(for_engine.attestations()) == []
        assert for_engine.tags == entry.tags
        # the one image left is given as it is: its manifest, as the source has it
        assert isinstance(for_engine.target, Image) and for_engine.target.manifest is not None
        assert str(for_engine.target.manifest.digest) == BUILDX_MANIFEST
        assert str(for_engine.target.effective_platform) == "linux/amd64"
        assert for_engine.without_attestations() is for_engine
        manifest_json, _ = docker_manifest_document([entry])
        assert [item["Config"][-64:] for item in json.loads(manifest_json)] == [BUILDX_ID[-64:]]


def test_platform_selection_picks_the_image_not_the_attestation(work: Path) -> None:
    out = convert(work, BUILDX, "--platform", "linux/amd64")
    (image,) = inspect(work, out)["images"]
    assert image["id"] == BUILDX_ID and image["platform"] == "linux/amd64"
    assert check_written_archive(out) == {BUILDX_ID}
    r = sealift(work, "convert", "--platform", "linux/arm64", str(BUILDX), "archive:x.tar")
    assert "linux/arm64" in assert_clean_error(r)


def test_a_tampered_attestation_fails_verify(work: Path) -> None:
    """Opaque is not unchecked: the in-toto blob is held to its digest."""
    tampered = work / "dst" / "tampered.tar"
    name = "blobs/sha256/" + PROVENANCE.removeprefix("sha256:")
    with tarfile.open(BUILDX) as src, tarfile.open(tampered, "w") as dst:
        for info in src:
            data = src.extractfile(info).read() if info.isfile() else None  # type: ignore[union-attr]
            if info.name == name:
                assert data is not None
                data = data.replace(b"Dockerfile", b"Evilfile!!")
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    line = assert_clean_error(sealift(work, "verify", str(tampered)))
    assert PROVENANCE[7:19] in line


# ------------------------------------------------------------------------- Docker 25+ names


def test_docker26_manifests_keep_their_digests_when_blobs_are_kept(work: Path) -> None:
    """Its layers are uncompressed: with --compression none nothing changes."""
    out = convert(work, MULTI, "--compression", "none")
    images = {image["id"]: image for image in inspect(work, out)["images"]}
    assert images[BASE_ID]["manifest_digest"] == BASE_MANIFEST
    assert images[APP_ID]["manifest_digest"] == APP_MANIFEST
    assert check_written_archive(out) == {BASE_ID, APP_ID}


def test_bare_tag_ref_names_are_not_names_of_their_own(work: Path) -> None:
    """base:1 and app:1 both say ref name ``1``: the full names tell them apart."""
    images = {image["id"]: image for image in inspect(work, MULTI)["images"]}
    assert sorted(images[BASE_ID]["tags"]) == [
        "docker.io/fixture/base:1",
        "docker.io/fixture/base:latest",
    ]
    assert images[APP_ID]["tags"] == ["docker.io/fixture/app:1"]
    assert images[BASE_ID]["ref_names"] == [] and images[APP_ID]["ref_names"] == []
    out = work / "dst" / "app.tar"
    assert_ok(sealift(work, "convert", "--tag", "fixture/app:1", str(MULTI), f"archive:{out}"))
    assert [image["id"] for image in inspect(work, out)["images"]] == [APP_ID]


def test_written_ref_names_are_familiar_and_unique(work: Path) -> None:
    out = convert(work, MULTI)
    index = json.loads(members(out)["index.json"])
    names = {
        d["annotations"]["org.opencontainers.image.ref.name"]: d["annotations"][
            "io.containerd.image.name"
        ]
        for d in index["manifests"]
    }
    assert names == {
        "fixture/base:1": "docker.io/fixture/base:1",
        "fixture/base:latest": "docker.io/fixture/base:latest",
        "fixture/app:1": "docker.io/fixture/app:1",
    }
