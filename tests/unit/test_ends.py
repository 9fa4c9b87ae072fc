"""Names of ends (sealift.ends.open) and `copy` between them with exact blobs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import sealift
from sealift.ends import open as ends
from sealift.ends.archive import ArchiveSink, ArchiveSource
from sealift.ends.base import all_layers
from sealift.ends.layout import LayoutSink, LayoutSource
from sealift.errors import UsageError
from sealift.model import Entry
from sealift.samples import demo_images, write_docker_save
from sealift.transfer import CopyOptions, Selection, copy
from tests.support.cli import run_sealift, sealift_env


@pytest.fixture
def zstd_archive(tmp_path: Path) -> Path:
    docker_save = tmp_path / "docker-save.tar"
    with docker_save.open("wb") as out:
        write_docker_save(demo_images(), out)
    archive = tmp_path / "stack.tar"
    sealift.copy(str(docker_save), str(archive), CopyOptions(compression="zstd"))
    return archive


def digests(entries: list[Entry]) -> dict[str, str]:
    """Image ID -> manifest digest."""
    return {
        str(image.id): str(image.manifest.digest)
        for entry in entries
        for image in entry.images()
        if image.manifest is not None
    }


def read(spec: str) -> list[Entry]:
    source = ends.open_source(spec)
    try:
        return source.entries()
    finally:
        source.close()


@pytest.mark.parametrize(
    ("text", "kind", "location", "images"),
    [
        ("docker-daemon:app:1,base:1", ends.ENGINE, "", ("app:1", "base:1")),
        ("docker-daemon:", ends.ENGINE, "", ()),
        ("docker-archive:x.tar", ends.ARCHIVE, "x.tar", ()),
        ("oci-archive:x.tar", ends.ARCHIVE, "x.tar", ()),
        ("archive:/tmp/x:y.tar", ends.ARCHIVE, "/tmp/x:y.tar", ()),
        ("-", ends.ARCHIVE, "-", ()),
        ("plain.tar", ends.ARCHIVE, "plain.tar", ()),
        ("oci:/srv/layout", ends.LAYOUT, "/srv/layout", ()),
        ("oci:/srv/layout:app-1", ends.LAYOUT, "/srv/layout", ("app-1",)),
        ("ssh://deploy@web1:2222", ends.SSH, "ssh://deploy@web1:2222", ()),
        ("ssh://web1/myorg/api:1.2,base:1", ends.SSH, "ssh://web1", ("myorg/api:1.2", "base:1")),
        ("ssh://[::1]:22/app:1", ends.SSH, "ssh://[::1]:22", ("app:1",)),
    ],
)
def test_end_names_parse_as_skopeo_spells_them(
    text: str, kind: str, location: str, images: tuple[str, ...]
) -> None:
    end = ends.parse_end(text)
    assert (end.kind, end.location, end.images) == (kind, location, images)


def test_a_directory_or_a_trailing_slash_is_a_layout(tmp_path: Path) -> None:
    assert ends.parse_end(str(tmp_path)).kind == ends.LAYOUT
    assert ends.parse_end(f"{tmp_path}/new/", as_sink=True).kind == ends.LAYOUT
    assert ends.parse_end(f"{tmp_path}/new.tar").kind == ends.ARCHIVE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("ftp:x.tar", "unknown transport 'ftp:'"),
        ("oci:", "names no path"),
        ("docker-daemon:-rf", "invalid image reference"),
        ("ssh://bad host", "invalid"),
        ("docker-daemon:UPPER:1", "invalid image reference"),
    ],
)
def test_bad_end_names_are_one_clear_usage_error(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ends.parse_end(text)


def test_an_engine_source_must_name_images() -> None:
    with pytest.raises(UsageError, match="name the images"):
        ends.open_source("docker-daemon:")


def test_copy_keeps_every_blob_and_manifest_digest_between_files(
    zstd_archive: Path, tmp_path: Path
) -> None:
    original = read(str(zstd_archive))
    sealift.copy(str(zstd_archive), f"oci:{tmp_path / 'layout'}")
    sealift.copy(f"oci:{tmp_path / 'layout'}", f"archive:{tmp_path / 'again.tar'}")
    assert digests(read(f"oci:{tmp_path / 'layout'}")) == digests(original)
    assert digests(read(str(tmp_path / "again.tar"))) == digests(original)
    codecs = {
        layer.codec
        for e in read(str(tmp_path / "again.tar"))
        for i in e.images()
        for layer in i.layers
    }
    assert codecs == {"zstd"}


def test_a_layout_ref_names_the_one_image_copied(zstd_archive: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    sealift.copy(
        ArchiveSource(zstd_archive),
        LayoutSink(layout, ref="app-1.1"),
        CopyOptions(compression=None, selection=_only("sample/app:1.1")),
    )
    entries = LayoutSource(layout, ref="app-1.1").entries()
    assert [entry.ref_names for entry in entries] == [("app-1.1",)]


def test_naming_one_image_for_many_is_refused(zstd_archive: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="choose one with --tag"):
        sealift.copy(str(zstd_archive), f"oci:{tmp_path / 'layout'}:one")


def test_a_layout_lacks_only_the_blobs_it_does_not_hold(zstd_archive: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    sealift.copy(
        str(zstd_archive),
        f"oci:{layout}",
        CopyOptions(compression=None, selection=_only("sample/base:1")),
    )
    entries = read(str(zstd_archive))
    base_layers = {
        layer.digest
        for entry in entries
        if any(tag.familiar == "sample/base:1" for tag in entry.tags)
        for image in entry.images()
        for layer in image.layers
    }
    assert LayoutSink(layout).missing_layers(entries) == all_layers(entries) - base_layers


def test_two_copies_into_one_layout_at_once_both_land(zstd_archive: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    errors: list[BaseException] = []

    def copy_one(tag: str, ref: str) -> None:
        try:
            sealift.copy(
                str(zstd_archive),
                f"oci:{layout}:{ref}",
                CopyOptions(compression=None, selection=_only(tag)),
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=copy_one, args=(tag, ref))
        for tag, ref in [("sample/app:1.0", "app-1.0"), ("sample/app:1.1", "app-1.1")] * 3
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    names = {name for entry in read(f"oci:{layout}") for name in entry.ref_names}
    assert names == {"app-1.0", "app-1.1"}


def test_copy_command_prints_digests_that_survived(zstd_archive: Path, tmp_path: Path) -> None:
    result = run_sealift("copy", str(zstd_archive), f"oci:{tmp_path / 'layout'}", "--json")
    assert result.ok, result
    report = json.loads(result.stdout)
    assert {image["digest"] for image in report["images"]} == set(
        digests(read(str(zstd_archive))).values()
    )
    assert not any(image["adapted"] for image in report["images"])


def test_copy_command_recompresses_when_asked_and_says_so(
    zstd_archive: Path, tmp_path: Path
) -> None:
    result = run_sealift(
        "copy", str(zstd_archive), str(tmp_path / "gzip.tar"), "--compression", "gzip", "--json"
    )
    assert result.ok, result
    assert all(image["adapted"] for image in json.loads(result.stdout)["images"])
    assert run_sealift("verify", str(tmp_path / "gzip.tar")).ok


def _only(tag: str) -> Selection:
    return Selection((tag,))


def test_load_refuses_an_unsigned_archive_when_signatures_are_required(
    zstd_archive: Path, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(
        "ops@site ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIHZx1oVSNXW0C8KlGKmlB0bdVVbfjr4ZqKk2bQrJ2Xhv\n"
    )
    result = run_sealift(
        "load",
        str(zstd_archive),
        "-H",
        "unix:///nonexistent.sock",
        env={**os.environ, "SEALIFT_ALLOWED_SIGNERS": str(allowed)},
    )
    line = result.assert_one_line_error()
    assert "sig" in line, line


def _resolved_host(home: Path, config: object | None) -> tuple[str, bool]:
    """What ``resolve_host(None)`` gives with this docker config.json, and whether it had to
    import the docker SDK to find out (in a fresh interpreter)."""
    if config is not None:
        (home / ".docker").mkdir()
        (home / ".docker" / "config.json").write_text(json.dumps(config))
    env = sealift_env()
    env.pop("DOCKER_HOST", None)
    env.pop("DOCKER_CONFIG", None)
    env["HOME"] = str(home)
    probe = (
        "import sys; from sealift.ends.engine import resolve_host; "
        "print(resolve_host(None), 'docker' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], out[1] == "True"


@pytest.mark.parametrize("config", [None, {}, {"currentContext": "default"}, ["not", "a", "map"]])
def test_the_default_context_is_found_without_the_docker_sdk(
    tmp_path: Path, config: object
) -> None:
    assert _resolved_host(tmp_path, config) == ("None", False)


def test_another_context_is_looked_up_by_the_docker_sdk(tmp_path: Path) -> None:
    _, imported_sdk = _resolved_host(tmp_path, {"currentContext": "elsewhere"})
    assert imported_sdk


def test_an_archive_file_holds_the_bytes_written_to_a_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spooled blobs go to a file by sendfile, to a stream through Python: the same bytes."""
    source = tmp_path / "docker.tar"
    with source.open("wb") as out:
        write_docker_save(demo_images(), out)
    sent: list[int] = []
    real_sendfile = os.sendfile

    def counting_sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        sent.append(count)
        return real_sendfile(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", counting_sendfile)
    options = CopyOptions("zstd")
    with ArchiveSource(source) as archive:
        copy(archive, ArchiveSink(tmp_path / "out.tar"), options)
    streamed = io.BytesIO()
    with ArchiveSource(source) as archive:
        copy(archive, ArchiveSink(streamed), options)
    assert sent, "the spooled layers were not sent by sendfile"
    assert (tmp_path / "out.tar").read_bytes() == streamed.getvalue()
