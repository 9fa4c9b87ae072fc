"""Layer patches: exact round trips, and every broken patch or wrong base refused."""

from __future__ import annotations

import io
import os
import random
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sealift.delta
from sealift.delta import (
    BadPatchError,
    PatchError,
    PatchHeader,
    RebuildMismatchError,
    WrongBaseError,
    apply_patch,
    can_patch,
    is_worth_it,
    make_patch,
    make_patch_file,
    open_patched,
    patch_budget,
    read_patch_header,
)
from sealift.delta.patch import HEADER_SIZE, MAX_SEGMENT_SIZE, MIN_SAVING
from sealift.digest import sha256_of
from sealift.errors import DigestMismatchError, SealiftError, UsageError
from tests.support.require import require_tools

FAST = 1  # the zstd level for tests: the format does not depend on it


def patch_of(base: bytes, target: bytes, segment_size: int = 1 << 20, **options: object) -> bytes:
    out = io.BytesIO()
    info = make_patch(
        io.BytesIO(base),
        io.BytesIO(target),
        out,
        level=FAST,
        segment_size=segment_size,
        **options,  # type: ignore[arg-type]
    )
    assert info is not None
    assert info.size == len(out.getvalue())
    return out.getvalue()


def rebuilt(patch: bytes, base: bytes) -> bytes:
    out = io.BytesIO()
    apply_patch(io.BytesIO(patch), io.BytesIO(base), out)
    return out.getvalue()


def edited(data: bytes, seed: int, edits: int = 3) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(edits):
        at = rng.randrange(len(out) + 1)
        out[at : at + rng.randrange(64)] = rng.randbytes(rng.randrange(64))
    return bytes(out)


def layer_like(size: int, seed: int) -> bytes:
    """Half random, half text, like a layer of binaries and scripts."""
    rng = random.Random(seed)
    words = [rng.randbytes(6).hex().encode() for _ in range(300)]
    text = b" ".join(rng.choice(words) for _ in range(size // 26 + 1))
    return (rng.randbytes(size // 2) + text)[:size]


@st.composite
def layer_pairs(draw: st.DrawFn) -> tuple[bytes, bytes]:
    base = draw(st.binary(max_size=30_000))
    kind = draw(st.sampled_from(["edited", "identical", "disjoint", "empty base", "empty target"]))
    if kind == "edited":
        return base, edited(base, draw(st.integers(0, 1000)), draw(st.integers(0, 5)))
    if kind == "identical":
        return base, base
    if kind == "empty base":
        return b"", base
    if kind == "empty target":
        return base, b""
    return base, draw(st.binary(max_size=30_000))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=layer_pairs(), segment_size=st.sampled_from([512, 4096, 1 << 20]))
def test_a_patch_rebuilds_its_target_exactly(pair: tuple[bytes, bytes], segment_size: int) -> None:
    base, target = pair
    patch = patch_of(base, target, segment_size)
    assert rebuilt(patch, base) == target
    header = read_patch_header(io.BytesIO(patch))
    assert (header.base_diff_id, header.base_size) == (sha256_of(base), len(base))
    assert (header.target_diff_id, header.target_size) == (sha256_of(target), len(target))


def test_an_edited_layer_costs_the_bytes_that_changed() -> None:
    base = layer_like(4 << 20, seed=1)
    target = edited(base, seed=2)
    patch = patch_of(base, target)
    assert len(patch) < 2048
    assert is_worth_it(len(patch), len(target) // 3)  # even against the layer compressed
    assert rebuilt(patch, base) == target


def test_files_streams_and_paths_make_the_same_patch(tmp_path: Path) -> None:
    base, target = layer_like(300_000, seed=3), layer_like(300_000, seed=4)
    (tmp_path / "base").write_bytes(base)
    (tmp_path / "target").write_bytes(target)
    by_path, by_file = io.BytesIO(), io.BytesIO()
    make_patch(tmp_path / "base", str(tmp_path / "target"), by_path, level=FAST)
    with (tmp_path / "base").open("rb") as b, (tmp_path / "target").open("rb") as t:
        make_patch(b, t, by_file, level=FAST)
    assert by_path.getvalue() == by_file.getvalue() == patch_of(base, target, 64 << 20)


def test_a_target_file_is_read_from_where_it_stands(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"skipped" + TARGET)
    out = io.BytesIO()
    with (tmp_path / "target").open("rb") as target:
        target.seek(len(b"skipped"))
        make_patch(io.BytesIO(BASE), target, out, level=FAST)
    assert rebuilt(out.getvalue(), BASE) == TARGET


def test_a_known_base_diff_id_is_written_as_given() -> None:
    base, target = b"base " * 100, b"target " * 100
    patch = patch_of(base, target, base_diff_id=sha256_of(base))
    assert read_patch_header(io.BytesIO(patch)).base_diff_id == sha256_of(base)


def test_the_frames_are_what_zstd_patch_from_decodes(tmp_path: Path) -> None:
    require_tools("zstd")
    base = layer_like(1 << 20, seed=5)
    target = edited(base, seed=6)
    (tmp_path / "base").write_bytes(base)
    (tmp_path / "frames.zst").write_bytes(patch_of(base, target, 256 * 1024)[HEADER_SIZE:])
    subprocess.run(
        ["zstd", "-q", "-d", "--patch-from", "base", "frames.zst", "-o", "target"],
        cwd=tmp_path,
        check=True,
    )
    assert (tmp_path / "target").read_bytes() == target


# ---------------------------------------------------------------------------- refusals


BASE = layer_like(200_000, seed=7)
TARGET = edited(BASE, seed=8)


@pytest.fixture(scope="module")
def patch() -> bytes:
    return patch_of(BASE, TARGET, segment_size=64 * 1024)


def test_a_base_of_another_size_is_refused_before_anything_is_rebuilt(patch: bytes) -> None:
    with pytest.raises(WrongBaseError, match=f"the base is {len(BASE) - 1} bytes"):
        open_patched(io.BytesIO(patch), io.BytesIO(BASE[:-1]))


def test_a_base_with_other_content_is_named_as_the_wrong_base(patch: bytes) -> None:
    other = edited(BASE, seed=9, edits=1)[: len(BASE)].ljust(len(BASE), b"\0")
    with pytest.raises(WrongBaseError, match=f"patch was made against {sha256_of(BASE)}"):
        rebuilt(patch, other)


@pytest.mark.parametrize("where", [0, 20, HEADER_SIZE - 1, HEADER_SIZE + 3, -20, -1])
def test_a_corrupted_patch_is_refused(patch: bytes, where: int) -> None:
    corrupt = bytearray(patch)
    corrupt[where] ^= 0x55
    with pytest.raises(BadPatchError):
        rebuilt(bytes(corrupt), BASE)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_patch_changed_anywhere_rebuilds_the_target_or_is_refused(
    patch: bytes, data: st.DataObject
) -> None:
    changed = bytearray(patch)
    for _ in range(data.draw(st.integers(1, 3))):
        changed[data.draw(st.integers(0, len(patch) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        result = rebuilt(bytes(changed), BASE)
    except PatchError:
        return
    assert result == TARGET


@pytest.mark.parametrize("keep", [0, 7, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 10, -1])
def test_a_truncated_patch_is_refused(patch: bytes, keep: int) -> None:
    with pytest.raises(BadPatchError):
        rebuilt(patch[:keep], BASE)


@settings(max_examples=30, deadline=None)
@given(cut=st.integers(min_value=1, max_value=10_000))
def test_a_patch_cut_anywhere_is_refused(patch: bytes, cut: int) -> None:
    with pytest.raises(BadPatchError):
        rebuilt(patch[: max(len(patch) - cut, 0)], BASE)


def test_data_after_the_last_frame_is_refused(patch: bytes) -> None:
    with pytest.raises(BadPatchError, match="after its last frame"):
        rebuilt(patch + b"\0", BASE)


def test_a_patch_for_another_layer_is_refused_when_the_layer_is_named(patch: bytes) -> None:
    with pytest.raises(BadPatchError, match="not the layer"):
        open_patched(io.BytesIO(patch), io.BytesIO(BASE), expected_target=sha256_of(b"other"))


def test_a_rebuilt_layer_that_is_not_the_target_is_refused() -> None:
    # a header that promises another target over frames that are intact
    patch = patch_of(BASE, TARGET)
    header = read_patch_header(io.BytesIO(patch))
    lying = PatchHeader(
        header.base_diff_id, header.base_size, sha256_of(b"something else"),
        header.target_size, header.level, header.window_log, header.segment_size,
    )  # fmt: skip
    with pytest.raises(RebuildMismatchError) as refused:
        rebuilt(lying.encode() + patch[HEADER_SIZE:], BASE)
    assert isinstance(refused.value, DigestMismatchError)


def test_nothing_read_from_a_patch_is_declared_good_before_its_end(patch: bytes) -> None:
    other = bytes(len(BASE))
    with (
        open_patched(io.BytesIO(patch), io.BytesIO(other)) as reader,
        pytest.raises(WrongBaseError),
    ):
        while reader.read(4096):
            pass


def test_a_frame_larger_than_the_header_declares_is_refused_before_decoding() -> None:
    # a hostile patch could otherwise make the decoder buffer a whole window
    patch = patch_of(BASE, TARGET, segment_size=MAX_SEGMENT_SIZE)
    header = read_patch_header(io.BytesIO(patch))
    fields = struct.pack(">I", 4096)
    smaller = bytearray(header.encode())
    smaller[15:19] = fields
    smaller[-4:] = struct.pack(">I", zlib.crc32(bytes(smaller[:-4])))
    with pytest.raises(BadPatchError, match="where 4096 were declared"):
        rebuilt(bytes(smaller) + patch[HEADER_SIZE:], BASE)


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [(8, 2, "patch format 2"), (9, 7, "codec 7"), (14, 40, "window log 40")],
)
def test_a_header_this_sealift_cannot_apply_is_refused(
    patch: bytes, offset: int, value: int, message: str
) -> None:
    header = bytearray(patch[:HEADER_SIZE])
    header[offset] = value
    header[-4:] = struct.pack(">I", zlib.crc32(bytes(header[:-4])))
    with pytest.raises(BadPatchError, match=message):
        read_patch_header(io.BytesIO(bytes(header)))


def test_a_layer_is_not_a_patch() -> None:
    with pytest.raises(BadPatchError, match="not a sealift patch"):
        rebuilt(TARGET, BASE)


@settings(max_examples=50)
@given(
    base_size=st.integers(0, 2**40),
    target_size=st.integers(0, 2**40),
    segment_size=st.integers(1, MAX_SEGMENT_SIZE),
    level=st.integers(-(2**31), 2**31 - 1),
    window_log=st.integers(10, 31),
)
def test_a_header_reads_back_as_written(
    base_size: int, target_size: int, segment_size: int, level: int, window_log: int
) -> None:
    header = PatchHeader(
        sha256_of(b"b"), base_size, sha256_of(b"t"), target_size, level, window_log, segment_size
    )
    assert PatchHeader.decode(header.encode()) == header


@given(target_size=st.integers(0, 100_000), segment_size=st.integers(1, 100_000))
def test_frames_cut_the_target_into_whole_segments_and_a_shorter_last(
    target_size: int, segment_size: int
) -> None:
    header = PatchHeader(sha256_of(b""), 0, sha256_of(b""), target_size, 3, 10, segment_size)
    sizes = list(header.frame_sizes())
    assert sum(sizes) == target_size
    assert all(size == segment_size for size in sizes[:-1])
    assert all(0 < size <= segment_size for size in sizes)


# --------------------------------------------------------------------- limits and worth


def test_a_patch_over_its_size_limit_stops_early_and_writes_nothing() -> None:
    out = io.BytesIO()
    base, target = os.urandom(100_000), os.urandom(100_000)
    assert make_patch(io.BytesIO(base), io.BytesIO(target), out, size_limit=50_000) is None
    assert out.getvalue() == b""


def test_a_missing_layer_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SealiftError, match=r"cannot read the base layer: .*No such file"):
        make_patch(tmp_path / "gone", io.BytesIO(b"x"), io.BytesIO())
    with pytest.raises(SealiftError, match=r"cannot read the target layer: .*No such file"):
        make_patch(io.BytesIO(b"x"), tmp_path / "gone", io.BytesIO())


def test_a_base_too_large_for_the_window_is_a_usage_error(tmp_path: Path) -> None:
    huge = tmp_path / "huge"
    with huge.open("wb") as sparse:
        sparse.truncate(1 << 31)
    assert not can_patch(1 << 31, 1)
    with pytest.raises(UsageError, match="too large to patch against"):
        make_patch(huge, io.BytesIO(b"x"), io.BytesIO(), base_diff_id=sha256_of(b""))


@pytest.mark.parametrize(
    ("level", "segment_size"), [(23, 1 << 20), (3, 0), (3, MAX_SEGMENT_SIZE + 1)]
)
def test_impossible_options_are_usage_errors(level: int, segment_size: int) -> None:
    with pytest.raises(UsageError):
        make_patch(
            io.BytesIO(b"a"), io.BytesIO(b"b"), io.BytesIO(), level=level, segment_size=segment_size
        )


@given(patch_size=st.integers(0, 2**34), layer_size=st.integers(0, 2**34))
def test_a_patch_is_worth_it_only_when_it_saves_half_and_64_kib(
    patch_size: int, layer_size: int
) -> None:
    worth = is_worth_it(patch_size, layer_size)
    assert worth == (patch_size * 2 <= layer_size and layer_size - patch_size >= MIN_SAVING)
    assert worth == (patch_size <= patch_budget(layer_size))


def test_the_public_names_are_pinned() -> None:
    assert sorted(sealift.delta.__all__) == [
        "BadPatchError", "BaseReason", "DEFAULT_LEVEL", "DEFAULT_SEGMENT_SIZE", "Holdings",
        "ImageLayers", "LayerChoice", "LayerInput", "LayerPlan", "PatchError", "PatchHeader",
        "PatchInfo", "PatchedReader", "RebuildMismatchError", "TarPaths", "WrongBaseError",
        "apply_patch", "can_patch", "is_worth_it", "list_tar_paths", "make_patch",
        "make_patch_file", "open_patched", "patch_budget", "plan_bases", "read_patch_header",
    ]  # fmt: skip
    assert all(hasattr(sealift.delta, name) for name in sealift.delta.__all__)


def test_every_refusal_is_a_patch_error() -> None:
    for error in (BadPatchError, WrongBaseError, RebuildMismatchError):
        assert issubclass(error, PatchError)


def test_a_patch_file_that_would_not_pay_is_not_left_behind(tmp_path: Path) -> None:
    path = tmp_path / "layer.patch"
    target = io.BytesIO(os.urandom(64 * 1024))
    assert make_patch_file(io.BytesIO(BASE), target, path, size_limit=10) is None
    assert not path.exists()
