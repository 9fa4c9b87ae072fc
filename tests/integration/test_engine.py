"""sealift save/load against real engines of both kinds (issues 3, 10): Docker 20.10 and Docker 26
with the containerd image store (``@both_engine_kinds``).

Two private engines of one kind: ``source_engine`` holds the standard test images,
``empty_dest_engine`` is emptied before each test. Nothing is pulled; containers run with
``--pull=never``.

``sealift load --json`` prints ``{"loaded": [...], "layers_sent": int, "layers_skipped": int,
"bytes_sent": int}``; the "skips what the engine has" tests rely on ``layers_sent`` and
``layers_skipped``. If those names change in the CLI, change ``LOAD_JSON_*`` below with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import procs
from tests.support.cli import SealiftResult, run_sealift, run_sealift_pipe, sealift_env
from tests.support.dockerd import DockerDaemon, image_id, missing_engine_reason
from tests.support.engines import both_engine_kinds
from tests.support.fixtures import APP_OUTPUT, DOCKER_APP_ID, OCI_APP_ID, TOOL_FIXTURE_IMAGES
from tests.support.images import BuiltImage, ImageSet
from tests.support.require import require
from tests.support.service import running

pytestmark = pytest.mark.engine

LOAD_JSON_SENT = "layers_sent"
LOAD_JSON_SKIPPED = "layers_skipped"
UNREACHABLE = "unix:///nonexistent/sealift-no-engine.sock"


# ------------------------------------------------------------------------------------ helpers
def save(engine: DockerDaemon, out: Path | str, *refs: str, compression: str = "gzip") -> Path:
    run_sealift(
        "save", *refs, "-o", out, "-H", engine.host, "-q", "--compression", compression
    ).assert_ok()
    path = Path(out)
    assert path.is_file() and path.stat().st_size > 0
    return path


def load(engine: DockerDaemon, archive: Path, *extra: str) -> SealiftResult:
    return run_sealift("load", archive, "-H", engine.host, "-q", *extra)


def load_json(engine: DockerDaemon, archive: Path) -> dict[str, Any]:
    result = load(engine, archive, "--json").assert_ok()
    data = result.json()
    assert isinstance(data, dict), result
    return data


CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "Labels", "WorkingDir", "User")


def assert_same_image(
    source: DockerDaemon,
    dest: DockerDaemon,
    image: BuiltImage,
    archive: Path | None = None,
) -> None:
    """Same ID (config digest) and the same ID in the engine's terms (on the containerd store,
    the manifest digest: same blobs), layers, config (Env/Cmd/Entrypoint/Labels...), tags, and it
    runs the same. With ``archive`` (layers recompressed on the way), the engine's own ID is the
    one the archive gives the image: its blobs went in as they were there."""
    src = source.inspect(image.ref)
    dst = dest.inspect(image.ref)
    assert dest.config_digest(image.ref) == source.config_digest(image.ref) == image.id
    expected = src["Id"] if archive is None else engine_id_in(archive, image, dest)
    assert dst["Id"] == expected, "the engine's own image ID"
    assert dst["RootFS"] == src["RootFS"]
    for key in ("Architecture", "Os", "Created"):
        assert dst.get(key) == src.get(key), key
    src_config: dict[str, Any] = src["Config"]
    dst_config: dict[str, Any] = dst["Config"]
    for key in CONFIG_KEYS:
        assert dst_config.get(key) == src_config.get(key), key
    assert set(image.tags) <= set(dst["RepoTags"])
    assert dest.run(image.ref) == image.expected_output


def layer_blobs(archive: Path) -> list[tarfile.TarInfo]:
    """Blob members of an archive that are layers (found via manifest.json), largest first."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None, "sealift archives carry manifest.json"
        manifest = json.load(member)
        names = {layer for entry in manifest for layer in entry["Layers"]}
        infos = [tar.getmember(name) for name in names]
    return sorted(infos, key=lambda info: info.size, reverse=True)


def flip_byte(archive: Path, info: tarfile.TarInfo, where: float = 0.5) -> None:
    """Flip one byte inside the data of tar member ``info`` (no header or padding touched)."""
    offset = info.offset_data + int(info.size * where)
    with open(archive, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


# ------------------------------------------------------------------------- round trips (happy)
@both_engine_kinds
@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_save_then_load_keeps_ids_config_tags_and_runs(
    compression: str,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    """zstd included: Docker 20.10 cannot read zstd layers, so sealift load must adapt."""
    refs = [*test_images.base.tags, test_images.app1.ref, test_images.app2.ref]
    archive = save(source_engine, tmp_path / "images.tar", *refs, compression=compression)
    run_sealift("verify", archive).assert_ok()

    result = load(empty_dest_engine, archive).assert_ok()
    assert set(result.loaded_refs()) == set(refs), result
    assert set(empty_dest_engine.image_ids()) == {i.id for i in test_images.small}
    for image in test_images.small:
        assert_same_image(source_engine, empty_dest_engine, image, archive)


def engine_id_in(archive: Path, image: BuiltImage, engine: DockerDaemon) -> str:
    """The ID ``engine`` gives ``image`` when it keeps the archive's blobs as they are: the
    manifest digest on the containerd store (a Docker 20.10 engine says the config digest)."""
    if engine.kind != "docker26":
        return image.id
    report = run_sealift("inspect", "--json", archive).assert_ok().json()
    digests = {row["manifest_digest"] for row in report["images"] if row["id"] == image.id}
    assert len(digests) == 1, report
    return str(digests.pop())


@pytest.fixture
def vfs_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    """A Docker 20.10 engine on vfs, the storage driver of last resort (the others use overlay2)."""
    require(missing_engine_reason())
    workdir = tmp_path_factory.mktemp("engine-vfs", numbered=True)
    yield from running(DockerDaemon("vfs", workdir, storage_driver="vfs"))


def test_save_load_round_trip_through_a_vfs_engine(
    source_engine: DockerDaemon,
    vfs_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    """sealift loads into and saves from an engine on vfs as on overlay2: IDs, config, runs."""
    assert vfs_engine.docker("info", "--format", "{{.Driver}}").stdout.strip() == "vfs"
    app = test_images.app1
    load(vfs_engine, save(source_engine, tmp_path / "app.tar", app.ref)).assert_ok()
    assert_same_image(source_engine, vfs_engine, app)
    saved_from_vfs = save(vfs_engine, tmp_path / "from-vfs.tar", app.ref, compression="zstd")
    load(empty_dest_engine, saved_from_vfs).assert_ok()
    assert_same_image(vfs_engine, empty_dest_engine, app)


@both_engine_kinds
def test_saved_archive_stores_shared_layers_once(
    source_engine: DockerDaemon, test_images: ImageSet, tmp_path: Path
) -> None:
    """base:1, app:1 and app:2 have 4 distinct layers between them: 4 layer blobs, no more."""
    images = test_images.small
    archive = tmp_path / "three.tar"
    result = run_sealift(
        "save", *(i.ref for i in images), "-o", archive, "-H", source_engine.host, "-q", "--json"
    ).assert_ok()
    summary = result.json()
    assert summary["bytes"] == archive.stat().st_size, summary
    distinct = {d for image in images for d in image.diff_ids}
    assert len(distinct) == 4
    assert len(layer_blobs(archive)) == len(distinct)
    with tarfile.open(archive) as tar:
        names = [m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()]
    assert len(names) == len(set(names)), "a member is written twice"
    report = run_sealift("inspect", "--json", archive).assert_ok().json()
    by_id = {img["id"]: img for img in report["images"]}
    assert set(by_id) == {i.id for i in images}
    for image in images:
        layers = by_id[image.id]["layers"]
        assert [layer["diff_id"] for layer in layers] == list(image.diff_ids)
        assert [layer["shared"] for layer in layers[:2]] == [True, True]
        assert all("gzip" in layer["media_type"] for layer in layers)
    top_app1 = by_id[test_images.app1.id]["layers"][2]
    assert top_app1["shared"] is False


@both_engine_kinds
def test_docker_host_is_honoured(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    archive = tmp_path / "app.tar"
    run_sealift(
        "save", test_images.app1.ref, "-o", archive, "-q", env=source_engine.env()
    ).assert_ok()
    run_sealift("load", archive, "-q", env=empty_dest_engine.env()).assert_ok()
    assert image_id(empty_dest_engine, test_images.app1.ref) == test_images.app1.id


@both_engine_kinds
def test_save_pipe_load_large_image(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    """``sealift save IMG -o - | sealift load -`` with a ~48 MiB layer, through a real pipe."""
    large = test_images.large
    saved, loaded = run_sealift_pipe(
        ["save", large.ref, "-o", "-", "-q", "-H", source_engine.host],
        ["load", "-", "-q", "-H", empty_dest_engine.host],
        workdir=tmp_path,
    )
    assert saved.returncode == 0, saved
    assert loaded.returncode == 0, loaded
    assert loaded.loaded_refs() == [large.ref]
    assert_same_image(source_engine, empty_dest_engine, large)


@both_engine_kinds
def test_save_by_image_id(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    """By the ID ``docker images`` shows (the manifest digest on the containerd store)."""
    app2 = test_images.app2
    archive = save(source_engine, tmp_path / "by-id.tar", app2.engine_id)
    load(empty_dest_engine, archive).assert_ok()
    assert empty_dest_engine.image_ids() == [app2.id]
    assert empty_dest_engine.engine_ids() == [app2.engine_id]
    assert empty_dest_engine.run(app2.engine_id) == app2.expected_output


@both_engine_kinds
def test_plain_docker_load_reads_sealift_save(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    archive = save(source_engine, tmp_path / "app.tar", test_images.app1.ref, test_images.app2.ref)
    out = empty_dest_engine.docker("load", "--input", archive).stdout
    assert f"Loaded image: {test_images.app1.ref}" in out
    for image in (test_images.app1, test_images.app2):
        assert_same_image(source_engine, empty_dest_engine, image)


@both_engine_kinds
def test_sealift_load_reads_docker_save(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    refs = [*test_images.base.tags, test_images.app1.ref, test_images.app2.ref]
    archive = source_engine.docker_save(tmp_path / "docker-save.tar", *refs)
    run_sealift("verify", archive).assert_ok()
    result = load(empty_dest_engine, archive).assert_ok()
    assert set(result.loaded_refs()) == set(refs)
    for image in test_images.small:
        assert_same_image(source_engine, empty_dest_engine, image)


@both_engine_kinds
def test_load_from_stdin(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    archive = save(source_engine, tmp_path / "app.tar", test_images.app1.ref)
    result = run_sealift(
        "load", "-", "-q", "-H", empty_dest_engine.host, input=archive.read_bytes()
    ).assert_ok()
    assert result.loaded_refs() == [test_images.app1.ref]
    assert image_id(empty_dest_engine, test_images.app1.ref) == test_images.app1.id


# ---------------------------------------------------------------- send only what is missing
@both_engine_kinds
def test_load_skips_layers_the_engine_has(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    """app:2 shares base's two layers with app:1: after app:1, only app:2's top layer is sent."""
    app1 = save(source_engine, tmp_path / "app1.tar", test_images.app1.ref)
    app2 = save(source_engine, tmp_path / "app2.tar", test_images.app2.ref)

    first = load_json(empty_dest_engine, app1)
    assert first[LOAD_JSON_SENT] == 3, first
    assert first[LOAD_JSON_SKIPPED] == 0, first

    second = load_json(empty_dest_engine, app2)
    assert second[LOAD_JSON_SKIPPED] == 2, second
    assert second[LOAD_JSON_SENT] == 1, second
    if "bytes_sent" in first and "bytes_sent" in second:
        # base's busybox layer (~2 MB) is not sent again; app:2's top layer is a few KB.
        assert second["bytes_sent"] < 200_000 < first["bytes_sent"], (first, second)

    for image in (test_images.app1, test_images.app2):
        assert_same_image(source_engine, empty_dest_engine, image)


@both_engine_kinds
def test_concurrent_loads_of_images_sharing_layers(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    """Two loads at once (parallel deploys) whose images share base's layers: both succeed."""
    archives = [
        save(source_engine, tmp_path / f"app{n}.tar", image.ref)
        for n, image in ((1, test_images.app1), (2, test_images.app2))
    ]
    env = sealift_env(None)
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "sealift", "load", archive, "-q", "-H", empty_dest_engine.host],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for archive in archives
    ]
    for proc in running:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode(errors="replace")
    for image in (test_images.app1, test_images.app2):
        assert_same_image(source_engine, empty_dest_engine, image)


@both_engine_kinds
def test_loading_an_image_already_present_sends_no_layers(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    archive = save(source_engine, tmp_path / "app1.tar", test_images.app1.ref)
    load_json(empty_dest_engine, archive)
    # Drop the tag but keep the image (another tag holds it): a reload only needs to tag.
    empty_dest_engine.docker("tag", test_images.app1.ref, "keep/app:held")
    empty_dest_engine.docker("rmi", test_images.app1.ref)
    again = load_json(empty_dest_engine, archive)
    assert again[LOAD_JSON_SENT] == 0, again
    assert image_id(empty_dest_engine, test_images.app1.ref) == test_images.app1.id


# ------------------------------------------------------------------------------------ refusals
@both_engine_kinds
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_tampered_archive_is_refused_and_tags_nothing(
    compression: str,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    archive = save(
        source_engine, tmp_path / "app.tar", test_images.app1.ref, compression=compression
    )
    biggest = layer_blobs(archive)[0]  # the busybox layer, ~1-2 MB
    flip_byte(archive, biggest)

    assert run_sealift("verify", archive).returncode == 1

    result = load(empty_dest_engine, archive)
    result.assert_one_line_error(1)
    assert empty_dest_engine.tags() == {}, "a refused archive must not create any tag"
    assert test_images.app1.id not in empty_dest_engine.image_ids()


@both_engine_kinds
def test_truncated_archive_is_refused_and_tags_nothing(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    """Cut inside the biggest layer (a transfer that died): refused, nothing tagged."""
    archive = save(source_engine, tmp_path / "app.tar", test_images.app1.ref)
    biggest = layer_blobs(archive)[0]
    with open(archive, "r+b") as handle:
        handle.truncate(biggest.offset_data + biggest.size // 2)
    result = load(empty_dest_engine, archive)
    result.assert_one_line_error(1)
    assert empty_dest_engine.tags() == {}
    assert test_images.app1.id not in empty_dest_engine.image_ids()


@both_engine_kinds
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_load_killed_midway_tags_nothing_and_a_retry_works(
    sig: signal.Signals,
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    """``sealift load -`` killed after reading 60% of the archive: no tag; then a full load.
    SIGTERM unwinds like Ctrl-C: exit 143 and the spool directory removed."""
    large = test_images.large
    archive = save(source_engine, tmp_path / "large.tar", large.ref, compression="none")
    data = archive.read_bytes()
    spool = tmp_path / "spool"
    spool.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealift", "load", "-", "-q", "-H", empty_dest_engine.host],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**sealift_env(None), "SEALIFT_TMPDIR": str(spool)},
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(data[: len(data) * 6 // 10])
        proc.stdin.flush()
        time.sleep(1.0)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
        assert list(spool.iterdir()) == [], "SIGTERM must not leave the spool behind"
    assert empty_dest_engine.tags() == {}
    assert large.id not in empty_dest_engine.image_ids()

    load(empty_dest_engine, archive).assert_ok()
    assert_same_image(source_engine, empty_dest_engine, large, archive)


@both_engine_kinds
def test_missing_image_is_one_line_error(
    source_engine: DockerDaemon, test_images: ImageSet, tmp_path: Path
) -> None:
    out = tmp_path / "out.tar"
    result = run_sealift(
        "save", test_images.app1.ref, "sealift-test/no-such-image:1", "-o", out,
        "-H", source_engine.host,
    )  # fmt: skip
    line = result.assert_one_line_error(1)
    assert "no-such-image" in line
    assert not out.exists(), "no archive may be left behind"
    assert list(tmp_path.iterdir()) == []


def test_unreachable_engine_is_one_line_error(tmp_path: Path, tool_fixtures: Path) -> None:
    out = tmp_path / "out.tar"
    run_sealift("save", "busybox:1", "-o", out, "-H", UNREACHABLE).assert_one_line_error(1)
    assert not out.exists()
    archive = tool_fixtures / "docker20-save-app.tar.gz"
    run_sealift("load", archive, "-H", UNREACHABLE).assert_one_line_error(1)
    env = {**os.environ, "DOCKER_HOST": UNREACHABLE}
    run_sealift("load", archive, env=env).assert_one_line_error(1)


@both_engine_kinds
def test_save_to_full_disk_leaves_no_partial_file(
    source_engine: DockerDaemon, test_images: ImageSet, tmp_path: Path
) -> None:
    """A 4 MiB tmpfs cannot hold the ~48 MiB image: exit 1, one line, nothing left there."""
    with procs.tmpfs(tmp_path / "full", "4m") as full:
        out = full / "large.tar"
        result = run_sealift(
            "save", test_images.large.ref, "-o", out, "-H", source_engine.host,
            "--compression", "none",
        )  # fmt: skip
        result.assert_one_line_error(1)
        assert list(full.iterdir()) == [], "partial or temporary files left on the full disk"


@both_engine_kinds
def test_save_to_read_only_target_is_one_line_error(
    source_engine: DockerDaemon, test_images: ImageSet, tmp_path: Path
) -> None:
    with procs.tmpfs(tmp_path / "ro", "1m", readonly=True) as read_only:
        out = read_only / "app.tar"
        result = run_sealift("save", test_images.app1.ref, "-o", out, "-H", source_engine.host)
        result.assert_one_line_error(1)
        assert not out.exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_sealift("save").returncode == 2
    assert (
        run_sealift("save", "x:1", "-o", tmp_path / "x.tar", "--compression", "lz4").returncode == 2
    )
    assert run_sealift("load", "--no-such-option").returncode == 2


# ------------------------------------------------------------- archives other tools wrote
@both_engine_kinds
@pytest.mark.parametrize("name", sorted(TOOL_FIXTURE_IMAGES))
def test_sealift_load_reads_tool_fixtures(
    name: str, tool_fixtures: Path, empty_dest_engine: DockerDaemon
) -> None:
    """Every fixture (zstd ones too: Docker 20.10 cannot read those itself) loads with the
    image IDs its configs carry; the app image runs."""
    spec = TOOL_FIXTURE_IMAGES[name]
    expected = {spec.platforms["linux/amd64"]} if spec.platforms else spec.image_ids
    source = tool_fixtures / name
    # load takes an OCI layout directory as oci:DIR (a bare directory is a usage error there).
    result = load(
        empty_dest_engine, Path(f"oci:{source}") if spec.kind == "oci-layout" else source
    ).assert_ok()
    assert set(empty_dest_engine.image_ids()) == expected, result
    if spec.kind == "docker-archive":
        tags = empty_dest_engine.tags()
        for ref, ident in spec.ids.items():
            assert tags.get(ref) == ident, (ref, tags)
        assert set(result.loaded_refs()) == set(spec.ids)
    for app_id in expected & {DOCKER_APP_ID, OCI_APP_ID}:
        assert empty_dest_engine.run(empty_dest_engine.engine_id_for(app_id)) == APP_OUTPUT
