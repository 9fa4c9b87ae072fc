"""Round trips over every pair of ends: images survive with their IDs, tags and layers."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealift import compression
from sealift.digest import sha256_of
from sealift.ends.archive import ArchiveSink, ArchiveSource
from sealift.ends.base import Sink, Source
from sealift.ends.layout import LayoutSink, LayoutSource
from sealift.ends.memory import MemorySink, MemorySource, image_from_layers
from sealift.model import Entry
from sealift.samples import SampleImage, SampleLayer, demo_images, write_docker_save
from sealift.transfer import CopyOptions, Selection, copy, verify

CODECS = list(compression.LAYER_CODECS)


def summary(entries: list[Entry]) -> dict[str, tuple[set[str], tuple[str, ...]]]:
    """Image ID -> (every tag pointing at it, its diff_ids)."""
    result: dict[str, tuple[set[str], tuple[str, ...]]] = {}
    for entry in entries:
        for image in entry.images():
            diff_ids = tuple(map(str, image.config.diff_ids))
            tags, _ = result.setdefault(str(image.id), (set(), diff_ids))
            tags.update(str(t) for t in entry.tags)
    return result


@pytest.fixture
def docker_save(tmp_path: Path) -> Path:
    path = tmp_path / "docker-save.tar"
    with path.open("wb") as out:
        write_docker_save(demo_images(), out)
    return path


def open_end(kind: str, path: Path) -> Source:
    return LayoutSource(path) if kind == "layout" else ArchiveSource(path)


def make_sink(kind: str, path: Path) -> Sink:
    return LayoutSink(path) if kind == "layout" else ArchiveSink(path)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("first", ["archive", "layout"])
@pytest.mark.parametrize("second", ["archive", "layout"])
def test_images_survive_every_pair_of_ends(
    docker_save: Path, tmp_path: Path, codec: str, first: str, second: str
) -> None:
    original = summary(ArchiveSource(docker_save).entries())
    one, two = tmp_path / f"one-{first}", tmp_path / f"two-{second}"
    copy(ArchiveSource(docker_save), make_sink(first, one), CopyOptions(codec))
    copy(open_end(first, one), make_sink(second, two), CopyOptions(codec))
    result = open_end(second, two)
    assert summary(result.entries()) == original
    assert verify(open_end(second, two)).images == len(original)
    codecs = {layer.codec for e in result.entries() for i in e.images() for layer in i.layers}
    assert codecs == {codec}


@pytest.mark.parametrize("wrapper", ["gzip", "zstd", "xz"])
def test_compressed_streams_are_read_without_unpacking_first(
    docker_save: Path, tmp_path: Path, wrapper: str
) -> None:
    tool = {"gzip": ["gzip", "-c"], "zstd": ["zstd", "-q", "-c"], "xz": ["xz", "-c"]}[wrapper]
    wrapped = tmp_path / f"wrapped.{wrapper}"
    wrapped.write_bytes(
        subprocess.run([*tool, str(docker_save)], check=True, capture_output=True).stdout
    )
    with wrapped.open("rb") as stream:
        source = ArchiveSource(stream)
        sink = MemorySink()
        copy(source, sink, CopyOptions("zstd"))
        source.close()
    assert summary(sink.written) == summary(ArchiveSource(docker_save).entries())


def test_same_input_gives_a_byte_identical_archive(docker_save: Path, tmp_path: Path) -> None:
    for name in ("a.tar", "b.tar"):
        copy(ArchiveSource(docker_save), ArchiveSink(tmp_path / name), CopyOptions("zstd"))
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_archive_entries_are_owned_by_root_with_zero_mtime(
    docker_save: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.tar"
    copy(ArchiveSource(docker_save), ArchiveSink(out))
    with tarfile.open(out) as tar:
        members = tar.getmembers()
    assert {(m.uid, m.gid, m.mtime, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    blob_names = [m.name for m in members if m.name.startswith("blobs/sha256/")]
    assert len(blob_names) == len(set(blob_names))


def test_shared_layers_are_stored_once(docker_save: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tar"
    copy(ArchiveSource(docker_save), ArchiveSink(out))
    with tarfile.open(out) as tar:
        blobs = [m for m in tar.getmembers() if m.name.startswith("blobs/sha256/") and m.isfile()]
    # 4 distinct layers + 3 configs + 3 manifests
    assert len(blobs) == 10


def test_layers_already_in_the_asked_codec_are_copied_not_recompressed(
    docker_save: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "first.tar", tmp_path / "second.tar"
    copy(ArchiveSource(docker_save), ArchiveSink(first), CopyOptions("zstd", level=7))
    copy(ArchiveSource(first), ArchiveSink(second), CopyOptions("zstd", level=1))
    digests = [
        {layer.digest for e in ArchiveSource(p).entries() for i in e.images() for layer in i.layers}
        for p in (first, second)
    ]
    assert digests[0] == digests[1]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_a_streamed_source_is_compressed_at_the_level_asked(
    docker_save: Path, tmp_path: Path, codec: str
) -> None:
    """A pipe is transcoded as it arrives (as a save from an engine is): --level still holds."""
    sizes = []
    for level in (1, 9):
        out = tmp_path / f"{codec}-{level}.tar"
        with docker_save.open("rb") as raw:
            piped = io.BufferedReader(io.BytesIO(raw.read()))  # not a file: read as a stream
        source = ArchiveSource(piped)
        try:
            copy(source, ArchiveSink(out), CopyOptions(codec, level=level))
        finally:
            source.close()
        sizes.append(out.stat().st_size)
    assert sizes[1] < sizes[0]


def test_tag_selection_takes_only_the_named_images(docker_save: Path) -> None:
    sink = MemorySink()
    copy(ArchiveSource(docker_save), sink, CopyOptions(selection=Selection(("sample/app:1.1",))))
    assert [str(t) for e in sink.written for t in e.tags] == ["docker.io/sample/app:1.1"]


layer_files = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=8), st.binary(max_size=4096), min_size=1, max_size=4
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    layers=st.lists(layer_files, min_size=1, max_size=3),
    codec=st.sampled_from(CODECS),
)
def test_random_images_round_trip_through_an_archive(
    tmp_path: Path, layers: list[dict[str, bytes]], codec: str
) -> None:
    image = SampleImage(("random/image:1",), tuple(SampleLayer(files) for files in layers))
    buffer = io.BytesIO()
    write_docker_save([image], buffer)
    archive = tmp_path / f"random-{codec}.tar"
    source = ArchiveSource(io.BytesIO(buffer.getvalue()))
    copy(source, ArchiveSink(archive), CopyOptions(codec))
    source.close()
    back = ArchiveSource(archive).entries()
    assert [str(i.id) for e in back for i in e.images()] == [str(sha256_of(image.config()))]
    verify(ArchiveSource(archive))


def test_memory_ends_compose_with_copy() -> None:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    entry = image_from_layers([layer.getvalue()], ("mem/image:1",))
    sink = MemorySink()
    copy(MemorySource([entry]), sink, CopyOptions(None))
    assert summary(sink.written) == summary([entry])


def test_library_cli_module_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sealift", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "sealift" in result.stdout
