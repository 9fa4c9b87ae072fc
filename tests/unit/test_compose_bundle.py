"""The bundle part of an archive: written beside the images, read back, checked."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from sealift.compose.bundle import (
    BUNDLE_FILE,
    Bundle,
    read_bundle,
    service_image,
)
from sealift.compose.commands import MARKER, ComposeTool, write_project
from sealift.ends.archive import ArchiveSink, ArchiveSource
from sealift.ends.memory import MemorySource, image_from_layers
from sealift.errors import InvalidArchiveError, UsageError
from sealift.formats.write import archive_size, write_archive
from sealift.model import Entry
from sealift.samples import SampleLayer
from sealift.transfer import CopyOptions, copy

COMPOSE = b"name: shop\nservices:\n  web:\n    image: shop/web:1\n    profiles:\n    - debug\n"


def entries() -> list[Entry]:
    layer = SampleLayer({"bin/app": b"app"}).tar()
    return [image_from_layers([layer], ("shop/web:1",))]


def bundle_for(written: list[Entry]) -> Bundle:
    image = next(written[0].images())
    service = service_image("shop/web:1", str(image.id), written)
    return Bundle("shop", ("debug",), {"web": service}, COMPOSE)


def write_bundle_archive(path: Path) -> Bundle:
    made: list[Bundle] = []

    def extra(written: list[Entry]) -> dict[str, bytes]:
        made.append(bundle_for(written))
        return made[0].files()

    copy(MemorySource(entries()), ArchiveSink(path, extra_files=extra), CopyOptions("gzip"))
    return made[0]


def test_the_bundle_is_stored_under_sealift_and_read_back(tmp_path: Path) -> None:
    archive = tmp_path / "stack.tar"
    written = write_bundle_archive(archive)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[:4] == ["oci-layout", "sealift", "sealift/bundle.json", "sealift/compose.yaml"]
    with ArchiveSource(archive) as source:
        assert read_bundle(source.extra_files(), source.what) == written
        image = next(source.entries()[0].images())
    # the manifest digest is that of the archive's (gzip-recompressed) manifest
    assert image.manifest is not None
    assert written.services["web"].manifest_digest == str(image.manifest.digest)


def test_the_bundle_is_read_from_a_compressed_stream_too(tmp_path: Path) -> None:
    archive = tmp_path / "stack.tar"
    written = write_bundle_archive(archive)
    stream = io.BytesIO(gzip.compress(archive.read_bytes()))
    with ArchiveSource(stream) as source:
        assert read_bundle(source.extra_files(), source.what) == written


def test_bundle_json_lists_services_profiles_and_file_digests(tmp_path: Path) -> None:
    bundle = write_bundle_archive(tmp_path / "stack.tar")
    document = json.loads(bundle.files()[BUNDLE_FILE])
    assert document["project"] == "shop"
    assert document["profiles"] == ["debug"]
    assert set(document["services"]["web"]) == {"image", "image_id", "manifest_digest"}
    assert document["files"]["compose.yaml"].startswith("sha256:")


def test_a_changed_compose_file_is_refused() -> None:
    part = bundle_for(entries()).files()
    part["compose.yaml"] += b"    privileged: true\n"
    with pytest.raises(InvalidArchiveError, match=r"compose\.yaml does not match its sha256"):
        read_bundle(part, "stack.tar")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda part: part.pop(BUNDLE_FILE), "not a compose bundle"),
        (lambda part: part.pop("compose.yaml"), "listed in the bundle but missing"),
        (lambda part: part.update({BUNDLE_FILE: b"{"}), "is not JSON"),
        (lambda part: part.update({BUNDLE_FILE: b'{"format": "x/9"}'}), "has format 'x/9'"),
    ],
)
def test_broken_bundles_are_one_clear_error(change: object, message: str) -> None:
    part = bundle_for(entries()).files()
    change(part)  # type: ignore[operator]
    with pytest.raises(InvalidArchiveError, match=message):
        read_bundle(part, "stack.tar")


def test_the_project_directory_gets_a_v1_readable_file_and_its_env(tmp_path: Path) -> None:
    bundle = bundle_for(entries())
    compose, env = write_project(bundle, tmp_path / "shop", for_v1=True)
    assert compose.read_text().startswith(MARKER)
    assert "name:" not in compose.read_text().split("services:")[0]
    assert env.read_text().splitlines()[1:] == [
        "COMPOSE_PROJECT_NAME=shop",
        "COMPOSE_PROFILES=debug",
    ]
    write_project(bundle, tmp_path / "shop")  # its own files are replaced
    assert "name: shop" in compose.read_text()  # compose v2 gets the file as resolved


def test_files_sealift_did_not_write_are_never_replaced(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SECRET=1\n")
    with pytest.raises(UsageError, match=r"\.env exists and was not written by sealift"):
        write_project(bundle_for(entries()), tmp_path)
    assert (tmp_path / ".env").read_text() == "SECRET=1\n"
    assert not (tmp_path / "compose.yaml").exists()


def test_up_never_pulls_with_v2_and_never_builds_with_either(tmp_path: Path) -> None:
    bundle = bundle_for(entries())
    v2 = ComposeTool(("docker", "compose"), "2.26.1").up_command(bundle, tmp_path)
    v1 = ComposeTool(("docker-compose",), "1.29.2").up_command(bundle, tmp_path)
    assert v2[-5:] == ["up", "--detach", "--no-build", "--pull", "never"]
    assert v1[-3:] == ["up", "--detach", "--no-build"]
    for command in (v1, v2):
        assert command[command.index("--profile") :][:2] == ["--profile", "debug"]
        assert command[command.index("--project-name") :][:2] == ["--project-name", "shop"]


def test_the_archive_size_counts_the_bundle_part(tmp_path: Path) -> None:
    archive = tmp_path / "stack.tar"
    copy(MemorySource(entries()), ArchiveSink(archive), CopyOptions("gzip"))
    with ArchiveSource(archive) as source:
        written = source.entries()
        part = bundle_for(written).files()
        assert archive_size(written) == archive.stat().st_size
        out = io.BytesIO()
        write_archive(written, out, extra_files=part)
        assert archive_size(written, part) == len(out.getvalue())


def test_a_multi_platform_image_keeps_its_index_digest_through_bundle_json() -> None:
    written = entries()
    image = next(written[0].images())
    plain = service_image("shop/web:1", "sha256:" + "0" * 64, written)  # found by its tag
    assert plain.engine_ids == {str(image.id), plain.manifest_digest}
    indexed = replace(plain, index_digest="sha256:" + "1" * 64)
    bundle = Bundle("shop", (), {"web": indexed}, COMPOSE)
    assert read_bundle(bundle.files(), "stack.tar").services["web"] == indexed
    assert "sha256:" + "1" * 64 in indexed.engine_ids
