"""Split media: parts that join back byte for byte, each part checked and named when wrong,
written all-or-nothing, read by every command given the base name or the first part."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealift.digest import Digest
from sealift.ends.archive import ArchiveSink, ArchiveSource
from sealift.ends.base import WriteResult
from sealift.errors import SealiftError, UsageError
from sealift.formats.write import archive_size, write_archive
from sealift.model import Entry
from sealift.samples import write_demo_archive
from sealift.split import (
    FAT32_LIMIT,
    MAX_PARTS,
    PartError,
    PartsIndex,
    SplitArchive,
    SplitWriter,
    find_split,
    open_parts,
    parse_size,
    write_split,
)
from sealift.transfer import CopyOptions, copy, verify
from tests.support.cli import sealift_env

UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


# ---------------------------------------------------------------------------------- sizes
@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(sorted(UNITS)), st.booleans())
def test_sizes_use_binary_units_in_any_spelling(number: int, unit: str, long_form: bool) -> None:
    text = f"{number}{unit}{'iB' if long_form and unit else ''}"
    assert parse_size(text) == number * UNITS[unit]
    assert parse_size(text.lower()) == number * UNITS[unit]


def test_common_sizes() -> None:
    assert parse_size("4G") == 4 * 1024**3
    assert parse_size("700M") == 700 * 1024**2
    assert parse_size("fat32") == FAT32_LIMIT == 4 * 1024**3 - 1
    assert parse_size(" 512 ") == 512


@pytest.mark.parametrize("text", ["", "0", "G", "-1M", "1.5G", "4X", "4 GiBs", "iB", "4MB"])
def test_sizes_that_mean_nothing_or_something_ambiguous_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


# ----------------------------------------------------------------------- split and join
def split_bytes(directory: Path, data: bytes, part_size: int, chunk: int = 4096) -> SplitArchive:
    base = directory / "stack.tar"

    def write(out: io.RawIOBase) -> None:
        for start in range(0, len(data), chunk):
            out.write(data[start : start + chunk])

    write_split(base, part_size, write)  # type: ignore[arg-type]
    return SplitArchive(base)


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=5000),
    part_size=st.integers(min_value=1, max_value=6000),
    chunk=st.integers(min_value=1, max_value=3000),
)
def test_parts_join_back_to_the_same_bytes(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, part_size: int, chunk: int
) -> None:
    if len(data) > part_size * MAX_PARTS:
        return
    directory = tmp_path_factory.mktemp("split")
    split = split_bytes(directory, data, part_size, chunk)
    index = split.read_index()
    assert index.total_size == len(data)
    assert len(index.parts) == max(1, -(-len(data) // part_size))
    assert all(part.size == part_size for part in index.parts[:-1])
    concatenated = b"".join(split.part(n).read_bytes() for n in range(len(index.parts)))
    assert concatenated == data
    with open_parts(split.base) as joined:
        assert joined.read() == data
    assert sorted(p.name for p in directory.iterdir()) == [
        *(p.name for p in index.parts),
        "stack.tar.parts.json",
    ]


def three_parts(tmp_path: Path) -> SplitArchive:
    return split_bytes(tmp_path, bytes(range(256)) * 10, 1000)  # 1000 + 1000 + 560


def read_all(split: SplitArchive) -> bytes:
    with open_parts(split.base) as joined:
        return joined.read()


def test_a_changed_part_is_named(tmp_path: Path) -> None:
    split = three_parts(tmp_path)
    data = bytearray(split.part(1).read_bytes())
    data[10] ^= 1
    split.part(1).write_bytes(bytes(data))
    with pytest.raises(PartError, match=r"stack\.tar\.001 changed: its sha256 is"):
        read_all(split)


def test_swapped_parts_are_named_as_out_of_order(tmp_path: Path) -> None:
    split = split_bytes(tmp_path, os.urandom(3000), 1000)
    first, second = split.part(0).read_bytes(), split.part(1).read_bytes()
    split.part(0).write_bytes(second)
    split.part(1).write_bytes(first)
    with pytest.raises(PartError, match=r"stack\.tar\.000 holds what .* lists as stack\.tar\.001"):
        read_all(split)


def test_a_truncated_part_is_named_before_anything_is_read(tmp_path: Path) -> None:
    split = three_parts(tmp_path)
    with split.part(2).open("r+b") as file:
        file.truncate(100)
    with pytest.raises(PartError, match=r"stack\.tar\.002 is truncated: 100 of 560 bytes"):
        open_parts(split.base)


def test_a_missing_part_is_named(tmp_path: Path) -> None:
    split = three_parts(tmp_path)
    split.part(1).unlink()
    with pytest.raises(PartError, match=r"stack\.tar\.001 is missing: .* has 3 parts"):
        open_parts(split.base)


def test_an_unlisted_part_beside_the_others_is_refused(tmp_path: Path) -> None:
    split = three_parts(tmp_path)
    split.part(3).write_bytes(b"left over")
    with pytest.raises(PartError, match=r"stack\.tar\.003 is not listed"):
        open_parts(split.base)


def test_a_missing_sidecar_says_how_to_join_the_parts_by_hand(tmp_path: Path) -> None:
    split = three_parts(tmp_path)
    split.sidecar.unlink()
    with pytest.raises(PartError, match=r"parts\.json is missing.*cat .*stack\.tar\.\[0-9\]\*"):
        open_parts(split.part(0))


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(format="other/1"),
        lambda d: d.update(archive="other.tar"),
        lambda d: d["parts"][0].update(name="../../etc/passwd"),
        lambda d: d["parts"][0].update(sha256="00"),
        lambda d: d["parts"][0].update(size=-1),
        lambda d: d.update(total_size=1),
        lambda d: d.update(parts=[]),
        lambda d: d["parts"].reverse(),
    ],
)
def test_a_malformed_sidecar_is_refused(tmp_path: Path, change: object) -> None:
    split = three_parts(tmp_path)
    document = json.loads(split.sidecar.read_bytes())
    change(document)  # type: ignore[operator]
    split.sidecar.write_text(json.dumps(document))
    with pytest.raises(PartError, match="not a valid parts list"):
        split.read_index()


def test_the_sidecar_round_trips(tmp_path: Path) -> None:
    index = three_parts(tmp_path).read_index()
    assert PartsIndex.parse(index.to_json(), "stack.tar", "sidecar") == index
    assert [part.size for part in index.parts] == [1000, 1000, 560]


# ---------------------------------------------------------------------- what a path names
def test_paths_that_name_a_split_archive(tmp_path: Path) -> None:
    split = three_parts(tmp_path)
    for name in ("stack.tar", "stack.tar.000", "stack.tar.001", "stack.tar.parts.json"):
        assert find_split(tmp_path / name) == split
    single = tmp_path / "single.tar"
    single.write_bytes(b"x")
    assert find_split(single) is None
    lone = tmp_path / "backup.000"
    lone.write_bytes(b"x")
    assert find_split(lone) is None, "a lone .000 without a sidecar is an ordinary file"


# ------------------------------------------------------------------------- atomic writing
def test_a_failed_write_leaves_no_part_behind(tmp_path: Path) -> None:
    def write(out: io.RawIOBase) -> None:
        out.write(b"x" * 2500)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_split(tmp_path / "stack.tar", 1000, write)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_a_new_split_replaces_every_trace_of_the_old_archive(tmp_path: Path) -> None:
    split_bytes(tmp_path, b"a" * 5000, 1000)
    (tmp_path / "stack.tar.sig").write_text("stale")
    (tmp_path / "stack.tar").write_bytes(b"an unsplit archive of the same name")
    split = split_bytes(tmp_path, b"b" * 1500, 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "stack.tar.000",
        "stack.tar.001",
        "stack.tar.parts.json",
    ]
    assert read_all(split) == b"b" * 1500


def test_a_commit_interrupted_half_way_leaves_no_half_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = SplitWriter(tmp_path / "stack.tar", 1000)
    writer.write(b"c" * 2500)
    renames = 0
    real_replace = Path.replace

    def replace_then_interrupt(self: Path, target: Path) -> Path:
        nonlocal renames
        renames += 1
        if renames == 2:
            raise KeyboardInterrupt
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        writer.commit()
    writer.close()
    assert list(tmp_path.iterdir()) == []


def test_more_parts_than_the_numbering_holds_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"makes 1001 parts, more than 1000"):
        write_split(tmp_path / "stack.tar", 1, lambda out: None, size=MAX_PARTS + 1)
    writer = SplitWriter(tmp_path / "stack.tar", 1)
    with pytest.raises(UsageError, match="more than 1000"):
        writer.write(b"x" * (MAX_PARTS + 1))
    writer.close()
    assert list(tmp_path.iterdir()) == []


def test_not_enough_free_space_is_refused_saying_how_much_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1024**2))
    with pytest.raises(SealiftError, match=r"needs 3\.0 MiB, 1\.0 MiB free"):
        write_split(tmp_path / "stack.tar", 1024**2, lambda out: None, size=3 * 1024**2)


# ----------------------------------------------------------------------- with archives
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_archive(tmp_path_factory.mktemp("demo") / "in.tar")


def split_archive(demo: Path, directory: Path, part_size: int = 500_000) -> SplitArchive:
    with ArchiveSource(demo) as source:
        copy(source, ArchiveSink(directory / "stack.tar", split=part_size), CopyOptions("gzip"))
    return SplitArchive(directory / "stack.tar")


def test_the_archive_size_is_known_before_writing(demo: Path) -> None:
    with ArchiveSource(demo) as source:
        for codec in ("gzip", "zstd", "none"):
            sink = RecordingSink()
            copy(source, sink, CopyOptions(codec))
            assert sink.sizes[0] == sink.sizes[1]


class RecordingSink(ArchiveSink):
    def __init__(self) -> None:
        super().__init__(io.BytesIO())
        self.sizes: tuple[int, int] = (0, 0)

    def write(self, entries: list[Entry], *, omit: set[Digest] | None = None) -> WriteResult:
        out = io.BytesIO()
        write_archive(entries, out)
        self.sizes = (archive_size(entries), len(out.getvalue()))
        return super().write(entries, omit=omit)


@pytest.mark.parametrize("name", ["stack.tar", "stack.tar.000"])
def test_a_split_archive_verifies_by_its_name_or_its_first_part(
    demo: Path, tmp_path: Path, name: str
) -> None:
    split = split_archive(demo, tmp_path)
    assert len(split.read_index().parts) == 3
    with ArchiveSource(tmp_path / name, keep_layers=False) as source:
        report = verify(source)
    assert (report.images, report.layers) == (3, 4)


def test_cat_of_the_parts_is_the_archive_plain_tools_read(demo: Path, tmp_path: Path) -> None:
    (tmp_path / "split").mkdir()
    split = split_archive(demo, tmp_path / "split")
    whole = tmp_path / "whole.tar"
    with ArchiveSource(demo) as source:
        copy(source, ArchiveSink(whole), CopyOptions("gzip"))
    joined = b"".join(split.part(n).read_bytes() for n in range(3))
    assert joined == whole.read_bytes()
    with ArchiveSource(io.BytesIO(joined), keep_layers=False) as source:
        assert verify(source).images == 3


def test_a_changed_last_part_is_caught_even_past_the_end_of_the_tar(
    demo: Path, tmp_path: Path
) -> None:
    split = split_archive(demo, tmp_path)
    last = split.part(2)
    data = bytearray(last.read_bytes())
    data[-1] ^= 1  # in the tar's zero padding, which a tar reader never looks at
    last.write_bytes(bytes(data))
    with (
        pytest.raises(PartError, match=r"stack\.tar\.002 changed"),
        ArchiveSource(split.base) as source,
    ):
        source.entries()


def test_a_layer_in_a_changed_middle_part_is_named_by_part(demo: Path, tmp_path: Path) -> None:
    split = split_archive(demo, tmp_path)
    data = bytearray(split.part(1).read_bytes())
    data[len(data) // 2] ^= 0xFF
    split.part(1).write_bytes(bytes(data))
    result = subprocess.run(
        [sys.executable, "-m", "sealift", "verify", str(split.base)],
        capture_output=True,
        text=True,
        env=sealift_env(),
    )
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("sealift: error: ")
    assert "stack.tar.001 changed" in result.stderr


def test_convert_split_writes_parts_and_refuses_a_layout_or_stdout(
    demo: Path, tmp_path: Path
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sealift", *args],
            capture_output=True,
            text=True,
            env=sealift_env(),
        )

    ok = run("convert", str(demo), str(tmp_path / "out.tar"), "--split", "500K", "-q")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out.tar.002").is_file() and not (tmp_path / "out.tar").exists()
    inspected = run("inspect", str(tmp_path / "out.tar.000"), "--json")
    assert len(json.loads(inspected.stdout)["images"]) == 3
    layout = run("convert", str(demo), f"oci:{tmp_path / 'layout'}", "--split", "1M")
    assert layout.returncode == 2 and "not OCI layouts" in layout.stderr
    bad = run("convert", str(demo), str(tmp_path / "x.tar"), "--split", "4GB")
    assert bad.returncode == 2 and "binary" in bad.stderr
    to_stdout = run("convert", str(demo), "-", "--split", "1M")
    assert to_stdout.returncode == 2 and "file name" in to_stdout.stderr
