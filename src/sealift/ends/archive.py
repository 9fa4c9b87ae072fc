"""An archive file (or stdin/stdout) as a source and as a sink."""

from __future__ import annotations

import io
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, cast

from sealift import compression
from sealift.blobs import BlobStore, make_spool_dir
from sealift.cache import LayerCache
from sealift.digest import Digest
from sealift.ends.base import WriteResult, all_layers
from sealift.errors import InvalidArchiveError, NotFoundError, SealiftError, UsageError
from sealift.formats.files import Files, Member, StreamFiles, TarFiles
from sealift.formats.read import open_extra_file, read_entries, read_extra_files
from sealift.formats.write import ExtraFile, archive_size, write_archive
from sealift.model import Entry
from sealift.progress import human_size
from sealift.split import check_free_space, drain, find_split, open_parts, write_split
from sealift.streams import CountingReader, PrefetchReader

if TYPE_CHECKING:
    from sealift.update import Omitted

STDIO = "-"
PATCH_DIR: Final = "patches"
"""Where an update bundle keeps its patches under ``sealift/``: read as streams, never whole."""
ExtraFiles = Callable[[list[Entry]], Mapping[str, ExtraFile]]


class ArchiveSource:
    """Reads any supported archive: a path, ``-`` for stdin, or an open binary stream.

    A plain tar on disk is read in place; anything else (compressed, or a pipe) is streamed once
    and spooled to a private temp directory, removed on close.
    """

    def __init__(
        self,
        path: str | Path | IO[bytes],
        *,
        keep_layers: bool = True,
        transcode_compressed: bool = True,
    ) -> None:
        """``transcode_compressed=False``: a codec asked of a streamed read is applied on arrival
        to uncompressed layers only (an engine's save: what it holds compressed stays so)."""
        self._path = path
        self._keep = keep_layers
        self._transcode_compressed = transcode_compressed
        self._stack = ExitStack()
        self._entries: list[Entry] | None = None
        self._read: Files | None = None
        self._current: tuple[str, int] | None = None
        self.outer_codec = compression.NONE
        self.input_counter: CountingReader | None = None
        self._joined = False
        self.omitted: Omitted | None = None
        """What an update bundle leaves out (``save --since``); None for a whole archive."""
        self._cache: LayerCache | None = None

    def use_cache(self, cache: LayerCache) -> None:
        """Keep in ``cache`` the layers compressed as they arrive (a streamed read)."""
        self._cache = cache

    @property
    def what(self) -> str:
        if isinstance(self._path, str | Path):
            return "stdin" if str(self._path) == STDIO else f"archive {self._path}"
        return "input stream"

    def entries(self, want_codec: str | None = None, want_level: int | None = None) -> list[Entry]:
        if self._entries is None:
            self._read = self._files(want_codec, want_level)
            extra = self._small_extra_files()
            if extra:  # only an archive with a sealift/ part can be an update bundle
                self.omitted = _omitted(extra, self.what)
            left_out = (
                set(self.omitted.layers) | set(self.omitted.patched) if self.omitted else set()
            )
            self._entries = read_entries(self._read, self.what, omitted=left_out)
        return self._entries

    def extra_files(self) -> dict[str, bytes]:
        """The archive's ``sealift/`` part (see ``write_archive``), read with the images, but
        for an update's patches (see :meth:`open_extra`)."""
        self.entries()
        return self._small_extra_files()

    def open_extra(self, name: str) -> IO[bytes] | None:
        """A file of the archive's ``sealift/`` part as a stream (a patch); None if absent."""
        self.entries()
        assert self._read is not None
        return open_extra_file(self._read, name)

    def _small_extra_files(self) -> dict[str, bytes]:
        assert self._read is not None
        return read_extra_files(self._read, self.what, streamed_dirs=(PATCH_DIR,))

    def current_member(self) -> str | None:
        """What a streamed read is on right now: ``name (size)``, for progress displays."""
        if self._current is None:
            return None
        name, size = self._current
        return f"{_short(name)} ({human_size(size)})"

    def _files(self, want_codec: str | None, want_level: int | None) -> Files:
        raw = self._open()
        regular = _is_regular_file(raw)
        # a pipe or socket is read ahead in a thread, each chunk straight into its own buffer
        reader: io.BufferedReader | PrefetchReader = (
            io.BufferedReader(cast(io.RawIOBase, raw), compression.CHUNK)
            if regular
            else PrefetchReader(raw)
        )
        head = reader.peek(compression.SNIFF_SIZE)[: compression.SNIFF_SIZE]
        if not head:
            raise InvalidArchiveError(f"{self.what} is empty")
        self.outer_codec = compression.sniff(head)
        if self.outer_codec == compression.NONE and regular:
            named = isinstance(self._path, str | Path) and str(self._path) != STDIO
            # a file given by name, or as stdin or an open file, is read in place through
            # descriptors of its own
            path = Path(str(self._path)) if named else Path(f"/proc/self/fd/{raw.fileno()}")
            files = TarFiles(path)
            self._stack.close()
            return files
        stream = compression.open_decompressed(
            cast(IO[bytes], reader),
            self.outer_codec,
            self.what,
            compression.ExpansionGuard(self.what),
        )
        spool = self._stack.enter_context(make_spool_dir())
        streamed = StreamFiles(
            stream,
            BlobStore(Path(spool)),
            what=self.what,
            transcode_to=want_codec,
            transcode_compressed=self._transcode_compressed,
            level=want_level,
            keep=self._keep,
            on_progress=self._member_started,
            on_transcoded=partial(self._keep_transcoded, want_level),
        )
        if self._joined:
            drain(stream)  # the last part is checked only once read to its end
        return streamed

    def _keep_transcoded(self, level: int | None, member: Member, store: BlobStore) -> None:
        if self._cache is None:
            return
        assert member.diff_id and member.stored_codec and member.stored_digest
        self._cache.put(
            member.diff_id,
            member.stored_codec,
            level,
            store.path(member.stored_digest),
            member.stored_digest,
            member.uncompressed_size or 0,
        )

    def _member_started(self, name: str, size: int) -> None:
        self._current = (name, size)

    def _open(self) -> IO[bytes]:
        if not isinstance(self._path, str | Path):
            return self._track(self._path)
        if str(self._path) == STDIO:
            return self._track(_stdin())
        parts = find_split(self._path)
        if parts is not None:
            self._joined = True
            return self._track(cast(IO[bytes], self._stack.enter_context(open_parts(parts))))
        try:
            file = self._stack.enter_context(Path(self._path).open("rb"))  # noqa: SIM115
        except FileNotFoundError as exc:
            raise NotFoundError(f"no such file: {self._path}") from exc
        except IsADirectoryError as exc:
            raise UsageError(
                f"{self._path} is a directory; use oci:{self._path} for a layout"
            ) from exc
        except OSError as exc:
            raise SealiftError(f"cannot read {self._path}: {exc.strerror}") from exc
        return self._track(file)

    def _track(self, stream: IO[bytes]) -> IO[bytes]:
        self.input_counter = CountingReader(stream)
        return self.input_counter  # type: ignore[return-value]

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> ArchiveSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _omitted(extra: dict[str, bytes], what: str) -> Omitted | None:
    """What an update bundle leaves out, from its ``sealift/`` part; None for other archives."""
    from sealift.update import UPDATE_FILE, Omitted  # with the delta code: only when needed

    update = extra.get(UPDATE_FILE)
    return None if update is None else Omitted.parse(update, f"{what}: sealift/{UPDATE_FILE}")


def _short(name: str) -> str:
    """``blobs/sha256/9f86d0...`` -> ``9f86d081884c``; ``<id>/layer.tar`` -> ``<id[:12]>``."""
    parts = name.split("/")
    return parts[-1][:12] if name.startswith("blobs/") else parts[0][:12]


def _stdin() -> IO[bytes]:
    """Standard input without ``sys.stdin``'s buffer: a read-ahead thread blocked in that buffer
    holds its lock, and the interpreter aborts when it flushes stdin at exit (after Ctrl-C)."""
    try:
        return open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    except (AttributeError, OSError, ValueError):
        return sys.stdin.buffer


def _is_regular_file(stream: IO[bytes]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


class ArchiveSink:
    """Writes the dual-format archive to a path (atomically) or to stdout (``-``); with
    ``split``, to a path as parts of at most that many bytes (see ``sealift.split``)."""

    keeps_blobs = True

    def __init__(
        self,
        path: str | Path | IO[bytes],
        *,
        split: int | None = None,
        extra_files: ExtraFiles | None = None,
    ) -> None:
        """``extra_files`` is given the entries as written and returns the files to store under
        ``sealift/`` (name -> bytes), e.g. a compose bundle's part."""
        if split is not None and (not isinstance(path, str | Path) or str(path) == STDIO):
            raise UsageError("a split archive needs a file name, not a stream")
        self._path = path
        self._split = split
        self._extra = extra_files

    def accepts_codec(self, codec: str) -> bool:
        return codec in compression.LAYER_CODECS

    def missing_layers(self, entries: list[Entry]) -> set[Digest]:
        return all_layers(entries)

    def write(self, entries: list[Entry], *, omit: set[Digest] | None = None) -> WriteResult:
        """``omit`` leaves those blobs out (an update for a site that holds them)."""
        extra = self._extra(entries) if self._extra is not None else None
        left_out = omit or set()
        write = partial(write_archive, entries, extra_files=extra, omit=left_out)
        if not isinstance(self._path, str | Path):
            write(self._path)
        elif str(self._path) == STDIO:
            write(sys.stdout.buffer)
            sys.stdout.buffer.flush()
        elif self._split is not None:
            size = archive_size(entries, extra, left_out)
            write_split(Path(self._path), self._split, write, size)
        else:
            check_free_space(Path(self._path), archive_size(entries, extra, left_out))
            write_atomically(Path(self._path), write)
        names = [str(tag) for entry in entries for tag in entry.tags]
        return WriteResult(names=names, layers_sent=sum(len(list(e.images())) for e in entries))


def write_atomically(path: Path, write: object) -> None:
    """Write via a temp file in the target's directory, renamed into place only when complete."""
    directory = path.parent if str(path.parent) else Path()
    if path.is_dir():
        raise UsageError(f"{path} is a directory; name an archive file or use oci:{path}")
    try:
        fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".partial")
    except FileNotFoundError as exc:
        raise UsageError(f"cannot write {path}: directory {directory} does not exist") from exc
    except OSError as exc:
        raise SealiftError(f"cannot write {path}: {exc.strerror}") from exc
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)  # type: ignore[operator]
            out.flush()
        temp.chmod(0o644 & ~_umask())
        temp.replace(path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise SealiftError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
