"""sealift against broken and hostile inputs built in code (see ``hostile.py``).

For every case in ``hostile.CASES``:

* ``verify`` rejects it;
* ``inspect --json`` rejects it when the damage is in metadata (``case.metadata``);
* ``convert`` to an archive and to an OCI layout rejects it (and ``convert -`` from stdin
  for the cases marked ``stdin``);

and every rejection is clean: exit 1, exactly one stderr line starting ``sealift: error: ``,
no traceback, no output under the target name, nothing left in the destination directory,
the working directory or ``TMPDIR``, nothing written next to the workspace, in ``/tmp`` or
into ``outside/`` (where hostile links point).  Bombs must be stopped by the tool's own cap
within ``BOMB_SECONDS``; the test runs them under rlimits (1 GiB per file, 4 GiB of address
space) only to protect the machine, and a rejection caused by those limits does not count.

Positive controls at the end show the same builders produce inputs sealift accepts, so the
rejections above are about the damage and not about the builders.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.unit import hostile
from tests.unit.hostile import (
    CASES,
    TAG_NORMALISED,
    Built,
    Case,
    Input,
    Member,
    Result,
    Workspace,
    assert_clean_error,
    assert_ok,
    run_sealift,
)

pytestmark = pytest.mark.timeout(120)

RUN_TIMEOUT = 20.0  # a hostile input must be refused quickly; a hang is a failure
BOMB_SECONDS = 20.0  # the cap has to trigger early: 16-64 GiB bombs take minutes uncapped
BOMB_RUN_TIMEOUT = 30.0
# messages that mean our safety rlimits stopped the tool, not the tool's own cap
LIMIT_HITS = ("File too large", "out of memory", "MemoryError", "Cannot allocate memory",
              "No space left")  # fmt: skip

KNOWN_ROOT_ENTRIES = {"in", "outside", "cwd", "dst", "tmp"}


# --------------------------------------------------------------------------------------
# helpers


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    w = Workspace.create(tmp_path / "ws", token=uuid.uuid4().hex[:16])
    yield w
    # bombs may have left large spool files: do not keep them around
    if w.tmp_escape.exists() or w.tmp_escape.is_symlink():
        if w.tmp_escape.is_dir() and not w.tmp_escape.is_symlink():
            shutil.rmtree(w.tmp_escape)
        else:
            w.tmp_escape.unlink()
    shutil.rmtree(w.root, ignore_errors=True)


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed, special files not opened)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + str(p.readlink())
            elif stat.S_ISREG(st.st_mode):
                out[rel] = f"file:{st.st_size}:" + hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            else:
                out[rel] = f"special:{stat.S_IFMT(st.st_mode):o}"
    return out


def assert_no_side_effects(ws: Workspace, before: dict[str, str], inp: Input) -> None:
    """Nothing written anywhere: the whole workspace is as it was, no escape target exists."""
    assert {p.name for p in ws.root.iterdir()} == KNOWN_ROOT_ENTRIES
    assert list(ws.cwd.iterdir()) == [], "the working directory must stay empty"
    assert list(ws.dst.iterdir()) == [], "no output, partial or temporary, may be left"
    assert list(ws.tmp.iterdir()) == [], "temporary files must be cleaned up"
    after = snapshot(ws.root)
    added = sorted(set(after) - set(before))
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not added and not changed, f"added {added}, changed or removed {changed}"
    for p in (*inp.escapes, ws.tmp_escape):
        assert not (p.exists() or p.is_symlink()), f"{p} was written"


def build(case: Case, ws: Workspace) -> tuple[Input, dict[str, str]]:
    inp = case.build(ws)
    return inp, snapshot(ws.root)


def run(ws: Workspace, case: Case, *args: str, stdin: bytes | None = None) -> Result:
    r = run_sealift(
        *args,
        cwd=ws.cwd,
        tmp=ws.tmp,
        stdin=stdin,
        timeout=BOMB_RUN_TIMEOUT if case.bomb else RUN_TIMEOUT,
        limited=True,
        env=case.env,
    )
    if case.bomb:
        if r.returncode == -9 and hostile.ERROR_PREFIX in r.stderr:
            pytest.fail(
                f"the cap triggered but the process did not exit (hang after the error)\n{r}"
            )
        assert r.elapsed < BOMB_SECONDS, f"the tool's cap did not trigger early\n{r}"
        hits = [m for m in LIMIT_HITS if m in r.stderr]
        assert not hits, f"stopped by the test's rlimits, not by a cap of its own\n{r}"
    return r


def case_params(pred: Callable[[Case], bool] = lambda c: True) -> list[Any]:
    marks = {True: [pytest.mark.timeout(180)], False: []}
    return [pytest.param(c, id=c.id, marks=marks[c.bomb]) for c in CASES if pred(c)]


# --------------------------------------------------------------------------------------
# the hostile cases


@pytest.mark.parametrize("case", case_params())
def test_verify_rejects(case: Case, ws: Workspace) -> None:
    inp, before = build(case, ws)
    r = run(ws, case, "verify", str(inp.path))
    line = assert_clean_error(r)
    # a mismatch names both digests (we accept the 12-digit short form) and the image
    for needle in inp.must_mention:
        assert needle in line, f"{needle!r} not named in the error\n{r}"
    if inp.image_names:
        assert any(n in line for n in inp.image_names), f"image not named\n{r}"
    assert_no_side_effects(ws, before, inp)


@pytest.mark.parametrize("case", case_params(lambda c: c.metadata))
def test_inspect_rejects_damaged_metadata(case: Case, ws: Workspace) -> None:
    inp, before = build(case, ws)
    r = run(ws, case, "inspect", "--json", str(inp.path))
    assert_clean_error(r)
    assert r.stdout == b"", f"no partial JSON on stdout\n{r}"
    assert_no_side_effects(ws, before, inp)


@pytest.mark.parametrize("case", case_params(lambda c: not c.metadata))
def test_inspect_is_clean_when_metadata_is_intact(case: Case, ws: Workspace) -> None:
    """inspect need not read layers, so it may succeed here; but it must not crash or hang
    (a FIFO or /dev/zero where a layer belongs), nor write anything."""
    inp, before = build(case, ws)
    r = run(ws, case, "inspect", "--json", str(inp.path))
    if r.returncode == 0:
        assert_ok(r)
        hostile.check_inspect_shape(r.json())
    else:
        assert_clean_error(r)
    assert_no_side_effects(ws, before, inp)


@pytest.mark.parametrize("target", ["archive", "oci"])
@pytest.mark.parametrize("case", case_params())
def test_convert_rejects(case: Case, target: str, ws: Workspace) -> None:
    inp, before = build(case, ws)
    out = ws.dst / ("out.tar" if target == "archive" else "out-layout")
    r = run(ws, case, "convert", str(inp.path), f"{target}:{out}")
    assert_clean_error(r)
    assert not out.exists() and not out.is_symlink(), f"{out} left behind\n{r}"
    assert_no_side_effects(ws, before, inp)


@pytest.mark.parametrize("case", case_params(lambda c: c.stdin))
def test_convert_from_stdin_rejects(case: Case, ws: Workspace) -> None:
    inp, before = build(case, ws)
    out = ws.dst / "out.tar"
    r = run(ws, case, "convert", "-", f"archive:{out}", stdin=inp.path.read_bytes())
    assert_clean_error(r)
    assert not out.exists(), f"{out} left behind\n{r}"
    assert_no_side_effects(ws, before, inp)


def test_existing_destination_survives_a_failed_convert(ws: Workspace) -> None:
    """A failed convert must not clobber or truncate a file already at the target name."""
    case = next(c for c in CASES if c.id == "flip-oci-layer")
    inp = case.build(ws)
    out = ws.dst / "out.tar"
    out.write_bytes(b"precious")
    r = run(ws, case, "convert", str(inp.path), f"archive:{out}")
    assert_clean_error(r)
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in ws.dst.iterdir()) == ["out.tar"]
    assert list(ws.tmp.iterdir()) == []


# --------------------------------------------------------------------------------------
# the builders themselves (independent of sealift)


def test_every_case_builds(ws: Workspace) -> None:
    for c in CASES:
        sub = Workspace.create(ws.root / "cases" / c.id, token=ws.token)
        inp = c.build(sub)
        assert inp.path.exists() or inp.path.is_symlink(), c.id


def _read_members(data: bytes) -> dict[str, bytes]:
    import io

    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            f = tar.extractfile(m)
            if f is not None:
                out[m.name] = f.read()
    return out


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_valid_oci_build_is_consistent(compression: hostile.Compression) -> None:
    import gzip as gz

    import zstandard

    b = hostile.build_oci(compression=compression)
    files = _read_members(b.tar())
    index = json.loads(files["index.json"])
    (desc,) = index["manifests"]
    manifest_raw = files[hostile.blob_name(desc["digest"])]
    assert hostile.digest_of(manifest_raw) == desc["digest"] and len(manifest_raw) == desc["size"]
    manifest = json.loads(manifest_raw)
    config_raw = files[hostile.blob_name(manifest["config"]["digest"])]
    assert hostile.digest_of(config_raw) == manifest["config"]["digest"]
    diff_ids = json.loads(config_raw)["rootfs"]["diff_ids"]
    for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
        blob = files[hostile.blob_name(layer["digest"])]
        assert hostile.digest_of(blob) == layer["digest"] and len(blob) == layer["size"]
        if compression == "gzip":
            blob = gz.decompress(blob)
        elif compression == "zstd":
            blob = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
        assert hostile.digest_of(blob) == diff_id


def test_valid_docker_build_is_consistent() -> None:
    b = hostile.build_docker()
    files = _read_members(b.tar())
    (entry,) = json.loads(files["manifest.json"])
    config_raw = files[entry["Config"]]
    assert entry["Config"] == hostile.sha256_hex(config_raw) + ".json"
    diff_ids = json.loads(config_raw)["rootfs"]["diff_ids"]
    for name, diff_id in zip(entry["Layers"], diff_ids, strict=True):
        assert hostile.digest_of(files[name]) == diff_id
    assert entry["RepoTags"] == [hostile.TAG]


def test_bombs_are_real() -> None:
    """The bomb streams decode to what they claim (checked on a small size)."""
    import gzip as gz
    import io

    import zstandard

    assert gz.decompress(hostile.gzip_zeros_bomb(3, prefix=b"x" * 600)) == b"x" * 600 + bytes(
        3 * hostile.MIB
    )
    z = hostile.zstd_zeros_bomb(8 * hostile.MIB, prefix=b"y" * 512)
    got = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(z)).read()
    assert got == b"y" * 512 + bytes(8 * hostile.MIB)
    assert len(hostile.zstd_zeros_bomb(hostile.ZSTD_BOMB_BYTES)) < 3 * hostile.MIB


# --------------------------------------------------------------------------------------
# positive controls: what the builders make when not damaged is accepted


def _dup_identical_docker(ws: Workspace) -> tuple[Path, Built]:
    b = hostile.build_docker()
    b.members.insert(0, Member("manifest.json", b.manifest))
    return ws.inp / "in.tar", b


def _dup_identical_oci(ws: Workspace) -> tuple[Path, Built]:
    b = hostile.build_oci()
    b.members.insert(3, b.member(b.layer_names[1]))
    return ws.inp / "in.tar", b


def _dot_slash_oci(ws: Workspace) -> tuple[Path, Built]:
    """``tar -C layout -cf x.tar .`` writes ``./index.json``, ``./blobs/...``."""
    b = hostile.build_oci()
    b.members = [
        Member("./", type=tarfile.DIRTYPE, mode=0o755),
        *(replace(m, name="./" + m.name) for m in b.members),
    ]
    return ws.inp / "in.tar", b


def _docker_internal_symlink(ws: Workspace) -> tuple[Path, Built]:
    """Two images; the second's first layer is a symlink to the first's (as test_link.tar)."""
    a = hostile.build_docker()
    extra = hostile.layer_tar({"opt/extra.txt": b"extra\n"})
    b2 = hostile.build_docker(layer_tars=[a.layer_tars[0], extra], repo_tags=["hostile/test:2"])
    m2 = json.loads(b2.manifest)
    m2[0]["Layers"][0] = "link0/layer.tar"
    extra_dir = b2.layer_names[1].split("/")[0] + "/"
    a.members = [
        *(m for m in a.members if m.name != "manifest.json"),
        Member(b2.config_name, b2.config),
        Member("link0/", type=tarfile.DIRTYPE, mode=0o755),
        Member("link0/layer.tar", type=tarfile.SYMTYPE, linkname="../" + a.layer_names[0]),
        Member(extra_dir, type=tarfile.DIRTYPE, mode=0o755),
        Member(b2.layer_names[1], extra),
        Member("manifest.json", hostile.canonical_json(json.loads(a.manifest) + m2)),
    ]
    return ws.inp / "in.tar", a


def _plain(
    kind: str, compression: hostile.Compression = "gzip", outer: hostile.Compression = "none"
) -> Callable[[Workspace], tuple[Path, Built]]:
    def make(ws: Workspace) -> tuple[Path, Built]:
        if kind == "docker":
            b = hostile.build_docker()
        else:
            b = hostile.build_oci(compression=compression)
        suffix = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}[outer]
        return ws.inp / f"in{suffix}", b

    return make


# name -> (builder, outer compression of the whole archive)
VALID: dict[str, tuple[Callable[[Workspace], tuple[Path, Built]], hostile.Compression]] = {
    "docker": (_plain("docker"), "none"),
    "docker-outer-gzip": (_plain("docker", outer="gzip"), "gzip"),
    "oci-gzip": (_plain("oci", "gzip"), "none"),
    "oci-zstd": (_plain("oci", "zstd"), "none"),
    "oci-uncompressed": (_plain("oci", "none"), "none"),
    "oci-outer-zstd": (_plain("oci", outer="zstd"), "zstd"),
    "docker-duplicate-identical-manifest": (_dup_identical_docker, "none"),
    "oci-duplicate-identical-blob": (_dup_identical_oci, "none"),
    "oci-dot-slash-names": (_dot_slash_oci, "none"),
    "docker-internal-symlink": (_docker_internal_symlink, "none"),
}


@pytest.mark.parametrize("name", list(VALID))
def test_valid_input_is_accepted(name: str, ws: Workspace) -> None:
    make, outer = VALID[name]
    path, b = make(ws)
    path.write_bytes(hostile.wrap(b.tar(), outer))
    kw: dict[str, Any] = {"cwd": ws.cwd, "tmp": ws.tmp, "timeout": RUN_TIMEOUT}

    assert_ok(run_sealift("verify", str(path), **kw))
    r = run_sealift("inspect", "--json", str(path), **kw)
    assert_ok(r)
    images = r.json()["images"]
    (first,) = (i for i in images if i["id"] == b.config_digest)
    assert first["id"] == b.config_digest
    assert [layer["diff_id"] for layer in first["layers"]] == b.diff_ids
    if name.startswith("docker"):
        assert TAG_NORMALISED in first["tags"]
    else:
        assert first["ref_names"] == [hostile.REF_NAME]

    out = ws.dst / "out.tar"
    assert_ok(run_sealift("convert", str(path), f"archive:{out}", **kw))
    assert out.is_file()
    assert_ok(run_sealift("verify", str(out), **kw))
    assert b.config_digest in hostile.check_written_archive(out)
    assert list(ws.cwd.iterdir()) == [] and list(ws.tmp.iterdir()) == []
    assert sorted(p.name for p in ws.dst.iterdir()) == ["out.tar"]


def test_valid_layout_dir_is_accepted(ws: Workspace) -> None:
    b = hostile.build_oci()
    root = hostile.write_layout(b, ws.inp / "layout")
    kw: dict[str, Any] = {"cwd": ws.cwd, "tmp": ws.tmp, "timeout": RUN_TIMEOUT}
    assert_ok(run_sealift("verify", str(root), **kw))
    r = run_sealift("inspect", "--json", str(root), **kw)
    assert_ok(r)
    assert [i["id"] for i in r.json()["images"]] == [b.config_digest]
    out = ws.dst / "out-layout"
    assert_ok(run_sealift("convert", f"oci:{root}", f"oci:{out}", **kw))
    assert_ok(run_sealift("verify", str(out), **kw))
