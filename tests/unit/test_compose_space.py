"""Free-space checks before a compose load: every place named with what it needs, in one line,
before any work; needs on one disk add up. The probe is faked; the CLI test runs in-process."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealift import space
from sealift.cli import cli
from sealift.errors import SealiftError
from sealift.space import Need, check, load_needs

MB = 1 << 20
REMOTE_ENGINE = "tcp://127.0.0.1:9"  # never asked: a remote engine's disk is not checked


def one_disk(_: Path) -> int:
    return 1


def disk_per_directory(directory: Path) -> int:
    return hash(directory)


def test_enough_room_everywhere_passes() -> None:
    needs = [Need("the spool", Path("/spool"), 5 * MB), Need("the data root", Path("/d"), 5 * MB)]
    check(needs, "loading x", probe=lambda _: 6 * MB, device=disk_per_directory)


def test_a_short_disk_is_refused_in_one_line_naming_place_need_and_free() -> None:
    with pytest.raises(SealiftError) as raised:
        check(
            [Need("the spool", Path("/spool"), 300 * MB)],
            "loading stack.tar",
            probe=lambda _: 100 * MB,
            device=disk_per_directory,
        )
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("not enough free space for loading stack.tar: ")
    assert "the spool /spool needs 300.0 MiB" in message
    assert message.endswith(", 100.0 MiB free")


def test_needs_on_one_disk_add_up() -> None:
    needs = [Need("the spool", Path("/tmp"), 60 * MB), Need("the data root", Path("/d"), 60 * MB)]
    check(needs, "x", probe=lambda _: 100 * MB, device=disk_per_directory)
    with pytest.raises(SealiftError, match=r"the spool /tmp \(60.*\+ the data root /d"):
        check(needs, "x", probe=lambda _: 100 * MB, device=one_disk)


def test_only_the_short_disk_is_named() -> None:
    def free(directory: Path) -> int:
        return 10 * MB if directory == Path("/small") else 900 * MB

    needs = [Need("the spool", Path("/small"), 20 * MB), Need("the data root", Path("/d"), 20 * MB)]
    with pytest.raises(SealiftError) as raised:
        check(needs, "x", probe=free, device=disk_per_directory)
    assert "/small" in str(raised.value) and "/d " not in str(raised.value)


def test_a_disk_whose_free_space_is_unknown_is_not_checked() -> None:
    check([Need("the spool", Path("/gone"), 10**15)], "x", probe=lambda _: None, device=one_disk)


def test_a_plain_tar_needs_room_in_the_data_root_only(tmp_path: Path) -> None:
    archive = tmp_path / "stack.tar"
    archive.write_bytes(b"x" * 4096)
    assert load_needs(str(archive), tmp_path / "root") == [
        Need("the engine's data root", tmp_path / "root", 4096)
    ]
    assert load_needs(str(archive), None) == []


def test_a_compressed_bundle_also_needs_room_in_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALIFT_TMPDIR", str(tmp_path / "spool"))
    archive = tmp_path / "stack.tar.gz"
    archive.write_bytes(gzip.compress(b"x" * 4096))
    size = archive.stat().st_size
    assert load_needs(str(archive), None) == [
        Need("the spool (SEALIFT_TMPDIR, TMPDIR)", tmp_path / "spool", size)
    ]


def test_stdin_has_no_size_to_check() -> None:
    assert load_needs("-", Path("/var/lib/docker")) == []


def test_compose_load_refuses_before_any_work_when_the_spool_is_too_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALIFT_TMPDIR", str(tmp_path))
    monkeypatch.setattr(space, "free_bytes", lambda _: 10)
    archive = tmp_path / "stack.tar.gz"
    archive.write_bytes(gzip.compress(b"not even a tar"))
    site = tmp_path / "site"
    args = ["compose", "load", str(archive), "-H", REMOTE_ENGINE, "--project-dir", str(site)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    line = result.output.strip()
    assert "\n" not in line
    assert f"not enough free space for loading {archive}: the spool" in line
    assert not site.exists()
