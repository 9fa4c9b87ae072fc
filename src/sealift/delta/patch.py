"""Binary patches between two versions of a layer: make, read, apply.

A patch rebuilds a layer's uncompressed tar (the *target*) from an older layer's uncompressed tar
(the *base*), like ``zstd --patch-from``: zstd frames that reference the base as a raw prefix,
with long-distance matching over a window that spans the base.

Format (version 1), all integers big-endian::

    magic           8 bytes   b"\\x89SLDELTA"
    version         u8        1
    codec           u8        1: zstd frames against the base as a raw prefix
    level           i32       the zstd level it was made with (information only)
    window_log      u8        every frame's window is at most 2**window_log bytes
    segment_size    u32       the target is cut into frames of this many bytes, the last shorter
    base_size       u64       the base's uncompressed size
    base_diff_id    32 bytes  sha256 of the base's uncompressed tar
    target_size     u64
    target_diff_id  32 bytes
    header_crc32    u32       of the 99 bytes above
    frames          ceil(target_size / segment_size) zstd frames, each with its content size
                    and a checksum, and nothing after them

Memory is bounded by the segment, not the layers. Both sides read the base through a read-only
mmap that zstd references in place (page cache, not process memory); the encoder holds one
segment of input and its match tables, the decoder one segment of output (zstd sizes its buffer
to the frame's content size, which the reader checks against the header before decoding).
Each frame reloads the base into the long-distance matcher, so the segment size trades memory on
both sides against time to make the patch. Measured (bench/results/delta.md, a 200 MB layer,
level 3, 64 MiB segments): making the patch takes 100 MB of the process's own memory and 3.4 s,
applying it 83 MB and 0.6 s, plus the base's pages in the page cache. The window, base plus one
segment, may not pass 2 GiB (zstd's limit): larger bases are not patched.

A patch is trusted for nothing: the rebuilt tar is verified against the target's size and
diff_id before :class:`PatchedReader` reports its end, and a failure says whether the base or the
patch was wrong.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import mmap
import os
import shutil
import stat
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import zstandard

from sealift.compression import ZSTD, check_level
from sealift.delta._zstd import (
    MAX_WINDOW_LOG,
    MIN_WINDOW_LOG,
    Prefix,
    PrefixCompressor,
    PrefixDecompressor,
    ZstdCallError,
    window_log_for,
)
from sealift.delta.errors import BadPatchError, RebuildMismatchError, WrongBaseError
from sealift.digest import Digest, Hasher
from sealift.errors import InvalidArchiveError, SealiftError, UsageError

LayerInput = str | os.PathLike[str] | IO[bytes]
"""A layer's uncompressed tar: a path, or a binary stream read from where it stands."""

MAGIC: Final = b"\x89SLDELTA"
FORMAT_VERSION: Final = 1
CODEC_ZSTD_PREFIX: Final = 1
_FIELDS: Final = struct.Struct(">8sBBiBIQ32sQ32s")
_CRC: Final = struct.Struct(">I")
HEADER_SIZE: Final = _FIELDS.size + _CRC.size

# bench/results/delta.md: level 3 makes the 6 MB pair's patch in 0.03 s (811 bytes; level 19:
# 680 in 3.2 s) and the 200 MB pair's in 3.4 s, 5% over the smallest (level 15: 136 s); level 19
# loses the base of a large layer (a 71 MB patch for a 185 KB change)
DEFAULT_LEVEL: Final = 3
# 64 MiB: each side's own memory stays near 100 MB (the decoder's is ~20 MB + the segment),
# while a 200 MB layer loads its base 4 times (16 MiB: 13 loads, 3x the time to make the patch)
DEFAULT_SEGMENT_SIZE: Final = 64 * 1024 * 1024
MAX_SEGMENT_SIZE: Final = 256 * 1024 * 1024
WORTH_IT_RATIO: Final = 0.5
MIN_SAVING: Final = 64 * 1024

_CHUNK: Final = 1024 * 1024
_PATCH_CHUNK: Final = 128 * 1024
_SPOOL_IN_MEMORY: Final = 4 * 1024 * 1024
_ZSTD_FRAME_HEADER_MAX: Final = 18


@dataclass(frozen=True)
class PatchHeader:
    """What a patch rebuilds, from what, and how it was made."""

    base_diff_id: Digest
    base_size: int
    target_diff_id: Digest
    target_size: int
    level: int
    window_log: int
    segment_size: int

    def encode(self) -> bytes:
        fields = _FIELDS.pack(
            MAGIC,
            FORMAT_VERSION,
            CODEC_ZSTD_PREFIX,
            self.level,
            self.window_log,
            self.segment_size,
            self.base_size,
            bytes.fromhex(self.base_diff_id.hex),
            self.target_size,
            bytes.fromhex(self.target_diff_id.hex),
        )
        return fields + _CRC.pack(zlib.crc32(fields))

    @classmethod
    def decode(cls, data: bytes) -> PatchHeader:
        """Parse and check a header; BadPatchError if it is not one this sealift can apply."""
        if len(data) < HEADER_SIZE or not data.startswith(MAGIC):
            raise BadPatchError("not a sealift patch (no patch header)")
        fields = data[: _FIELDS.size]
        (crc,) = _CRC.unpack(data[_FIELDS.size : HEADER_SIZE])
        if zlib.crc32(fields) != crc:
            raise BadPatchError("the patch header is corrupt (checksum mismatch)")
        _, version, codec, level, window_log, segment, base_size, base, target_size, target = (
            _FIELDS.unpack(fields)
        )
        if version != FORMAT_VERSION or codec != CODEC_ZSTD_PREFIX:
            raise BadPatchError(
                f"patch format {version}, codec {codec} is not supported "
                f"(this sealift applies format {FORMAT_VERSION}, codec {CODEC_ZSTD_PREFIX})"
            )
        header = cls(
            Digest("sha256", base.hex()),
            base_size,
            Digest("sha256", target.hex()),
            target_size,
            level,
            window_log,
            segment,
        )
        header.check_bounds()
        return header

    def check_bounds(self) -> None:
        if not MIN_WINDOW_LOG <= self.window_log <= MAX_WINDOW_LOG:
            raise BadPatchError(f"patch window log {self.window_log} is out of range")
        if not 0 < self.segment_size <= MAX_SEGMENT_SIZE:
            raise BadPatchError(
                f"patch segment of {self.segment_size} bytes is out of range "
                f"(1 to {MAX_SEGMENT_SIZE})"
            )

    def frame_sizes(self) -> Iterator[int]:
        """The uncompressed size of each frame, in order."""
        return _frame_sizes(self.target_size, self.segment_size)


@dataclass(frozen=True)
class PatchInfo:
    """A patch written: its header and its size in bytes, header included."""

    header: PatchHeader
    size: int


def read_patch_header(patch: IO[bytes]) -> PatchHeader:
    """Read a patch's header from the start of ``patch``, leaving the stream at its frames."""
    return PatchHeader.decode(_read_exactly(patch, HEADER_SIZE))


def can_patch(base_size: int, target_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> bool:
    """Whether a base of ``base_size`` bytes fits in the window a patch can reference."""
    return window_log_for(base_size + min(segment_size, target_size)) <= MAX_WINDOW_LOG


def patch_budget(layer_size: int) -> int:
    """The largest patch worth sending instead of the layer, as it would otherwise cross
    (``layer_size``: compressed, the way it goes on the wire); 0 or less: do not try.

    A patch must save half the layer and at least 64 KiB, because it is not free where the
    layer is: the receiver must first read its whole base out of the engine (Docker 20.10
    exports the entire older image to get one layer), rebuild the tar and hash it, and a
    failed rebuild costs the whole layer on top of the patch. Half the bytes is a saving that
    survives those costs on the links deltas are for (1 Mbit/s: 64 KiB is half a second).
    """
    return min(int(layer_size * WORTH_IT_RATIO), layer_size - MIN_SAVING)


def is_worth_it(patch_size: int, layer_size: int) -> bool:
    """Whether a patch of ``patch_size`` bytes should replace a layer of ``layer_size``."""
    return patch_size <= patch_budget(layer_size)


def make_patch_file(
    base: LayerInput,
    target: LayerInput,
    path: Path,
    *,
    level: int = DEFAULT_LEVEL,
    size_limit: int | None = None,
    base_diff_id: Digest | None = None,
    spool_dir: Path | None = None,
) -> PatchInfo | None:
    """:func:`make_patch` into the file ``path``; None, and no file, when the patch would pass
    ``size_limit`` or the base is too large to patch against."""
    with path.open("wb") as out:
        try:
            info = make_patch(
                base,
                target,
                out,
                level=level,
                size_limit=size_limit,
                base_diff_id=base_diff_id,
                spool_dir=spool_dir,
            )
        except UsageError:  # a base too large for a patch's window
            info = None
    if info is None:
        path.unlink()
    return info


def make_patch(
    base: LayerInput,
    target: LayerInput,
    out: IO[bytes],
    *,
    level: int = DEFAULT_LEVEL,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    size_limit: int | None = None,
    base_diff_id: Digest | None = None,
    spool_dir: Path | None = None,
) -> PatchInfo | None:
    """Write to ``out`` a patch that rebuilds ``target`` from ``base``.

    ``base_diff_id``, when the caller knows it, spares hashing the base. With ``size_limit``,
    compression stops as soon as the patch would be larger, and None is returned with nothing
    written (see :func:`patch_budget`). A stream that cannot be mapped or measured is first
    spooled to a temp file in ``spool_dir``.
    """
    _check_options(level, segment_size, base_diff_id)
    with (
        _mapped(base, spool_dir) as base_map,
        _measured(target, spool_dir) as (target_file, target_size),
    ):
        base_size = len(base_map) if base_map is not None else 0
        if not can_patch(base_size, target_size, segment_size):
            raise UsageError(
                f"a base of {base_size} bytes is too large to patch against "
                f"(the window may not pass {1 << MAX_WINDOW_LOG} bytes)"
            )
        known_base = base_diff_id or _digest_of_map(base_map)
        window_log = window_log_for(base_size + min(segment_size, target_size))
        with tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY, dir=_dir(spool_dir)) as frames:
            budget = None if size_limit is None else size_limit - HEADER_SIZE
            writer = _BudgetWriter(frames, budget)
            shape = _FrameShape(target_size, segment_size, level, window_log)
            try:
                target_digest = _compress_frames(base_map, target_file, shape, writer.write)
            except _OverBudgetError:
                return None
            header = PatchHeader(
                known_base, base_size, target_digest, target_size, level, window_log, segment_size
            )
            out.write(header.encode())
            frames.seek(0)
            shutil.copyfileobj(frames, out, _CHUNK)
            return PatchInfo(header, HEADER_SIZE + writer.written)


def _check_options(level: int, segment_size: int, base_diff_id: Digest | None) -> None:
    check_level(ZSTD, level)
    if not 0 < segment_size <= MAX_SEGMENT_SIZE:
        raise UsageError(f"segment size must be 1 to {MAX_SEGMENT_SIZE} bytes")
    if base_diff_id is not None and base_diff_id.algorithm != "sha256":
        raise UsageError(f"patches name layers by sha256 diff_ids, not {base_diff_id.algorithm}")


@dataclass(frozen=True)
class _FrameShape:
    target_size: int
    segment_size: int
    level: int
    window_log: int


def _compress_frames(
    base_map: mmap.mmap | None,
    target: IO[bytes],
    shape: _FrameShape,
    write: Callable[[bytes], object],
) -> Digest:
    """Compress ``target`` into frames against the base; the target's diff_id."""
    hasher = Hasher()
    prefix = Prefix(base_map)
    try:
        compressor = PrefixCompressor(shape.level, shape.window_log)
        for size in _frame_sizes(shape.target_size, shape.segment_size):
            compressor.frame(prefix, size, _chunks(target, size, hasher), write)
    except ZstdCallError as exc:
        raise SealiftError(f"cannot make a patch: zstd failed ({exc})") from exc
    finally:
        prefix.release()
    return hasher.digest()


def _frame_sizes(total: int, segment_size: int) -> Iterator[int]:
    whole, rest = divmod(total, segment_size)
    yield from itertools.repeat(segment_size, whole)
    if rest:
        yield rest


def _chunks(stream: IO[bytes], size: int, hasher: Hasher) -> Iterator[bytes]:
    left = size
    while left:
        chunk = stream.read(min(_CHUNK, left))
        if not chunk:
            raise InvalidArchiveError(f"the target layer ended {left} bytes early")
        hasher.update(chunk)
        left -= len(chunk)
        yield chunk


class _OverBudgetError(Exception):
    """The patch grew past its size limit."""


class _BudgetWriter:
    def __init__(self, out: IO[bytes], budget: int | None) -> None:
        self._out = out
        self._budget = budget
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self._budget is not None and self.written > self._budget:
            raise _OverBudgetError
        self._out.write(data)


class PatchedReader(io.RawIOBase):
    """The target layer's tar, rebuilt from a patch and its base as it is read.

    Reading to the end is what verifies it: the last read raises (a :class:`PatchError`) when
    the rebuilt tar is not the target, so nothing read from it is to be trusted before that.
    Closing releases the base; the patch stream stays the caller's.
    """

    def __init__(self, patch: IO[bytes], base_map: mmap.mmap | None, header: PatchHeader) -> None:
        self.header = header
        self._patch = patch
        self._base_map = base_map
        self._prefix = Prefix(base_map)
        try:
            self._decoder = PrefixDecompressor(self._prefix, header.window_log)
        except ZstdCallError as exc:
            self._prefix.release()
            raise BadPatchError(f"cannot decode the patch ({exc})") from exc
        except BaseException:
            self._prefix.release()
            raise
        self._frames = header.frame_sizes()
        self._frame_left = 0
        self._in_frame = False
        self._pending = b""
        self._hasher = Hasher()
        self._finished = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if not view:
            return 0
        while not self._finished:
            if not self._in_frame and not self._begin_frame():
                self._finish()
                break
            if self._decoder.needs_input:
                self._decoder.feed(self._next_input())
            produced = self._decode(view[: min(len(view), self._frame_left)])
            if produced:
                return produced
        return 0

    def _begin_frame(self) -> bool:
        size = next(self._frames, None)
        if size is None:
            return False
        parameters = self._frame_parameters()
        if parameters.content_size != size or not parameters.has_checksum:
            raise BadPatchError(
                f"patch frame of {parameters.content_size} bytes where {size} were declared"
            )
        try:
            self._decoder.begin()
        except ZstdCallError as exc:
            raise BadPatchError(f"cannot decode the patch ({exc})") from exc
        self._decoder.feed(self._pending)
        self._pending = b""
        self._frame_left = size
        self._in_frame = True
        return True

    def _frame_parameters(self) -> zstandard.FrameParameters:
        while True:
            try:
                return zstandard.get_frame_parameters(self._pending)
            except zstandard.ZstdError as exc:
                if len(self._pending) >= _ZSTD_FRAME_HEADER_MAX:
                    raise BadPatchError(f"corrupt patch: not a zstd frame ({exc})") from exc
            self._pending += self._next_input()

    def _next_input(self) -> bytes:
        data = self._patch.read(_PATCH_CHUNK)
        if not data:
            raise BadPatchError("the patch is truncated")
        return data

    def _decode(self, into: memoryview) -> int:
        try:
            produced, frame_done = self._decoder.decode(into)
        except ZstdCallError as exc:
            raise self._explain(BadPatchError(f"corrupt patch ({exc})")) from exc
        self._hasher.update(into[:produced])
        self._frame_left -= produced
        if frame_done:
            self._pending = self._decoder.leftover()
            self._in_frame = False
        return produced

    def _finish(self) -> None:
        self._finished = True
        if self._pending or self._patch.read(1):
            raise BadPatchError("the patch has data after its last frame")
        actual = self._hasher.digest()
        if actual != self.header.target_diff_id:
            raise self._explain(
                RebuildMismatchError(
                    f"the rebuilt layer is {actual}, the patch promised "
                    f"{self.header.target_diff_id}"
                )
            )

    def _explain(self, error: BadPatchError | RebuildMismatchError) -> Exception:
        """``error``, or WrongBaseError when the base is what does not match."""
        base = _digest_of_map(self._base_map)
        if base != self.header.base_diff_id:
            return WrongBaseError(
                f"the base is {base}, the patch was made against {self.header.base_diff_id}"
            )
        return error

    def close(self) -> None:
        if not self.closed:
            self._prefix.release()
            if self._base_map is not None:
                self._base_map.close()
        super().close()


def open_patched(
    patch: IO[bytes],
    base: LayerInput,
    *,
    expected_target: Digest | None = None,
    spool_dir: Path | None = None,
) -> PatchedReader:
    """A reader of the layer ``patch`` rebuilds from ``base`` (see :class:`PatchedReader`).

    The header is read and checked first: a patch for another layer than ``expected_target``
    is refused, and a base of another size than the patch's is a WrongBaseError.
    """
    header = read_patch_header(patch)
    if expected_target is not None and header.target_diff_id != expected_target:
        raise BadPatchError(
            f"the patch rebuilds {header.target_diff_id}, not the layer {expected_target}"
        )
    base_map = _map(base, spool_dir)
    try:
        base_size = len(base_map) if base_map is not None else 0
        if base_size != header.base_size:
            raise WrongBaseError(
                f"the base is {base_size} bytes, the patch was made against "
                f"{header.base_diff_id} of {header.base_size} bytes"
            )
        return PatchedReader(patch, base_map, header)
    except BaseException:
        if base_map is not None:
            base_map.close()
        raise


def apply_patch(
    patch: IO[bytes],
    base: LayerInput,
    out: IO[bytes],
    *,
    expected_target: Digest | None = None,
    spool_dir: Path | None = None,
) -> PatchHeader:
    """Write the layer ``patch`` rebuilds from ``base`` to ``out``; return the patch's header.

    On any error, what was written to ``out`` is garbage for the caller to discard.
    """
    with open_patched(patch, base, expected_target=expected_target, spool_dir=spool_dir) as reader:
        shutil.copyfileobj(reader, out, _CHUNK)
        return reader.header


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            break
        data += more
    return data


def _digest_of_map(data: mmap.mmap | None) -> Digest:
    hasher = Hasher()
    if data is not None:
        view = memoryview(data)
        try:
            for start in range(0, len(view), _CHUNK):
                hasher.update(view[start : start + _CHUNK])
        finally:
            view.release()
    return hasher.digest()


def _map(layer: LayerInput, spool_dir: Path | None) -> mmap.mmap | None:
    """``layer`` as a read-only map, None when empty; a stream is spooled to a temp file first.

    The map outlives the file it was made from; its user closes it.
    """
    with _translated("base layer"), contextlib.ExitStack() as stack:
        file = _as_whole_file(layer, spool_dir, stack)
        size = os.fstat(file.fileno()).st_size
        return mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ) if size else None


@contextlib.contextmanager
def _mapped(layer: LayerInput, spool_dir: Path | None) -> Iterator[mmap.mmap | None]:
    mapped = _map(layer, spool_dir)
    try:
        yield mapped
    finally:
        if mapped is not None:
            mapped.close()


@contextlib.contextmanager
def _measured(layer: LayerInput, spool_dir: Path | None) -> Iterator[tuple[IO[bytes], int]]:
    """``layer`` as a stream whose remaining size is known (spooled when it is a pipe)."""
    with contextlib.ExitStack() as stack:
        with _translated("target layer"):
            file, size = _open_measured(layer, spool_dir, stack)
        yield file, size


def _open_measured(
    layer: LayerInput, spool_dir: Path | None, stack: contextlib.ExitStack
) -> tuple[IO[bytes], int]:
    if isinstance(layer, str | os.PathLike):
        return _size_of(stack.enter_context(Path(layer).open("rb")))
    if _is_regular_file(layer):
        return layer, os.fstat(layer.fileno()).st_size - layer.tell()
    return _size_of(stack.enter_context(_spooled(layer, spool_dir)))


def _size_of(file: IO[bytes]) -> tuple[IO[bytes], int]:
    return file, os.fstat(file.fileno()).st_size


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise SealiftError(f"cannot read the {what}: {exc}") from exc


def _as_whole_file(
    layer: LayerInput, spool_dir: Path | None, stack: contextlib.ExitStack
) -> IO[bytes]:
    if isinstance(layer, str | os.PathLike):
        return stack.enter_context(Path(layer).open("rb"))
    if _is_regular_file(layer) and layer.tell() == 0:
        return layer
    return stack.enter_context(_spooled(layer, spool_dir))


def _is_regular_file(stream: IO[bytes]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode) and stream.seekable()
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


@contextlib.contextmanager
def _spooled(stream: IO[bytes], spool_dir: Path | None) -> Iterator[IO[bytes]]:
    with tempfile.TemporaryFile(dir=spool_dir) as spool:
        shutil.copyfileobj(stream, spool, _CHUNK)
        spool.flush()
        spool.seek(0)
        yield spool


def _dir(path: Path | None) -> str | None:
    return str(path) if path is not None else None
