"""A layer's path set from its tar headers: the same names tar itself lists."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealift.delta import TarPaths, list_tar_paths
from sealift.errors import InvalidArchiveError, LimitExceededError
from tests.support.require import require_tools

FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}

segment = st.text(
    st.characters(codec="utf-8", exclude_characters="/\0", exclude_categories=["Cs"]),
    min_size=1,
    max_size=40,
).filter(lambda part: part not in {".", ".."})
names = st.lists(segment, min_size=1, max_size=6).map("/".join)


def tar_of(members: dict[str, bytes | None], tar_format: int) -> bytes:
    """A tar of files (bytes) and directories (None), in the given format."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Trickle(io.RawIOBase):
    """A pipe-like stream: not seekable, and it hands out a few bytes at a time."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = io.BytesIO(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._data.read(min(len(buffer), self._step))
        buffer[: len(data)] = data
        return len(data)


@settings(max_examples=60, deadline=None)
@given(
    members=st.dictionaries(names, st.one_of(st.none(), st.binary(max_size=2000)), max_size=12),
    tar_format=st.sampled_from(["gnu", "pax"]),
    step=st.integers(1, 3000),
)
def test_the_paths_are_the_names_tarfile_reads(
    members: dict[str, bytes | None], tar_format: str, step: int
) -> None:
    data = tar_of(members, FORMATS[tar_format])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        expected = frozenset(name.rstrip("/") for name in tar.getnames())
    assert list_tar_paths(io.BytesIO(data)) == expected
    assert list_tar_paths(io.BufferedReader(Trickle(data, step))) == expected


def test_names_are_normalised() -> None:
    data = tar_of(
        {"./etc/": None, "./etc/hosts": b"h", "/abs/file": b"", ".": None}, tarfile.GNU_FORMAT
    )
    assert list_tar_paths(io.BytesIO(data)) == {"etc", "etc/hosts", "abs/file"}


def test_ustar_names_join_their_prefix() -> None:
    long_dir = "d" * 120
    data = tar_of({f"{long_dir}/file": b"x"}, tarfile.USTAR_FORMAT)
    assert data[345:465] == long_dir.encode()  # the name really went into the prefix field
    assert list_tar_paths(io.BytesIO(data)) == {f"{long_dir}/file"}


def test_chunks_of_any_size_give_the_same_paths() -> None:
    data = tar_of({"a" * 200: b"1" * 700, "b": b"", "c/": None}, tarfile.GNU_FORMAT)
    for step in (1, 511, 512, 513, len(data)):
        lister = TarPaths()
        for start in range(0, len(data), step):
            lister.feed(data[start : start + step])
        assert lister.finish() == {"a" * 200, "b", "c"}


def test_the_paths_are_what_gnu_tar_lists(tmp_path: Path) -> None:
    require_tools("tar")
    tree = tmp_path / "tree"
    deep = tree / ("deep-" * 30) / "ünïcode dir"
    deep.mkdir(parents=True)
    (deep / "file with spaces").write_text("x")
    (tree / "link").symlink_to("deep-" * 30)
    (tree / "big").write_bytes(bytes(1_000_000))
    for tar_format in ("gnu", "pax", "posix"):
        archive = tmp_path / f"{tar_format}.tar"
        subprocess.run(
            ["tar", f"--format={tar_format}", "-cf", str(archive), "-C", str(tree), "."],
            check=True,
        )
        listed = subprocess.run(
            ["tar", "-tf", str(archive)], check=True, capture_output=True
        ).stdout.decode()
        expected = {
            name.removeprefix("./").rstrip("/") for name in listed.splitlines() if name != "./"
        }
        with archive.open("rb") as stream:
            assert list_tar_paths(stream) == expected


def test_something_that_is_not_a_tar_is_refused() -> None:
    with pytest.raises(InvalidArchiveError, match="not a tar archive"):
        list_tar_paths(io.BytesIO(b"\x89PNG" + bytes(600)))


def test_a_tar_cut_inside_a_file_is_refused() -> None:
    data = tar_of({"file": b"x" * 5000}, tarfile.GNU_FORMAT)
    with pytest.raises(InvalidArchiveError, match="truncated"):
        list_tar_paths(io.BufferedReader(Trickle(data[:2000], 100)))


def test_an_extended_header_past_its_cap_is_refused() -> None:
    data = tar_of({"n" * 2_000_000: b""}, tarfile.GNU_FORMAT)
    with pytest.raises(LimitExceededError, match="extended tar header"):
        list_tar_paths(io.BytesIO(data))
