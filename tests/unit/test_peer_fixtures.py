"""sealift as a strict reader of the peer fixtures in ``shared/fixtures/peer`` (SOURCES.md there).

Every file or layout listed in SOURCES.md has one row in :data:`ROWS` with what sealift must do:

* ``verify``: True = exit 0; False = clean rejection (exit 1, one ``sealift: error:`` line);
  None = either, as long as it is clean.
* ``inspect``: the same, for ``inspect --json``; when it succeeds the listed image ids must be
  exactly ``images`` (plus any of ``optional_ids``) with the tags, ref names, diff_ids and
  platforms given there.
* ``convert``: the same, for ``convert SRC archive:OUT``; a success must re-verify and keep the
  image ids and tags of the source.

The comment on each row gives the reasoning. "Accept" rows in SOURCES.md are accepted unless a
**quirk** (a flaw the peer's own test never reaches) makes a strict verifier reject them.

Then: selection by tag / ref name in the multi-image fixtures, the standalone manifest JSON
files (rejected as archives), image-spec schema cases that can be tested through the CLI
(config and oci-layout cases, wrapped in a layout built in code), and, clearly separated,
library-level tests that wait for an API (skipped until it exists).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.unit import hostile
from tests.unit.hostile import (
    PEER_FIXTURES,
    Result,
    assert_clean_error,
    assert_ok,
    check_inspect_shape,
    check_written_archive,
    run_sealift,
)

pytestmark = pytest.mark.timeout(120)

GGCR = "go-containerregistry/pkg/v1"
CI = "containers-image"

# image ids and diff_ids (read from the fixtures; see SOURCES.md)
ID_IMAGE_1 = "sha256:6e0b05049ed9c17d02e1a55e80d6599dbfcce7f4f4b022e3c673e685789c470e"
ID_IMAGE_2 = "sha256:930705ce23e3b6ed4c08746b6fe880089c864fbaf62482702ae3fdd66b8c7fe9"
ID_IMAGE_3 = "sha256:d4c9adacde69c3d92446e0484cea29493e9fd573cf0c8febfc700d80c46697a4"
DIFF_1 = "sha256:8897395fd26dc44ad0e2a834335b33198cb41ac4d98dfddf58eced3853fa7b17"
DIFF_2 = "sha256:3610aa5267a210147ba6ca02cdd87610dfc08522de9c5f5015edd8ee14853fd8"
DIFF_3B = "sha256:6b617a2706576ed038acdc3aa668cac62010386a5a3d227d83aada32085c9f29"
ID_HELLO = "sha256:ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44"
DIFF_HELLO = "sha256:12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43"
ID_EMPTY_HISTORY = "sha256:05b5ec1290589606ce19fabb1fb331f004acd9f618b9b4e813721be1a03a0712"
ID_OVERWRITTEN = "sha256:68f6eb746cdb287658796ba120849bb77be87040a155fbefb89c96f109c0703a"
DIFFS_OVERWRITTEN = (
    "sha256:48ebc8f0e90eb81bd1819e8128dbaeddca99afe50f5bd07e0d582b8f683cb0b9",
    "sha256:6f23bf1fbcc92daa1e5c92aa1125ce8d6fcabbbe29a903f0a56317035fc46b19",
    "sha256:84ff92691f909a05b224e1c56abb4864f01b4f8e3c854e4bb4c7baf1d3f6d652",
)
ID_WHITEOUT_IMAGE = "sha256:decb630649c3e1256345d416b228d6c3ceb387a55120ad44dc3ec992976d28b9"
DIFFS_WHITEOUT_IMAGE = (
    "sha256:891f36a008624b6450292efb6ff06b633a179c7cc08456fefcc08c2b34f3b31c",
    "sha256:88d2a7b2ae6dddeb3490c9370cfc070aaa1aab9c22a6fb03523787d8b21c17db",
    "sha256:84ff92691f909a05b224e1c56abb4864f01b4f8e3c854e4bb4c7baf1d3f6d652",
)
ID_WHITEOUT_DIR = "sha256:92f1e3d53acdc7e137e73869abc4e87aba6614440a31723423790ca0d5db9111"
DIFFS_WHITEOUT_DIR = (
    "sha256:7e9fc0fd7367e0b3c3417cd2f96905d16b7314fcc5b38cab4c3e01d7ea719f48",
    "sha256:671e19d084a03c0ef04379902fd228c0f8221778a4011f031528f7e484d1ba45",
    "sha256:a941a11c30af7442c9d9d635ee7c13beb54a9b9272577a0e1e78314c8843d27a",
    "sha256:7afe19580a15baede0095edc04d692cc943e28cefdbf32d5d3d47bc931c37efe",
)
ID_ALMOSTEMPTY = "sha256:9d7f147c0d0c4d4538a04c7ef385809e56eb1aac7bf800fbe976612188025b68"
DIFF_ALMOSTEMPTY = "sha256:0b916d257bd406111a3fced53f81b47de9a30f7c7d514a89769b3483aaddca7e"
ID_ONE_IMAGE = "sha256:381d958b555884ba59574ab5c066e9f6116b5aec3567675aa13bec63331f0810"
DIFF_ONE_IMAGE = "sha256:59cd31f50f7442a662d7c31b7a12079ade16892bfb465b33da49918e7d13e747"
ID_HELM_CONFIG = "sha256:ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356"
MANIFEST_INDEX_1 = "sha256:eebff607b1628d67459b0596643fc07de70d702eccf030f0bc7bb6fc2b278650"
ID_DELETE_A = "sha256:a527179158cd5cebc11c152b8637b47ce96c838ba2aa0de66d14f45cedc11423"
ID_DELETE_B = "sha256:ce229a4eb5797ecd3a3a1846613b6b49811f79e38b5b0ce666268ba4b6c68e41"
DIFF_DELETE = "sha256:03901b4a2ea88eeaad62dbe59b072b28b6efa00491962b8741081c5df50c65e0"
IDS_MULTIPLE = (
    "sha256:913cf3a39d377faf89ed388ad913a318a390488c9f34c46e43424795cdabffe8",
    "sha256:aab808b283c3f654d84358a40ce8766ecd552249305141de88f0ca61f3d1368f",
    "sha256:df11bc189adeb50dadb3291a3a7f2c34b36e0efdba0df70f2c8a2d761b215cde",
    "sha256:f732172ad8d2a666550fa3ec37a5153d59acc95744562ae64cf62ded46de101a",
    "sha256:7ffdfe7d276286b39a203dcc247949cf47c91d2d5e10a53a675c0962ed9e4402",
)


@dataclass(frozen=True)
class Img:
    id: str
    tags: tuple[str, ...] | None = None  # exact set of normalised tags (None: not checked)
    ref_names: tuple[str, ...] = ()  # must all be among the image's ref_names
    diff_ids: tuple[str, ...] | None = None  # exact, in order
    platform: str | None = None


@dataclass(frozen=True)
class Row:
    path: str  # under peer/
    verify: bool | None
    inspect: bool | None
    convert: bool | None
    images: tuple[Img, ...] = ()
    optional_ids: frozenset[str] = frozenset()


ROWS: list[Row] = [
    # ---- go-containerregistry: tarball
    # accept (TestManifestAndConfig). One image, RepoTag with a namespace: docker.io/ is added.
    Row(
        f"{GGCR}/tarball/testdata/test_image_1.tar",
        True,
        True,
        True,
        (
            Img(
                ID_IMAGE_1,
                ("docker.io/bazel/v1/tarball:test_image_1",),
                (),
                (DIFF_1,),
                "linux/amd64",
            ),
        ),
    ),
    # structurally valid, not used by a peer test: accept.
    Row(
        f"{GGCR}/tarball/testdata/test_image_2.tar",
        True,
        True,
        True,
        (Img(ID_IMAGE_2, ("docker.io/bazel/v1/tarball:test_image_2",), (), (DIFF_2,)),),
    ),
    # accept (TestLoadManifest).
    Row(
        f"{GGCR}/tarball/testdata/test_load_manifest.tar",
        True,
        True,
        True,
        (Img(ID_IMAGE_1, ("docker.io/bazel/v1/tarball:test_image_1",), (), (DIFF_1,)),),
    ),
    # accept (TestBundleMultiple): two images whose RepoTags have no tag; normalised like docker
    # (test_image_1 -> docker.io/library/test_image_1:latest). LayerSources on entry 0 names a
    # foreign gzip descriptor that is not in the archive; the layer itself is there uncompressed,
    # so the archive is whole. (TestBundleSingle's "more than one image" error is about picking
    # one image without a tag; sealift handles all images, see test_select_by_tag.)
    Row(
        f"{GGCR}/tarball/testdata/test_bundle.tar",
        True,
        True,
        True,
        (
            Img(ID_IMAGE_2, ("docker.io/library/test_image_2:latest",), (), (DIFF_2,)),
            Img(ID_IMAGE_1, ("docker.io/library/test_image_1:latest",), (), (DIFF_1,)),
        ),
    ),
    # accept (TestLayerLink): image 3's first layer.tar is a tar symlink to image 1's layer
    # inside the archive; it must be followed (not rejected as a link, not read as empty).
    Row(
        f"{GGCR}/tarball/testdata/test_link.tar",
        True,
        True,
        True,
        (
            Img(ID_IMAGE_1, ("docker.io/bazel/v1/tarball:test_image_1",), (), (DIFF_1,)),
            Img(ID_IMAGE_3, ("docker.io/bazel/v1/tarball:test_image_3",), (), (DIFF_1, DIFF_3B)),
        ),
    ),
    # reject (TestNullManifest): manifest.json is null.
    Row(f"{GGCR}/tarball/testdata/null_manifest.tar", False, False, False),
    # reject (TestNoManifest): legacy `repositories` only, no manifest.json.
    Row(f"{GGCR}/tarball/testdata/no_manifest.tar", False, False, False),
    # accept (TestDocker25): docker-save manifest.json + OCI index.json with "manifests": null.
    # The image comes from manifest.json: one untagged linux/arm64 image. Unreferenced extra
    # blobs are not an error.
    Row(
        f"{GGCR}/tarball/testdata/hello-world-v25.tar",
        True,
        True,
        True,
        (Img(ID_HELLO, (), (), (DIFF_HELLO,), "linux/arm64"),),
    ),
    # a plain layer tar (./bat, ./baz): no image metadata at all -> reject everywhere.
    Row(f"{GGCR}/tarball/testdata/content.tar", False, False, False),
    # ---- go-containerregistry: mutate
    # accept (base image of mutate_test.go).
    Row(
        f"{GGCR}/mutate/testdata/source_image.tar",
        True,
        True,
        True,
        (Img(ID_IMAGE_1, ("docker.io/bazel/pkg/v1/mutate:source_image",), (), (DIFF_1,)),),
    ),
    # QUIRK: config member is named 6e0b0504….json but its sha256 is 05b5ec12…. The peer (and
    # moby) take the id from the content and accept. A strict verifier treats <hex>.json as a
    # digest claim and rejects. inspect may list it, but then with the id of the content, never
    # the name; convert may refuse (like verify) or write it under its true digest.
    Row(
        f"{GGCR}/mutate/testdata/source_image_with_empty_layer_history.tar",
        False,
        None,
        None,
        (Img(ID_EMPTY_HISTORY, ("docker.io/bazel/pkg/v1/mutate:source_image",), (), (DIFF_1,)),),
    ),
    # accept (TestExtractOverwrittenFile): the 3rd layer is an empty tar (only zero blocks).
    Row(
        f"{GGCR}/mutate/testdata/overwritten_file.tar",
        True,
        True,
        True,
        (
            Img(
                ID_OVERWRITTEN,
                ("docker.io/bazel/pkg/v1/mutate:overwritten_file",),
                (),
                DIFFS_OVERWRITTEN,
            ),
        ),
    ),
    # accept (TestExtractWhiteout).
    Row(
        f"{GGCR}/mutate/testdata/whiteout_image.tar",
        True,
        True,
        True,
        (
            Img(
                ID_WHITEOUT_IMAGE,
                ("docker.io/bazel/pkg/v1/mutate:whiteout_image",),
                (),
                DIFFS_WHITEOUT_IMAGE,
            ),
        ),
    ),
    # accept (TestExtractWhiteoutDir): config member named "sha256:<hex>" (colon), gzip layers
    # inside a docker-save archive; a registry host with a port stays as it is.
    Row(
        f"{GGCR}/mutate/testdata/whiteout_dir.tar",
        True,
        True,
        True,
        (Img(ID_WHITEOUT_DIR, ("localhost:5000/whiteout:latest",), (), DIFFS_WHITEOUT_DIR),),
    ),
    # ---- go-containerregistry: layout
    # accept (TestImage/TestIndex). Ref 1: OCI descriptor over a Docker v2s2 blob (both image
    # manifests, fine). Ref 3: nested OCI index; ref 4: nested Docker manifest list, both -> the
    # same manifest (nested reading is checked in test_select_by_tag). Ref 2 has an unknown
    # descriptor media type over a Docker manifest: it may be read (id 930705…) or skipped.
    Row(
        f"{GGCR}/layout/testdata/test_index",
        True,
        True,
        True,
        (Img(ID_IMAGE_1, None, ("1",), (DIFF_1,), "linux/amd64"),),
        frozenset({ID_IMAGE_2}),
    ),
    # accept (TestGcIndex): as test_index without ref 2, plus one unreferenced blob (harmless).
    Row(
        f"{GGCR}/layout/testdata/test_gc_index",
        True,
        True,
        True,
        (Img(ID_IMAGE_1, None, ("1",), (DIFF_1,)),),
    ),
    # the only descriptor has an unknown media type and its blob is missing: verify and convert
    # reject (a referenced blob is absent); inspect may reject or list nothing.
    Row(f"{GGCR}/layout/testdata/test_gc_image_unknown_mediatype", False, None, False),
    # accept (TestImageCustomMediaType): a helm-like artifact: config {} of a custom media type,
    # one layer "application/tar+gzip". inspect lists it (layer media type kept, checked in
    # test_custom_media_type_kept); whether verify/convert treat a config without rootfs as an
    # image is sealift's call, but it must be clean.
    Row(f"{GGCR}/layout/testdata/test_index_media_type", None, True, None, (Img(ID_HELM_CONFIG),)),
    # accept (TestImageWithEmptyHash): one image, no ref name.
    Row(
        f"{GGCR}/layout/testdata/test_index_one_image",
        True,
        True,
        True,
        (Img(ID_ONE_IMAGE, None, (), (DIFF_ONE_IMAGE,), "linux/amd64"),),
    ),
    # ---- containers/image
    # accept (docker/archive transport tests).
    Row(
        f"{CI}/docker/archive/fixtures/almostempty.tar",
        True,
        True,
        True,
        (Img(ID_ALMOSTEMPTY, ("docker.io/library/emptyimage:latest",), (), (DIFF_ALMOSTEMPTY,)),),
    ),
    # the peer accepts for lookup/delete only. Its "layers" are the text "insert binary content
    # here #N" under tar+gzip: not gzip, so no diff_id can be checked -> verify and convert
    # reject. QUIRK: config 913cf3… is referenced with size 585 but is 584 bytes (ref 1.0.0), so
    # inspect may refuse that descriptor; if it lists, it lists the 5 configs.
    Row(
        f"{CI}/oci/layout/fixtures/delete_image_multiple_images",
        False,
        None,
        False,
        tuple(Img(i) for i in IDS_MULTIPLE),
    ),
    # placeholder layer (verify/convert reject) and QUIRK config size 585 != 740: inspect may
    # refuse; if it lists, it lists the one image.
    Row(
        f"{CI}/oci/layout/fixtures/delete_image_only_one_image",
        False,
        None,
        False,
        (Img(ID_DELETE_A, None, ("latest",), (DIFF_DELETE,)),),
    ),
    # a plain layout reader finds no manifest blob (it lives in shared_blobs/, only reachable
    # with a peer-specific option), and the index size lies (405 != 476): reject everywhere.
    Row(f"{CI}/oci/layout/fixtures/delete_image_shared_blobs_dir", False, False, False),
    # two different manifests share the ref name 1.0.0 (not an error for the peer). No size
    # quirks, so inspect lists both; the placeholder layers make verify and convert reject.
    Row(
        f"{CI}/oci/layout/fixtures/delete_image_two_identical_references",
        False,
        True,
        False,
        (
            Img(ID_DELETE_A, None, ("1.0.0",), (DIFF_DELETE,)),
            Img(ID_DELETE_B, None, ("1.0.0",), (DIFF_DELETE,)),
        ),
    ),
    # index.json only: no oci-layout, no blobs. The peer only looks descriptors up; reading the
    # image fails there too. For sealift: nothing to read -> reject everywhere.
    Row(f"{CI}/oci/layout/fixtures/manifest", False, False, False),
    Row(f"{CI}/oci/layout/fixtures/two_images_manifest", False, False, False),
    # fake digests aaaa…eeee… and an unknown mediaType; no blobs: reject everywhere.
    Row(f"{CI}/oci/layout/fixtures/name_lookups", False, False, False),
    # ---- moby
    # legacy-only archive (no manifest.json); moby: "does not contain a manifest.json". Reject.
    Row("moby/integration-cli/testdata/emptyLayer.tar", False, False, False),
]

# standalone manifests (containers/image internal/manifest/testdata): not archives.
MANIFEST_JSON = sorted(
    p.name for p in (PEER_FIXTURES / CI / "internal/manifest/testdata").glob("*.json")
)


def _row_id(row: Row) -> str:
    return row.path.rsplit("/", 1)[-1]


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "cwd").mkdir()
    (tmp_path / "tmp").mkdir()
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def sealift(work: Path, *args: str, stdin: bytes | None = None) -> Result:
    return run_sealift(*args, cwd=work / "cwd", tmp=work / "tmp", stdin=stdin, timeout=60)


def check_outcome(r: Result, expected: bool | None) -> bool:
    """Assert ``r`` matches ``expected``; return whether it succeeded."""
    if expected is True:
        assert_ok(r)
        return True
    if expected is False:
        assert_clean_error(r)
        return False
    if r.returncode == 0:
        assert_ok(r)
        return True
    assert_clean_error(r)
    return False


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Images by id; an image listed more than once is merged (tags and ref names united)."""
    out: dict[str, dict[str, Any]] = {}
    for img in report["images"]:
        if img["id"] in out:
            seen = out[img["id"]]
            seen["tags"] = sorted({*seen["tags"], *img["tags"]})
            seen["ref_names"] = sorted({*seen["ref_names"], *img["ref_names"]})
        else:
            out[img["id"]] = dict(img)
    return out


def check_images(report: dict[str, Any], row: Row) -> None:
    images = by_id(report)
    want = {img.id for img in row.images}
    assert want <= set(images), f"missing {want - set(images)}; got {sorted(images)}"
    extra = set(images) - want - row.optional_ids
    assert not extra, f"unexpected images {extra}"
    for exp in row.images:
        got = images[exp.id]
        if exp.tags is not None:
            assert sorted(got["tags"]) == sorted(exp.tags), got
        assert set(exp.ref_names) <= set(got["ref_names"]), got
        if exp.diff_ids is not None:
            assert tuple(layer["diff_id"] for layer in got["layers"]) == exp.diff_ids, got
        if exp.platform is not None:
            assert got["platform"] == exp.platform, got
    # one entry per image, its tags and ref names together (checked last so the content
    # checks above report first)
    ids = [img["id"] for img in report["images"]]
    assert len(ids) == len(set(ids)), f"images listed more than once: {ids}"


# --------------------------------------------------------------------------------------
# every listed fixture


@pytest.mark.parametrize("row", ROWS, ids=_row_id)
def test_verify(row: Row, work: Path) -> None:
    r = sealift(work, "verify", str(PEER_FIXTURES / row.path))
    check_outcome(r, row.verify)


@pytest.mark.parametrize("row", ROWS, ids=_row_id)
def test_inspect(row: Row, work: Path) -> None:
    r = sealift(work, "inspect", "--json", str(PEER_FIXTURES / row.path))
    if check_outcome(r, row.inspect):
        check_inspect_shape(r.json())
        check_images(r.json(), row)
    else:
        assert r.stdout == b""


@pytest.mark.parametrize("row", ROWS, ids=_row_id)
def test_convert(row: Row, work: Path) -> None:
    src = PEER_FIXTURES / row.path
    out = work / "dst" / "out.tar"
    out.parent.mkdir()
    r = sealift(work, "convert", str(src), f"archive:{out}")
    if not check_outcome(r, row.convert):
        assert list(out.parent.iterdir()) == [], "a failed convert leaves nothing"
        return
    assert_ok(sealift(work, "verify", str(out)))
    converted = sealift(work, "inspect", "--json", str(out))
    assert_ok(converted)
    original = sealift(work, "inspect", "--json", str(src))
    assert_ok(original)
    got, want = by_id(converted.json()), by_id(original.json())
    assert set(got) == set(want)
    assert check_written_archive(out) == set(want), "checked without sealift"
    for image_id, img in want.items():
        assert sorted(got[image_id]["tags"]) == sorted(img["tags"]), image_id
        assert [x["diff_id"] for x in got[image_id]["layers"]] == [
            x["diff_id"] for x in img["layers"]
        ]
    assert list((work / "cwd").iterdir()) == [] and list((work / "tmp").iterdir()) == []


def test_every_fixture_has_a_row() -> None:
    """A new file under peer/ must get a row (or be an image-spec schema case)."""
    rows = [PEER_FIXTURES / r.path for r in ROWS]
    for row in rows:
        assert row.exists(), row
    covered_dirs = [r for r in rows if r.is_dir()]
    manifests_dir = PEER_FIXTURES / CI / "internal/manifest/testdata"
    for f in PEER_FIXTURES.rglob("*"):
        if f.is_dir() or f.name == "SOURCES.md":
            continue
        if f in rows or any(d in f.parents for d in covered_dirs):
            continue
        if manifests_dir in f.parents or (PEER_FIXTURES / "image-spec") in f.parents:
            continue
        pytest.fail(f"no expectation for {f.relative_to(PEER_FIXTURES)}")


# --------------------------------------------------------------------------------------
# selection, links and media types in particular fixtures


@pytest.mark.parametrize(
    ("fixture", "tag", "image_id", "diff_ids"),
    [
        # TestBundleMultiple: short names, with or without :latest or the full domain
        (f"{GGCR}/tarball/testdata/test_bundle.tar", "test_image_1", ID_IMAGE_1, (DIFF_1,)),
        (f"{GGCR}/tarball/testdata/test_bundle.tar", "test_image_2:latest", ID_IMAGE_2, (DIFF_2,)),
        (
            f"{GGCR}/tarball/testdata/test_bundle.tar",
            "index.docker.io/library/test_image_1:latest",
            ID_IMAGE_1,
            (DIFF_1,),
        ),
        # TestLayerLink: the symlinked layer comes out as real bytes with the right diff_id
        (
            f"{GGCR}/tarball/testdata/test_link.tar",
            "bazel/v1/tarball:test_image_3",
            ID_IMAGE_3,
            (DIFF_1, DIFF_3B),
        ),
        # test_index: ref names 3 (nested OCI index) and 4 (nested Docker manifest list)
        (f"{GGCR}/layout/testdata/test_index", "1", ID_IMAGE_1, (DIFF_1,)),
        (f"{GGCR}/layout/testdata/test_index", "3", ID_IMAGE_1, (DIFF_1,)),
        (f"{GGCR}/layout/testdata/test_index", "4", ID_IMAGE_1, (DIFF_1,)),
    ],
)
def test_select_by_tag(
    fixture: str, tag: str, image_id: str, diff_ids: tuple[str, ...], work: Path
) -> None:
    out = work / "out.tar"
    r = sealift(work, "convert", str(PEER_FIXTURES / fixture), f"archive:{out}", "--tag", tag)
    assert_ok(r)
    assert_ok(sealift(work, "verify", str(out)))
    inspected = sealift(work, "inspect", "--json", str(out))
    assert_ok(inspected)
    images = inspected.json()["images"]
    assert [i["id"] for i in images] == [image_id]
    assert tuple(x["diff_id"] for x in images[0]["layers"]) == diff_ids


def test_unknown_tag_is_rejected(work: Path) -> None:
    out = work / "out.tar"
    src = PEER_FIXTURES / GGCR / "tarball/testdata/test_bundle.tar"
    r = sealift(work, "convert", str(src), f"archive:{out}", "--tag", "test_image_9")
    assert_clean_error(r)
    assert not out.exists()


def test_link_layer_is_shared(work: Path) -> None:
    """test_link.tar: both images use layer 8897…, one through a symlink: it is shared."""
    r = sealift(
        work, "inspect", "--json", str(PEER_FIXTURES / GGCR / "tarball/testdata/test_link.tar")
    )
    assert_ok(r)
    images = by_id(r.json())
    assert images[ID_IMAGE_1]["layers"][0]["shared"] is True
    assert images[ID_IMAGE_3]["layers"][0]["shared"] is True
    assert images[ID_IMAGE_3]["layers"][1]["shared"] is False


def test_custom_media_type_kept(work: Path) -> None:
    """TestImageCustomMediaType: the layer media type stays application/tar+gzip."""
    r = sealift(
        work,
        "inspect",
        "--json",
        str(PEER_FIXTURES / GGCR / "layout/testdata/test_index_media_type"),
    )
    assert_ok(r)
    (img,) = r.json()["images"]
    assert [x["media_type"] for x in img["layers"]] == ["application/tar+gzip"]


def test_docker_descriptor_over_oci_media_type(work: Path) -> None:
    """test_index ref 1: descriptor says OCI manifest, blob is Docker v2s2; Docker layers."""
    r = sealift(work, "inspect", "--json", str(PEER_FIXTURES / GGCR / "layout/testdata/test_index"))
    assert_ok(r)
    img = by_id(r.json())[ID_IMAGE_1]
    assert img["manifest_digest"] == MANIFEST_INDEX_1
    assert [x["media_type"] for x in img["layers"]] == [
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    ]


# --------------------------------------------------------------------------------------
# standalone manifest JSON files: not image archives


@pytest.mark.parametrize("command", ["verify", "inspect", "convert"])
@pytest.mark.parametrize("name", MANIFEST_JSON)
def test_standalone_manifest_is_not_an_archive(name: str, command: str, work: Path) -> None:
    src = PEER_FIXTURES / CI / "internal/manifest/testdata" / name
    out = work / "out.tar"
    args = {"verify": ["verify", str(src)], "inspect": ["inspect", "--json", str(src)],
            "convert": ["convert", str(src), f"archive:{out}"]}[command]  # fmt: skip
    assert_clean_error(sealift(work, *args))
    assert not out.exists()


# --------------------------------------------------------------------------------------
# image-spec schema cases that reach sealift's behaviour through the CLI
#
# config/*: the case's bytes become the config blob of an OCI archive built in code (the
# manifest descriptor is correct and there is one layer per diff_id). ``inspect`` reads the
# config: it must accept the accept-cases (and report platform and diff_ids), and must reject
# the reject-cases whose damage is in fields sealift itself reads (os, architecture, variant,
# rootfs, or the JSON itself). config/02 (User is a number) and config/09 (Env entry without
# '=') only break fields sealift passes through unread; they are in the library section.
#
# imagelayout/*: the case's bytes become the oci-layout file of a valid layout directory.

SCHEMA = PEER_FIXTURES / "image-spec" / "schema"
CONFIG_CASES_CLI = {
    "00-reject.json": False,  # os is a number
    "01-reject.json": False,  # variant is a number
    "03-reject.json": False,  # history is a string (and os is a number)
    "04-reject.json": False,  # Env has a number (and os is a number)
    "05-reject.json": False,  # Volumes is a list (and os is a number)
    "06-reject.json": False,  # not JSON
    "07-accept.json": True,  # full config, arm64/v8, two diff_ids
    "08-accept.json": True,  # required fields only
}


def _archive_around_config(config_raw: bytes, dest: Path) -> hostile.Built:
    try:
        n = len(json.loads(config_raw)["rootfs"]["diff_ids"])
    except (ValueError, KeyError, TypeError):
        n = 1
    tars = [hostile.layer_tar({f"f{i}.txt": f"{i}\n".encode()}) for i in range(n)]
    b = hostile.build_oci(layer_tars=tars, config_bytes=config_raw)
    dest.write_bytes(b.tar())
    return b


@pytest.mark.parametrize("name", sorted(CONFIG_CASES_CLI))
def test_schema_config_case_through_inspect(name: str, work: Path) -> None:
    raw = (SCHEMA / "config" / name).read_bytes()
    src = work / "in.tar"
    b = _archive_around_config(raw, src)
    r = sealift(work, "inspect", "--json", str(src))
    if not CONFIG_CASES_CLI[name]:
        assert_clean_error(r)
        return
    assert_ok(r)
    (img,) = r.json()["images"]
    cfg = json.loads(raw)
    assert img["id"] == b.config_digest
    assert [x["diff_id"] for x in img["layers"]] == cfg["rootfs"]["diff_ids"]
    assert img["platform"].startswith(f"{cfg['os']}/{cfg['architecture']}")


def test_schema_config_cases_cover_the_directory() -> None:
    on_disk = {p.name for p in (SCHEMA / "config").glob("*.json")}
    assert on_disk == set(CONFIG_CASES_CLI) | set(LIBRARY_ONLY_CONFIG)


LIBRARY_ONLY_CONFIG = {"02-reject.json", "09-reject.json"}


@pytest.mark.parametrize("name", ["00-reject.json", "01-accept.json"])
def test_schema_image_layout_file(name: str, work: Path) -> None:
    """00: imageLayoutVersion is not valid JSON (1.0.0 unquoted) -> reject; 01 -> accept."""
    b = hostile.build_oci()
    root = hostile.write_layout(b, work / "layout")
    (root / "oci-layout").write_bytes((SCHEMA / "imagelayout" / name).read_bytes())
    r = sealift(work, "verify", str(root))
    if name.endswith("accept.json"):
        assert_ok(r)
    else:
        assert_clean_error(r)


# --------------------------------------------------------------------------------------
# LIBRARY-LEVEL: schema and media-type cases that only a parser can test.
#
# Written against the parsers in sealift.model (Manifest.parse, Index.parse,
# Descriptor.from_json, ImageConfig.parse), which raise SealiftError subclasses.
# Still needed from the lead (skipped until it exists):
#   sealift.media.guess_manifest_type(raw: bytes) -> str | None   (containers/image GuessMIMEType)
# sealift may be stricter than the schema about digests (only sha256:<64 hex>): for the
# accept-cases in STRICTER_THAN_SCHEMA it may accept or refuse, but only with its own error.

CASES_JSON = SCHEMA / "cases.json"
STRICTER_THAN_SCHEMA = {
    # alternate algorithms / encodings the schema allows; a sha256-only reader rejects them
    "descriptor/21-accept.json",
    "descriptor/22-accept.json",
    "descriptor/23-accept.json",
    "descriptor/24-accept.json",
    "descriptor/25-accept.json",
    "descriptor/27-accept.json",
    "descriptor/28-accept.json",
    "manifest/06-accept.json",
}


def _schema_cases() -> list[Any]:
    data = json.loads(CASES_JSON.read_text())
    out = []
    for group in data.values():
        for c in group["cases"]:
            if not c["file"].startswith("imagelayout/"):  # see test_schema_image_layout_file
                out.append(pytest.param(c["file"], c["expect"], id=c["file"]))
    return out


def _parse(kind: str, raw: bytes) -> Any:
    from sealift import model

    if kind == "manifest":
        return model.Manifest.parse(raw)
    if kind == "imageindex":
        return model.Index.parse(raw)
    if kind == "config":
        return model.ImageConfig.parse(raw)
    assert kind == "descriptor", kind
    return model.Descriptor.from_json(model.load_json(raw, "descriptor"), "descriptor")


@pytest.mark.parametrize(("file", "expect"), _schema_cases())
def test_schema_case_library(file: str, expect: str) -> None:
    from sealift.errors import SealiftError

    kind = file.split("/")[0]
    raw = (SCHEMA / file).read_bytes()
    if file in STRICTER_THAN_SCHEMA:
        with contextlib.suppress(SealiftError):
            _parse(kind, raw)
    elif expect == "accept":
        _parse(kind, raw)
    else:
        with pytest.raises(SealiftError):
            _parse(kind, raw)


def test_schema_cases_listed() -> None:
    """cases.json lists every schema file (so none is silently untested)."""
    listed = {c["file"] for g in json.loads(CASES_JSON.read_text()).values() for c in g["cases"]}
    on_disk = {str(p.relative_to(SCHEMA)) for p in SCHEMA.rglob("*.json") if p != CASES_JSON}
    assert listed == on_disk


# containers/image standalone manifests through sealift's parsers
MANIFEST_PARSE: dict[str, str] = {
    "v2s2.manifest.json": "manifest",
    "ociv1.manifest.json": "manifest",
    "ociv1nomime.manifest.json": "manifest",  # no mediaType: an OCI manifest by shape
    "v2list.manifest.json": "index",
    "ociv1.image.index.json": "index",
    "ociv1nomime.image.index.json": "index",
    # schema 1 (signed or not) is not supported; schemaVersion 99999; not JSON
    "v2s1.manifest.json": "reject",
    "v2s1-invalid-signatures.manifest.json": "reject",
    "v2s1-unsigned.manifest.json": "reject",
    "unknown-version.manifest.json": "reject",
    "non-json.manifest.json": "reject",
    # artifact manifests whose config digest is "" and layers null: not valid descriptors
    "ociv1.artifact.json": "reject",
    "ociv1nomime.artifact.json": "reject",
    # not asserted: v2s2nomime.manifest.json has "layers": [] (the OCI schema rejects an
    # empty list, Docker accepts zero-layer images); sealift's choice either way
}


@pytest.mark.parametrize("name", sorted(MANIFEST_PARSE))
def test_standalone_manifest_parses_as(name: str) -> None:
    from sealift import model
    from sealift.errors import SealiftError

    raw = (PEER_FIXTURES / CI / "internal/manifest/testdata" / name).read_bytes()
    kind = MANIFEST_PARSE[name]
    if kind == "manifest":
        assert model.Manifest.parse(raw).layers
        with pytest.raises(SealiftError):
            model.Index.parse(raw)
    elif kind == "index":
        assert model.Index.parse(raw).manifests
        with pytest.raises(SealiftError):
            model.Manifest.parse(raw)
    else:
        with pytest.raises(SealiftError):
            model.Manifest.parse(raw)
        with pytest.raises(SealiftError):
            model.Index.parse(raw)


V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
GUESS = {
    "v2s2.manifest.json": "application/vnd.docker.distribution.manifest.v2+json",
    "v2s2nomime.manifest.json": "application/vnd.docker.distribution.manifest.v2+json",
    "v2list.manifest.json": "application/vnd.docker.distribution.manifest.list.v2+json",
    "v2s1.manifest.json": V1_SIGNED,
    "v2s1-invalid-signatures.manifest.json": V1_SIGNED,
    "v2s1-unsigned.manifest.json": "application/vnd.docker.distribution.manifest.v1+json",
    "ociv1.manifest.json": "application/vnd.oci.image.manifest.v1+json",
    "ociv1.artifact.json": "application/vnd.oci.image.manifest.v1+json",
    "ociv1nomime.manifest.json": "application/vnd.oci.image.manifest.v1+json",
    "ociv1nomime.artifact.json": "application/vnd.oci.image.manifest.v1+json",
    "ociv1.image.index.json": "application/vnd.oci.image.index.v1+json",
    "ociv1nomime.image.index.json": "application/vnd.oci.image.index.v1+json",
    "unknown-version.manifest.json": None,
    "non-json.manifest.json": None,
}


def test_guess_table_covers_the_directory() -> None:
    assert set(GUESS) == set(MANIFEST_JSON)


@pytest.mark.parametrize("name", sorted(GUESS))
def test_guess_manifest_type_library(name: str) -> None:
    media = pytest.importorskip("sealift.media")
    guess = getattr(media, "guess_manifest_type", None)
    if guess is None:
        pytest.skip("sealift.media.guess_manifest_type not available yet (library API needed)")
    raw = (PEER_FIXTURES / CI / "internal/manifest/testdata" / name).read_bytes()
    assert guess(raw) == GUESS[name]


def test_tar_fixtures_open() -> None:
    """SOURCES.md: every tar opens with Python tarfile (guards against a damaged copy)."""
    for row in ROWS:
        p = PEER_FIXTURES / row.path
        if p.is_file():
            with tarfile.open(p) as tar:
                assert tar.getmembers()
