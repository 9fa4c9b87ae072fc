"""zstd frames against a raw-content prefix, as ``zstd --patch-from`` makes them.

python-zstandard takes a dictionary only as a prepared dictionary (a CDict), and zstd never loads
a CDict into its long-distance matcher: against a 200 MB base it finds matches only in the last
few megabytes (a 130 MB "patch" for three changed files). ``zstd --patch-from`` references the
base as a *prefix* instead (``ZSTD_CCtx_refPrefix``), which the long-distance matcher indexes
whole. python-zstandard does not wrap that call, but its CFFI backend exposes the libzstd it
bundles, so this module calls those few functions through it. The prefix is read in place (an
mmap of the base), so the base costs page cache, not process memory.

Only this module touches the C API; failures surface as :class:`ZstdCallError`.
"""

from __future__ import annotations

import importlib
import mmap
from collections.abc import Callable, Iterable
from typing import Any, Final

_backend: Any = importlib.import_module("zstandard.backend_cffi")  # untyped C API: Any
_ffi: Any = _backend.ffi
_lib: Any = _backend.lib
_uncleared = _ffi.new_allocator(should_clear_after_alloc=False)

MIN_WINDOW_LOG: Final = 10
MAX_WINDOW_LOG: Final = 31  # ZSTD_WINDOWLOG_MAX on 64-bit builds
OUT_CHUNK: Final[int] = _lib.ZSTD_CStreamOutSize()


class ZstdCallError(Exception):
    """A libzstd call failed; the message is zstd's own."""


def _check(result: int) -> int:
    if _lib.ZSTD_isError(result):
        name = _ffi.string(_lib.ZSTD_getErrorName(result)).decode()
        raise ZstdCallError(name)
    return result


def window_log_for(distance: int) -> int:
    """The smallest window log whose window spans ``distance`` bytes."""
    return max(MIN_WINDOW_LOG, (max(distance, 1) - 1).bit_length())


class Prefix:
    """A buffer (an mmap of the base) as zstd reads it; keeps the buffer alive."""

    def __init__(self, data: mmap.mmap | bytes | None) -> None:
        self.size = len(data) if data is not None else 0
        self._cdata = _ffi.from_buffer(data) if self.size else _ffi.NULL

    @property
    def cdata(self) -> Any:
        return self._cdata

    def release(self) -> None:
        """Let go of the buffer (an mmap cannot close while zstd may still read it)."""
        if self.size:
            _ffi.release(self._cdata)
            self.size = 0
            self._cdata = _ffi.NULL


class PrefixCompressor:
    """Writes one zstd frame per call, each against the same prefix.

    Frames carry their content size (so a decoder's buffer is the frame, not the window) and a
    checksum. Long-distance matching is on: it is what finds the base's content in the target.
    """

    def __init__(self, level: int, window_log: int) -> None:
        cctx = _lib.ZSTD_createCCtx()
        if cctx == _ffi.NULL:
            raise MemoryError("zstd compression context")
        self._cctx = _ffi.gc(cctx, _lib.ZSTD_freeCCtx)
        self._set(_lib.ZSTD_c_compressionLevel, level)
        self._set(_lib.ZSTD_c_windowLog, window_log)
        self._set(_lib.ZSTD_c_enableLongDistanceMatching, 1)
        self._set(_lib.ZSTD_c_checksumFlag, 1)
        self._set(_lib.ZSTD_c_contentSizeFlag, 1)
        if hasattr(_lib, "ZSTD_c_blockSplitterLevel"):  # libzstd >= 1.5.7
            # 1: no pre-splitting of blocks, which only costs a patch's all-match blocks: the
            # 6 MB bench pair's frames go from 1,293 to 708 bytes (as zstd 1.5.4's CLI makes)
            self._set(_lib.ZSTD_c_blockSplitterLevel, 1)
        self._out = _uncleared("char[]", OUT_CHUNK)
        self._out_buffer = _ffi.new("ZSTD_outBuffer *")
        self._in_buffer = _ffi.new("ZSTD_inBuffer *")

    def _set(self, parameter: int, value: int) -> None:
        _check(_lib.ZSTD_CCtx_setParameter(self._cctx, parameter, value))

    def frame(
        self,
        prefix: Prefix,
        size: int,
        chunks: Iterable[bytes],
        write: Callable[[bytes], object],
    ) -> None:
        """Compress ``chunks`` (exactly ``size`` bytes in all) into one frame."""
        _check(_lib.ZSTD_CCtx_reset(self._cctx, _lib.ZSTD_reset_session_only))
        _check(_lib.ZSTD_CCtx_refPrefix(self._cctx, prefix.cdata, prefix.size))
        _check(_lib.ZSTD_CCtx_setPledgedSrcSize(self._cctx, size))
        # feeding through zstd's own input buffer (e_continue) gives patches 5x smaller than
        # one-shot e_end on the same bytes: measured, 35 KB against 175 KB on 200 MB
        for chunk in chunks:
            self._pump(chunk, _lib.ZSTD_e_continue, write)
        self._pump(b"", _lib.ZSTD_e_end, write)

    def _pump(self, data: bytes, mode: int, write: Callable[[bytes], object]) -> None:
        with _ffi.from_buffer(data) as source:
            self._pump_from(source, len(data), mode, write)

    def _pump_from(
        self, source: Any, size: int, mode: int, write: Callable[[bytes], object]
    ) -> None:
        self._in_buffer.src = source
        self._in_buffer.size = size
        self._in_buffer.pos = 0
        while True:
            self._out_buffer.dst = self._out
            self._out_buffer.size = OUT_CHUNK
            self._out_buffer.pos = 0
            remaining = _check(
                _lib.ZSTD_compressStream2(self._cctx, self._out_buffer, self._in_buffer, mode)
            )
            if self._out_buffer.pos:
                write(bytes(_ffi.buffer(self._out, self._out_buffer.pos)))
            if mode == _lib.ZSTD_e_end:
                if remaining == 0:
                    return
            elif self._in_buffer.pos == self._in_buffer.size:
                return


class PrefixDecompressor:
    """Decodes frames made against a prefix, straight into the caller's buffers.

    ``begin`` before each frame (zstd forgets a prefix at the end of a frame), ``feed`` input
    when ``needs_input``, ``decode`` until it reports the frame's end; ``leftover`` is then the
    input that belongs to what follows the frame.
    """

    def __init__(self, prefix: Prefix, window_log_max: int) -> None:
        dctx = _lib.ZSTD_createDCtx()
        if dctx == _ffi.NULL:
            raise MemoryError("zstd decompression context")
        self._dctx = _ffi.gc(dctx, _lib.ZSTD_freeDCtx)
        _check(_lib.ZSTD_DCtx_setParameter(self._dctx, _lib.ZSTD_d_windowLogMax, window_log_max))
        self._prefix = prefix
        self._in_buffer = _ffi.new("ZSTD_inBuffer *")
        self._out_buffer = _ffi.new("ZSTD_outBuffer *")
        self._input: bytes = b""
        self._source: Any = _ffi.NULL

    def begin(self) -> None:
        _check(_lib.ZSTD_DCtx_reset(self._dctx, _lib.ZSTD_reset_session_only))
        _check(_lib.ZSTD_DCtx_refPrefix(self._dctx, self._prefix.cdata, self._prefix.size))

    def feed(self, data: bytes) -> None:
        self._input = data
        self._source = _ffi.from_buffer(data)
        self._in_buffer.src = self._source
        self._in_buffer.size = len(data)
        self._in_buffer.pos = 0

    @property
    def needs_input(self) -> bool:
        return bool(self._in_buffer.pos == self._in_buffer.size)

    def leftover(self) -> bytes:
        return self._input[self._in_buffer.pos :]

    def decode(self, into: memoryview) -> tuple[int, bool]:
        """Decode into ``into``: (bytes written, whether the frame is complete)."""
        if not len(into):  # room for none: zstd may still have a frame's checksum to read
            return self._decode_to(_ffi.NULL, 0)
        with _ffi.from_buffer(into, require_writable=True) as target:
            return self._decode_to(target, len(into))

    def _decode_to(self, target: Any, size: int) -> tuple[int, bool]:
        self._out_buffer.dst = target
        self._out_buffer.size = size
        self._out_buffer.pos = 0
        hint = _check(_lib.ZSTD_decompressStream(self._dctx, self._out_buffer, self._in_buffer))
        return int(self._out_buffer.pos), hint == 0
