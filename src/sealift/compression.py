"""Compression codecs, one registry: detection by magic bytes, streaming readers and writers.

Layers may be stored uncompressed (``none``), gzip or zstd; whole archives may additionally be
wrapped in xz or bzip2. Decompression is always bounded (see :class:`ExpansionGuard`) because a few
kilobytes of zstd can expand to terabytes: by the uncompressed size recorded for the layer when
there is one, else by a cap far above any real layer. Decompressed bytes written to disk are
bounded by the free space there too (:func:`ensure_room`). A ratio is no bound: a real layer
holding a preallocated 1 GB file of zeros compresses better than 1000:1.
"""

from __future__ import annotations

import bz2
import contextlib
import io
import lzma
import os
import stat
import zlib
from typing import IO, Final, cast

import zstandard
from isal import igzip, igzip_lib, igzip_threaded

from sealift.errors import InvalidArchiveError, LimitExceededError, UsageError
from sealift.progress import human_size
from sealift.streams import CountingReader, PrefetchReader

NONE: Final = "none"
GZIP: Final = "gzip"
ZSTD: Final = "zstd"
XZ: Final = "xz"
BZIP2: Final = "bzip2"

LAYER_CODECS: Final = (NONE, GZIP, ZSTD)
_MAGIC: Final = (
    (GZIP, b"\x1f\x8b"),
    (ZSTD, b"\x28\xb5\x2f\xfd"),
    (XZ, b"\xfd7zXZ\x00"),
    (BZIP2, b"BZh"),
)
SNIFF_SIZE: Final = 6
_ISAL_ERROR = cast(type[Exception], igzip_lib.IsalError)  # typed as an instance in its stubs

DEFAULT_LEVEL: Final = {GZIP: 3, ZSTD: 3}
# gzip levels up to 3 use ISA-L, 4-9 zlib-ng. ISA-L's 3 is as dense as zlib-ng's 2 at twice its
# speed: half the CPU of zlib-ng's 3 for ~4% more bytes (the bench keeps it within 5% of skopeo)
ISAL_MAX_LEVEL: Final = 3
CHUNK: Final = 1024 * 1024
ZSTD_JOB_SIZE: Final = 4 * 1024 * 1024


def sniff(prefix: bytes) -> str:
    """The codec a stream starting with ``prefix`` is compressed with, or ``none``."""
    for codec, magic in _MAGIC:
        if prefix.startswith(magic):
            return codec
    return NONE


def check_layer_codec(codec: str) -> str:
    if codec not in LAYER_CODECS:
        raise UsageError(f"unknown compression {codec!r}: choose one of {', '.join(LAYER_CODECS)}")
    return codec


# zstd's negative levels are its "fast" ones, 20-22 its "ultra" ones
_LEVELS: Final = {
    GZIP: (range(0, 10), "0-9"),
    ZSTD: (range(-(1 << 17), zstandard.MAX_COMPRESSION_LEVEL + 1), "1-22, or below 0 to go faster"),
}


def check_level(codec: str, level: int | None) -> int | None:
    """``level`` if ``codec`` has it (any level goes with ``none``, which ignores it)."""
    if level is None or codec not in _LEVELS:
        return level
    allowed, choices = _LEVELS[codec]
    if level not in allowed:
        raise UsageError(f"{codec} has no level {level}: choose {choices}")
    return level


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# far above any real layer (registries cap layers at tens of GiB), far below what bombs reach
DEFAULT_MAX_UNCOMPRESSED: Final = 1 << 40
# what sealift leaves free on a disk it writes decompressed data to
SPACE_RESERVE: Final = 64 * 1024 * 1024
_CAP_VARIABLE: Final = "SEALIFT_MAX_UNCOMPRESSED"


def max_uncompressed() -> int:
    """The most bytes one decompressed stream may give: SEALIFT_MAX_UNCOMPRESSED, or 1 TiB."""
    text = os.environ.get(_CAP_VARIABLE, "")
    if not text:
        return DEFAULT_MAX_UNCOMPRESSED
    if not text.isdigit() or int(text) <= 0:
        raise UsageError(f"{_CAP_VARIABLE} must be a number of bytes, not {text!r}")
    return int(text)


class ExpansionGuard:
    """Bounds how much a decompressed stream may give.

    With a ``recorded`` size (the one sealift writes beside every compressed layer), output past
    it is a lie and refused at once. Otherwise the bound is the cap (:func:`max_uncompressed`).
    """

    def __init__(self, what: str, recorded: int | None = None) -> None:
        self.what = what
        self.recorded = recorded
        self.limit = recorded if recorded is not None else max_uncompressed()

    def check(self, compressed: int, expanded: int) -> None:
        if expanded <= self.limit:
            return
        if self.recorded is not None:
            raise LimitExceededError(
                f"{self.what} expands past its recorded uncompressed size of {self.recorded} "
                "bytes: refusing a likely decompression bomb"
            )
        raise LimitExceededError(
            f"{self.what} expands past {human_size(self.limit)} ({expanded} bytes from "
            f"{compressed}): refusing a likely decompression bomb (set {_CAP_VARIABLE} to raise "
            "the cap)"
        )


def free_space(fd: int) -> int | None:
    """Bytes free to an unprivileged writer on the filesystem holding ``fd``, or None when
    ``fd`` is not a regular file (a pipe, a socket: no disk of ours fills up)."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        info = os.fstatvfs(fd)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


def ensure_room(out: object, size: int, what: str) -> None:
    """Refuse to write ``size`` more bytes to ``out`` if that would leave its disk with less
    than SPACE_RESERVE free. Streams without a file behind them are not checked."""
    fileno = getattr(out, "fileno", None)
    try:
        fd = fileno() if callable(fileno) else None
    except (OSError, ValueError, io.UnsupportedOperation):
        fd = None
    if not isinstance(fd, int):
        return
    free = free_space(fd)
    if free is not None and size > free - SPACE_RESERVE:
        raise LimitExceededError(
            f"{what}: {human_size(size)} more would leave less than {human_size(SPACE_RESERVE)} "
            f"free on the disk ({human_size(free)} free): refusing (a decompression bomb, or "
            "too little space)"
        )


class DecompressingReader(io.RawIOBase):
    """A readable stream of ``raw`` decompressed with ``codec``, guarded against bombs.

    Codec errors (corrupt or truncated data) surface as InvalidArchiveError naming ``what``.
    """

    def __init__(
        self, raw: IO[bytes], codec: str, what: str, guard: ExpansionGuard | None = None
    ) -> None:
        self._counter = CountingReader(raw)
        self._codec = codec
        self._what = what
        self._guard = guard or ExpansionGuard(what)
        self._stream = _open_decompressor(self._counter, codec)
        self.expanded = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            n = self._read_into(buffer)
        except (
            OSError,
            EOFError,
            lzma.LZMAError,
            zstandard.ZstdError,
            ValueError,
            _ISAL_ERROR,
            zlib.error,
        ) as exc:
            raise InvalidArchiveError(f"{self._what}: corrupt {self._codec} data ({exc})") from exc
        self.expanded += n
        self._guard.check(self._counter.count, self.expanded)
        return n

    def _read_into(self, buffer: memoryview) -> int:
        if self._codec == ZSTD:  # zstandard decompresses straight into the buffer
            return cast(int, self._stream.readinto(buffer))  # type: ignore[attr-defined]
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


def open_decompressed_ahead(raw: IO[bytes], codec: str, what: str) -> IO[bytes]:
    """``raw`` decompressed with ``codec`` by a thread of its own, a few chunks ahead of the
    reader (the codecs release the GIL: decompressing overlaps with what the reader does)."""
    if codec == NONE:
        return raw
    decompressed = cast(IO[bytes], DecompressingReader(raw, codec, what))
    return cast(IO[bytes], PrefetchReader(decompressed, close_raw=True))


def _open_decompressor(raw: io.RawIOBase, codec: str) -> IO[bytes]:
    buffered = io.BufferedReader(raw, CHUNK)
    if codec == GZIP:
        return cast(IO[bytes], igzip.GzipFile(fileobj=buffered, mode="rb"))  # type: ignore[no-untyped-call]
    if codec == ZSTD:
        reader = zstandard.ZstdDecompressor().stream_reader(
            buffered, read_size=CHUNK, read_across_frames=True, closefd=False
        )
        return cast(IO[bytes], reader)
    if codec == XZ:
        return lzma.LZMAFile(buffered, "rb")
    if codec == BZIP2:
        return bz2.BZ2File(buffered, "rb")
    if codec == NONE:
        return buffered
    raise InvalidArchiveError(f"unknown compression {codec!r}")


def open_decompressed(
    raw: IO[bytes], codec: str, what: str, guard: ExpansionGuard | None = None
) -> IO[bytes]:
    """A buffered reader of ``raw`` decompressed with ``codec``."""
    if codec == NONE:
        return raw
    return cast(IO[bytes], io.BufferedReader(DecompressingReader(raw, codec, what, guard), CHUNK))


def open_compressor(out: IO[bytes], codec: str, level: int | None = None) -> IO[bytes]:
    """A writer that compresses into ``out`` (left open on close), using every core.

    Output is deterministic for the same input, codec and level: gzip carries no name or mtime,
    and multi-threaded zstd output does not depend on the number of threads.
    """
    level = check_level(codec, level)
    level = level if level is not None else DEFAULT_LEVEL.get(codec, 0)
    if codec == ZSTD:
        # 4 MiB jobs: a third of the memory of the default job size for ~0.4% more output
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=-1, job_size=ZSTD_JOB_SIZE, write_checksum=True
        )
        compressor = zstandard.ZstdCompressor(compression_params=params)
        return cast(IO[bytes], compressor.stream_writer(out, closefd=False))
    if codec == GZIP:
        return cast(IO[bytes], _GzipWriter(out, level))
    if codec == NONE:
        return cast(IO[bytes], _Unclosing(out))
    raise UsageError(f"cannot compress with {codec!r}")


class _Unclosing(io.RawIOBase):
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._discarding = False

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self._discarding:
            return len(data)
        return self._out.write(data)

    def discard(self) -> None:
        """Drop everything written from now on."""
        self._discarding = True


class _GzipWriter(io.RawIOBase):
    """Multi-threaded gzip: ISA-L for levels 0-3 (fast), zlib-ng for 4-9 (denser, slower)."""

    def __init__(self, out: IO[bytes], level: int) -> None:
        self._sink = _Unclosing(out)
        self._writer: IO[bytes]
        if level <= ISAL_MAX_LEVEL:
            self._writer = igzip_threaded.open(  # type: ignore[no-untyped-call]
                self._sink, "wb", compresslevel=level, threads=cpu_count()
            )
        else:
            from zlib_ng import gzip_ng_threaded

            self._writer = gzip_ng_threaded.open(  # type: ignore[no-untyped-call]
                self._sink, "wb", compresslevel=level, threads=cpu_count()
            )

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return self._writer.write(data)

    def close(self) -> None:
        if not self.closed:
            self._writer.close()
        super().close()

    def abort(self) -> None:
        """Wind the compression threads down, dropping their output: it is being thrown away.

        The blocks still queued are compressed into the void rather than stopped mid-flight
        (stopping threaded writers with work in flight can deadlock them), and the writer is
        closed now: left to the garbage collector, it would flush at interpreter exit, after its
        threads have stopped, and wait forever.
        """
        self._sink.discard()
        with contextlib.suppress(Exception):  # an error stored by the writer: already reported
            self._writer.close()
        super().close()


def abort_compressor(writer: IO[bytes]) -> None:
    """Release a compressor whose output is being discarded, never blocking and never raising."""
    abort = getattr(writer, "abort", None)
    try:
        if callable(abort):
            abort()
        else:
            writer.close()
    except Exception:  # the output is garbage already; the original error is what matters
        return


def codec_for_target(target: str) -> str:
    """The layer codec for an archive that ``target`` will load (``save --compression auto``):
    zstd where it is read (Docker >= 23, containerd, podman), gzip for any Docker."""
    return GZIP if target == "docker" else ZSTD
