"""Compression codecs and the layer pipeline: round trips, detection, caps."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import IO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealift import compression
from sealift.blobs import BlobStore
from sealift.digest import sha256_of
from sealift.errors import (
    DigestMismatchError,
    InvalidArchiveError,
    LimitExceededError,
    UsageError,
)
from sealift.formats.files import StreamFiles
from sealift.layers import LayerDigester, TarShape, check_layer

CODECS = list(compression.LAYER_CODECS)


def compress(data: bytes, codec: str, level: int | None = None) -> bytes:
    out = io.BytesIO()
    writer = compression.open_compressor(out, codec, level)
    writer.write(data)
    writer.close()
    return out.getvalue()


def decompress(data: bytes, codec: str) -> bytes:
    return compression.open_decompressed(io.BytesIO(data), codec, "test").read()


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=200_000), codec=st.sampled_from(CODECS))
def test_compressed_data_decompresses_to_the_original(data: bytes, codec: str) -> None:
    assert decompress(compress(data, codec), codec) == data


@settings(max_examples=20, deadline=None)
@given(data=st.binary(min_size=1, max_size=50_000), codec=st.sampled_from(["gzip", "zstd"]))
def test_compressed_data_is_detected_by_its_magic(data: bytes, codec: str) -> None:
    assert compression.sniff(compress(data, codec)[:8]) == codec


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_compression_is_deterministic(codec: str) -> None:
    data = b"sealift " * 100_000
    assert compress(data, codec) == compress(data, codec)


@pytest.mark.parametrize(("codec", "level"), [("gzip", 0), ("gzip", 9), ("zstd", 22), ("zstd", -5)])
def test_every_level_a_codec_has_compresses(codec: str, level: int) -> None:
    assert (
        compression.open_decompressed(
            io.BytesIO(compress(b"layer" * 100, codec, level)), codec, "data"
        ).read()
        == b"layer" * 100
    )


@pytest.mark.parametrize(("codec", "level"), [("gzip", -1), ("gzip", 10), ("zstd", 23)])
def test_a_level_the_codec_lacks_is_a_usage_error(codec: str, level: int) -> None:
    with pytest.raises(UsageError, match=f"{codec} has no level {level}"):
        compression.open_compressor(io.BytesIO(), codec, level)


def test_plain_tar_is_not_mistaken_for_compressed_data() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("empty"))
    assert compression.sniff(buffer.getvalue()[:8]) == compression.NONE


def test_concatenated_zstd_frames_are_read_as_one_stream() -> None:
    assert decompress(compress(b"first ", "zstd") + compress(b"second", "zstd"), "zstd") == (
        b"first second"
    )


ZEROS = 64 * 1024 * 1024


def read_all(reader: IO[bytes]) -> int:
    total = 0
    while chunk := reader.read(1024 * 1024):
        total += len(chunk)
    return total


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_zeros_that_compress_past_a_thousand_to_one_are_not_a_bomb(codec: str) -> None:
    blob = compress(bytes(ZEROS), codec)
    assert ZEROS / len(blob) > 250, "the ratio the old guard refused"
    reader = compression.open_decompressed(io.BytesIO(blob), codec, "zeros")
    assert read_all(reader) == ZEROS


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_output_past_the_recorded_size_is_refused_at_once(codec: str) -> None:
    blob = compress(bytes(ZEROS), codec)
    guard = compression.ExpansionGuard("layer 1/2", recorded=1024 * 1024)
    reader = compression.DecompressingReader(io.BytesIO(blob), codec, "layer 1/2", guard)
    with pytest.raises(LimitExceededError, match="recorded uncompressed size of 1048576"):
        while reader.read(256 * 1024):
            assert reader.expanded <= 2 * 1024 * 1024, "not refused soon after the lie"


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_output_past_the_cap_is_refused(codec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALIFT_MAX_UNCOMPRESSED", str(8 * 1024 * 1024))
    reader = compression.open_decompressed(io.BytesIO(compress(bytes(ZEROS), codec)), codec, "bomb")
    with pytest.raises(LimitExceededError, match="SEALIFT_MAX_UNCOMPRESSED"):
        read_all(reader)


def test_the_cap_is_far_above_any_real_layer() -> None:
    assert compression.ExpansionGuard("layer").limit >= 1 << 40


def test_a_cap_that_is_not_a_number_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALIFT_MAX_UNCOMPRESSED", "1T")
    with pytest.raises(UsageError, match="SEALIFT_MAX_UNCOMPRESSED"):
        compression.max_uncompressed()


def fake_free_space(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """A disk with ``free`` bytes free before sealift writes, less what it has written since."""
    monkeypatch.setattr(compression, "free_space", lambda fd: free - os.fstat(fd).st_size)


def test_decompressing_into_a_file_stops_before_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transcoding to uncompressed output whose size nobody recorded: the free space bounds it."""
    fake_free_space(monkeypatch, compression.SPACE_RESERVE + 100 * 1024 * 1024)
    blob = compress(bytes(4 * ZEROS), "zstd")
    digester = LayerDigester("zstd", "layer 1/1", target="none", check_tar=False)
    with (tmp_path / "out").open("wb") as out, pytest.raises(LimitExceededError, match="free"):
        digester.run(io.BytesIO(blob), out)
    assert (tmp_path / "out").stat().st_size < 4 * ZEROS


def test_a_blob_is_not_written_where_it_does_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_free_space(monkeypatch, compression.SPACE_RESERVE + 1000)
    with (tmp_path / "out").open("wb") as out:
        compression.ensure_room(out, 1000, "blob")
        with pytest.raises(LimitExceededError, match="blob: 1001 B more would leave less than"):
            compression.ensure_room(out, 1001, "blob")
        compression.ensure_room(io.BytesIO(), 1 << 50, "a stream with no disk behind it")


def test_a_spooled_archive_member_must_fit_on_the_spool_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed archive (here gzip-wrapped) whose member would not fit in the spool."""
    big = bytes(range(256)) * 8192  # 2 MiB, not layer-like: spooled as it is
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("blobs/sha256/" + "a" * 64)
        info.size = len(big)
        tar.addfile(info, io.BytesIO(big))
    fake_free_space(monkeypatch, compression.SPACE_RESERVE + len(big) - 1)
    stream = compression.open_decompressed(
        io.BytesIO(compress(archive.getvalue(), "gzip")), "gzip", "x"
    )
    with pytest.raises(LimitExceededError, match="would leave less than"):
        StreamFiles(stream, BlobStore(tmp_path / "spool"))
    assert not any(p.is_file() for p in (tmp_path / "spool").rglob("*"))


def test_a_huge_metadata_member_is_refused_at_its_header(tmp_path: Path) -> None:
    header = tarfile.TarInfo("manifest.json")
    header.size = 8 << 30
    stream = io.BytesIO(header.tobuf(tarfile.GNU_FORMAT))
    with pytest.raises(LimitExceededError, match=r"manifest\.json"):
        StreamFiles(stream, BlobStore(tmp_path / "spool"))


def test_a_huge_tar_extension_header_is_refused(tmp_path: Path) -> None:
    """tarfile reads a pax header whole: one claiming gigabytes must not be read into memory."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 8 << 30
    stream = io.BytesIO(header.tobuf(tarfile.GNU_FORMAT) + bytes(1 << 20))
    with pytest.raises(LimitExceededError, match="tar header"):
        StreamFiles(stream, BlobStore(tmp_path / "spool"))


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_corrupt_compressed_data_is_an_archive_error(codec: str) -> None:
    data = bytearray(compress(bytes(range(256)) * 4000, codec))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(InvalidArchiveError):
        decompress(bytes(data), codec)


@settings(max_examples=25, deadline=None)
@given(
    data=st.binary(max_size=100_000),
    stored=st.sampled_from(CODECS),
    target=st.sampled_from(CODECS),
)
def test_layer_digester_gives_blob_digest_and_diff_id_in_one_pass(
    data: bytes, stored: str, target: str
) -> None:
    blob = compress(data, stored)
    out = io.BytesIO()
    digester = LayerDigester(stored, "layer", target=target, check_tar=False)
    digester.run(io.BytesIO(blob), out)
    assert digester.raw_digest == sha256_of(blob)
    assert digester.diff_id == sha256_of(data)
    assert decompress(out.getvalue(), target) == data
    if target == stored:
        assert out.getvalue() == blob


def test_layer_check_names_both_digests_on_mismatch() -> None:
    digester = LayerDigester("none", "layer", check_tar=False)
    digester.run(io.BytesIO(b"actual"), None)
    with pytest.raises(DigestMismatchError) as error:
        check_layer(
            what="app:1 layer 2/3",
            expected_digest=None,
            expected_size=None,
            expected_diff_id=sha256_of(b"expected"),
            digester=digester,
        )
    message = str(error.value)
    assert "app:1 layer 2/3" in message
    assert str(sha256_of(b"actual")) in message
    assert str(sha256_of(b"expected")) in message


def make_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


tar_files = st.dictionaries(
    st.text(min_size=1, max_size=150).filter(lambda n: "\0" not in n and n.strip("/.")),
    st.binary(max_size=3000),
    max_size=5,
)


@settings(max_examples=40, deadline=None)
@given(files=tar_files, chunk=st.integers(1, 4096))
def test_any_tar_has_the_shape_of_a_tar_however_it_is_split(
    files: dict[str, bytes], chunk: int
) -> None:
    data = make_tar(files)
    shape = TarShape("layer")
    for start in range(0, len(data), chunk):
        shape.feed(memoryview(data)[start : start + chunk])
    shape.finish()


@settings(max_examples=40, deadline=None)
@given(files=tar_files, last=st.binary(max_size=2000), data=st.data())
def test_a_tar_cut_short_inside_a_file_is_refused(
    files: dict[str, bytes], last: bytes, data: st.DataObject
) -> None:
    payload = last + b"\x01"  # ends in a non-zero byte, so the cut below lands inside it
    whole = make_tar({**files, "zz-last-file": payload})
    end = len(whole.rstrip(b"\0"))
    cut = end - data.draw(st.integers(1, len(payload)))
    shape = TarShape("layer")
    shape.feed(memoryview(whole)[:cut])
    with pytest.raises(InvalidArchiveError):
        shape.finish()


def test_bytes_that_are_not_a_tar_are_refused() -> None:
    shape = TarShape("layer 1/1")
    with pytest.raises(InvalidArchiveError, match="not a tar archive"):
        shape.feed(memoryview(b"#!/bin/sh\necho this is a script, not a layer\n" * 20))


def test_an_empty_layer_is_a_tar() -> None:
    shape = TarShape("layer")
    shape.feed(memoryview(bytes(1024)))
    shape.finish()
