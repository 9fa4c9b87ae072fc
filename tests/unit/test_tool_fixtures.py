"""Archives written by real tools (``shared/fixtures/tools``, SOURCES.md there): all valid.

Every one must verify, inspect with the listed image ids and diff_ids, and convert (gzip,
zstd, none) to an archive that re-verifies and keeps the image ids and tags. Converting is
reproducible, works from stdin for compressed inputs, and the multi-platform layout is
selected by the platform in its index.

Image ids: SOURCES.md lists the Docker config digests (base ``fad09a2b…``, app ``8abab36f…``).
Those are the ids in the docker-archive fixtures. skopeo and podman rewrote the config as an
OCI config when writing the OCI fixtures, so their config digests, and therefore the ids sealift
must report for them, are ``672f0254…`` (base) and ``05a5e487…`` (app); the diff_ids are the
same everywhere. (An engine loading those OCI images reports the OCI config digest as the id.)
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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

BASE_ID = "sha256:fad09a2bf06a39fe27f663fab24fd6181ea54a8ac9c88443aaab0d1453263a7a"
APP_ID = "sha256:8abab36f1a39cc694e1d7d1a64f83d3afa533724c2312bbd483d16956bca7b5c"
BASE_OCI_ID = "sha256:672f0254de937d57f04ec6087253507ff199b111c6fb2e1731b1119c5380b636"
APP_OCI_ID = "sha256:05a5e4872bd3c36052605024e96515c9b7b71fbc6a5cba894740f79036f55ea2"
D1 = "sha256:fac4b9de311b7801d9df27bdbf2745b1b020cb8571db8e632515b43018b3b66a"
D2 = "sha256:e5e1a2198f0e950d8cea163f3bd49d28593b24620bd45f7f65c3b734cade6b60"
D3 = "sha256:3fa626e6504b41f01fdb448a86bd3a5118d17475fadb6c15be6b2c46ab02a9a4"
BASE_DIFFS = (D1, D2)
APP_DIFFS = (D1, D2, D3)
BUILDX_ID = "sha256:3f339950253b04fd8d891b48d76567991702a4f91d46a9ef4d72b846b6767371"
BUILDX_DIFFS = ("sha256:a74909eca0b2226ab2df880363874167e1fd01901ba20993819d0e1b627ada7a",)


@dataclass(frozen=True)
class Img:
    id: str
    diff_ids: tuple[str, ...]
    tags: tuple[str, ...] | None = None  # exact set (docker archives)
    ref_names: tuple[str, ...] = ()  # must be among ref_names (OCI)
    platform: str | None = None


FIXTURES: dict[str, tuple[Img, ...]] = {
    "docker20-save-multi.tar": (
        Img(BASE_ID, BASE_DIFFS, ("docker.io/fixture/base:1", "docker.io/fixture/base:latest")),
        Img(APP_ID, APP_DIFFS, ("docker.io/fixture/app:1",)),
    ),
    "docker20-save-app.tar.gz": (Img(APP_ID, APP_DIFFS, ("docker.io/fixture/app:1",)),),
    "docker20-save-app.tar.zst": (Img(APP_ID, APP_DIFFS, ("docker.io/fixture/app:1",)),),
    "docker20-save-app.tar.xz": (Img(APP_ID, APP_DIFFS, ("docker.io/fixture/app:1",)),),
    "skopeo-oci-archive-gzip.tar": (Img(APP_OCI_ID, APP_DIFFS, None, ("app-1",)),),
    "skopeo-oci-archive-zstd.tar": (Img(APP_OCI_ID, APP_DIFFS, None, ("app-1",)),),
    "skopeo-oci-layout": (
        Img(APP_OCI_ID, APP_DIFFS, None, ("app-1",)),
        Img(BASE_OCI_ID, BASE_DIFFS, None, ("base-1",)),
    ),
    # Docker 25+ save: OCI + manifest.json, bare-tag ref names beside the full names
    "docker26-save-multi.tar": (
        Img(BASE_ID, BASE_DIFFS, ("docker.io/fixture/base:1", "docker.io/fixture/base:latest")),
        Img(APP_ID, APP_DIFFS, ("docker.io/fixture/app:1",)),
    ),
    # one image and its provenance attestation (which is no image) in a nested index
    "docker26-buildx-provenance.tar": (Img(BUILDX_ID, BUILDX_DIFFS, ("docker.io/att/app:1",)),),
    "podman-save-multi.tar": (
        Img(APP_ID, APP_DIFFS, ("localhost/fixture/app:1",)),
        Img(BASE_ID, BASE_DIFFS, ("localhost/fixture/base:1",)),
    ),
    "podman-oci-archive.tar": (Img(APP_OCI_ID, APP_DIFFS, None, ("localhost/fixture/app:1",)),),
    # the arm64/v8 entry's config says amd64: the platform comes from the index
    "podman-multiplatform-oci-layout": (
        Img(APP_OCI_ID, APP_DIFFS, None, (), "linux/amd64"),
        Img(BASE_OCI_ID, BASE_DIFFS, None, (), "linux/arm64/v8"),
    ),
}
NAMES = sorted(FIXTURES)
COMPRESSIONS = ["gzip", "zstd", "none"]


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    for d in ("cwd", "tmp", "dst"):
        (tmp_path / d).mkdir()
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def sealift(work: Path, *args: str, stdin: bytes | Path | None = None) -> Result:
    return run_sealift(*args, cwd=work / "cwd", tmp=work / "tmp", stdin=stdin, timeout=120)


def inspect(work: Path, path: Path | str) -> dict[str, Any]:
    r = sealift(work, "inspect", "--json", str(path))
    assert_ok(r)
    report: dict[str, Any] = r.json()
    check_inspect_shape(report)
    return report


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for img in report["images"]:
        assert img["id"] not in out, f"image {img['id']} listed twice"
        out[img["id"]] = img
    return out


def diff_ids(img: dict[str, Any]) -> tuple[str, ...]:
    return tuple(layer["diff_id"] for layer in img["layers"])


def convert_from_stdin(work: Path, stdin: bytes | Path) -> Path:
    """``convert - archive:OUT`` reading ``stdin`` (piped bytes or a file); OUT, converted."""
    out = work / "dst" / "out.tar"
    assert_ok(sealift(work, "convert", "-", f"archive:{out}", stdin=stdin))
    return out


def assert_clean_workdirs(work: Path) -> None:
    assert list((work / "cwd").iterdir()) == []
    assert list((work / "tmp").iterdir()) == []


def test_every_fixture_is_listed() -> None:
    on_disk = {p.name for p in TOOL_FIXTURES.iterdir() if p.name != "SOURCES.md"}
    assert on_disk == set(FIXTURES)


@pytest.mark.parametrize("name", NAMES)
def test_verify(name: str, work: Path) -> None:
    assert_ok(sealift(work, "verify", str(TOOL_FIXTURES / name)))
    assert_clean_workdirs(work)


@pytest.mark.parametrize("name", NAMES)
def test_inspect(name: str, work: Path) -> None:
    images = by_id(inspect(work, TOOL_FIXTURES / name))
    assert set(images) == {i.id for i in FIXTURES[name]}
    for exp in FIXTURES[name]:
        got = images[exp.id]
        assert diff_ids(got) == exp.diff_ids, got
        if exp.tags is not None:
            assert sorted(got["tags"]) == sorted(exp.tags), got
        assert set(exp.ref_names) <= set(got["ref_names"]), got
        if exp.platform is not None:
            assert got["platform"] == exp.platform, got
        else:
            assert got["platform"] == "linux/amd64", got


def test_layout_descriptors_reported(work: Path) -> None:
    """skopeo-oci-layout: manifest digests and layer sizes are the descriptors' own."""
    images = by_id(inspect(work, TOOL_FIXTURES / "skopeo-oci-layout"))
    app, base = images[APP_OCI_ID], images[BASE_OCI_ID]
    assert app["manifest_digest"] == (
        "sha256:a8d5fb6047d34c28d834aa8337d0023b18af3ded5db4d4b120de46a6cd032734"
    )
    assert base["manifest_digest"] == (
        "sha256:d1594434ceac137ee807a2d81d8894eb8082409e2086d50d0ec20912dbdef48d"
    )
    assert [x["digest"] for x in app["layers"]] == [
        "sha256:0df2add21a5add7d2086408586d7819cf2e0cf3d13a727f8c943055360c249a2",
        "sha256:c2f20c805b1b8f39e6c374ee34d38bc32bb19881c28af9f0315ed1f8b62dd994",
        "sha256:5852a8cf24ced8adcaf9b93c865a1abc04e0fca405828469c266877220cf50ec",
    ]
    assert [x["size"] for x in app["layers"]] == [1083610, 133, 120]
    assert [x["shared"] for x in app["layers"]] == [True, True, False]
    assert [x["media_type"] for x in base["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ] * 2


def test_same_image_from_any_container_gives_the_same_bytes(work: Path) -> None:
    """docker20-save-app.tar.{gz,zst,xz} hold the same tar: the outputs are identical."""
    outs = []
    for name in [
        "docker20-save-app.tar.gz",
        "docker20-save-app.tar.zst",
        "docker20-save-app.tar.xz",
    ]:
        out = work / "dst" / (name + ".out.tar")
        assert_ok(sealift(work, "convert", str(TOOL_FIXTURES / name), f"archive:{out}"))
        outs.append(out.read_bytes())
    piped = work / "dst" / "stdin.out.tar"
    data = (TOOL_FIXTURES / "docker20-save-app.tar.zst").read_bytes()
    assert_ok(sealift(work, "convert", "-", f"archive:{piped}", stdin=data))
    outs.append(piped.read_bytes())
    assert all(o == outs[0] for o in outs)


def test_shared_layers_in_multi_archive(work: Path) -> None:
    """docker20-save-multi: base's two layers are also app's first two."""
    images = by_id(inspect(work, TOOL_FIXTURES / "docker20-save-multi.tar"))
    assert [x["shared"] for x in images[BASE_ID]["layers"]] == [True, True]
    assert [x["shared"] for x in images[APP_ID]["layers"]] == [True, True, False]


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("name", NAMES)
def test_convert_keeps_ids_and_tags(name: str, compression: str, work: Path) -> None:
    src = TOOL_FIXTURES / name
    out = work / "dst" / "out.tar"
    r = sealift(work, "convert", "--compression", compression, str(src), f"archive:{out}")
    assert_ok(r)
    assert_ok(sealift(work, "verify", str(out)))
    before, after = by_id(inspect(work, src)), by_id(inspect(work, out))
    assert set(after) == set(before)
    assert check_written_archive(out) == set(before), "checked without sealift"
    for image_id, img in before.items():
        assert sorted(after[image_id]["tags"]) == sorted(img["tags"]), image_id
        assert diff_ids(after[image_id]) == diff_ids(img), image_id
    assert sorted(p.name for p in (work / "dst").iterdir()) == ["out.tar"]
    assert_clean_workdirs(work)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_convert_layer_media_types(compression: str, work: Path) -> None:
    """--compression sets the layer compression inside the output."""
    out = work / "dst" / "out.tar"
    src = TOOL_FIXTURES / "docker20-save-multi.tar"
    assert_ok(sealift(work, "convert", "--compression", compression, str(src), str(out)))
    for img in inspect(work, out)["images"]:
        for layer in img["layers"]:
            mt = layer["media_type"]
            if compression == "none":
                assert "gzip" not in mt and "zstd" not in mt, mt
            else:
                assert mt.endswith(compression), mt


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("name", NAMES)
def test_convert_is_reproducible(name: str, compression: str, work: Path) -> None:
    src = TOOL_FIXTURES / name
    outs = [work / "dst" / "one.tar", work / "dst" / "two.tar"]
    for out in outs:
        r = sealift(work, "convert", "--compression", compression, str(src), f"archive:{out}")
        assert_ok(r)
    assert outs[0].read_bytes() == outs[1].read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_convert_to_layout_and_back(name: str, work: Path) -> None:
    src = TOOL_FIXTURES / name
    layout = work / "dst" / "layout"
    assert_ok(sealift(work, "convert", str(src), f"oci:{layout}"))
    assert_ok(sealift(work, "verify", str(layout)))
    ids = set(by_id(inspect(work, src)))
    assert set(by_id(inspect(work, layout))) == ids
    assert check_written_archive(layout) == ids, "checked without sealift"
    back = work / "dst" / "back.tar"
    assert_ok(sealift(work, "convert", f"oci:{layout}", f"archive:{back}"))
    assert check_written_archive(back) == ids


@pytest.mark.parametrize(
    "name", ["docker20-save-app.tar.gz", "docker20-save-app.tar.zst", "docker20-save-app.tar.xz"]
)
def test_convert_compressed_input_from_stdin(name: str, work: Path) -> None:
    out = convert_from_stdin(work, (TOOL_FIXTURES / name).read_bytes())
    assert_ok(sealift(work, "verify", str(out)))
    images = by_id(inspect(work, out))
    assert set(images) == {APP_ID}
    assert images[APP_ID]["tags"] == ["docker.io/fixture/app:1"]
    assert diff_ids(images[APP_ID]) == APP_DIFFS


def test_convert_to_stdout(work: Path) -> None:
    r = sealift(work, "convert", str(TOOL_FIXTURES / "docker20-save-multi.tar"), "-")
    assert_ok(r)
    out = work / "dst" / "from-stdout.tar"
    out.write_bytes(r.stdout)
    assert_ok(sealift(work, "verify", str(out)))
    assert set(by_id(inspect(work, out))) == {BASE_ID, APP_ID}


@pytest.mark.parametrize("new_name", ["mislabeled.tar.gz", "no-extension", "image.tar"])
def test_format_detected_by_content(new_name: str, work: Path) -> None:
    """A zstd-compressed docker archive is read whatever its name says."""
    src = work / "dst" / new_name
    shutil.copyfile(TOOL_FIXTURES / "docker20-save-app.tar.zst", src)
    assert_ok(sealift(work, "verify", str(src)))
    assert set(by_id(inspect(work, src))) == {APP_ID}


# --------------------------------------------------------------------------------------
# platform selection in the multi-platform layout

MULTI = TOOL_FIXTURES / "podman-multiplatform-oci-layout"


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        # linux/arm64 matches the index entry linux/arm64/v8 (v8 is arm64's default variant);
        # that entry is fixture/base:1 even though its config says amd64
        ("linux/arm64", {BASE_OCI_ID: BASE_DIFFS}),
        ("linux/arm64/v8", {BASE_OCI_ID: BASE_DIFFS}),
        ("linux/amd64", {APP_OCI_ID: APP_DIFFS}),
        ("all", {APP_OCI_ID: APP_DIFFS, BASE_OCI_ID: BASE_DIFFS}),
    ],
)
def test_platform_selection(
    platform: str, expected: dict[str, tuple[str, ...]], work: Path
) -> None:
    out = work / "dst" / "out.tar"
    assert_ok(sealift(work, "convert", "--platform", platform, str(MULTI), f"archive:{out}"))
    assert_ok(sealift(work, "verify", str(out)))
    images = by_id(inspect(work, out))
    assert {k: diff_ids(v) for k, v in images.items()} == expected


def test_platform_not_present(work: Path) -> None:
    out = work / "dst" / "out.tar"
    r = sealift(work, "convert", "--platform", "linux/s390x", str(MULTI), f"archive:{out}")
    assert_clean_error(r)
    assert list((work / "dst").iterdir()) == []


@pytest.mark.parametrize(
    "name",
    [
        "docker20-save-multi.tar",
        "skopeo-oci-archive-zstd.tar",
        "podman-save-multi.tar",
        "docker26-save-multi.tar",
        "docker26-buildx-provenance.tar",
    ],
)
def test_convert_uncompressed_archive_from_stdin(name: str, work: Path) -> None:
    """Piped archives whose metadata comes after the blobs still convert."""
    out = convert_from_stdin(work, (TOOL_FIXTURES / name).read_bytes())
    assert check_written_archive(out) == {i.id for i in FIXTURES[name]}, "checked without sealift"
    assert_ok(sealift(work, "verify", str(out)))
    assert set(by_id(inspect(work, out))) == {i.id for i in FIXTURES[name]}
    assert_clean_workdirs(work)


@pytest.mark.parametrize(
    ("tag", "image_id"),
    [
        ("fixture/app:1", APP_ID),
        ("docker.io/fixture/base:latest", BASE_ID),
        ("fixture/base:1", BASE_ID),
    ],
)
def test_convert_one_tag(tag: str, image_id: str, work: Path) -> None:
    out = work / "dst" / "out.tar"
    src = TOOL_FIXTURES / "docker20-save-multi.tar"
    assert_ok(sealift(work, "convert", str(src), f"archive:{out}", "--tag", tag))
    images = by_id(inspect(work, out))
    assert set(images) == {image_id}
    assert f"docker.io/{tag.removeprefix('docker.io/')}" in images[image_id]["tags"]


@pytest.mark.parametrize("name", ["docker20-save-app.tar.zst", "skopeo-oci-archive-gzip.tar"])
def test_convert_stdin_redirected_from_a_file(name: str, work: Path) -> None:
    """``sealift convert - OUT < file``: '-' is stdin whether it is a pipe or a file."""
    out = convert_from_stdin(work, TOOL_FIXTURES / name)
    assert_ok(sealift(work, "verify", str(out)))
    assert set(by_id(inspect(work, out))) == {i.id for i in FIXTURES[name]}
