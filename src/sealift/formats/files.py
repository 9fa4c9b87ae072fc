"""The files of an image archive or layout, read safely.

A format reader sees an archive as :class:`Files`: names mapped to members it can open. Three
implementations: a seekable tar read in place, a tar stream spooled as it arrives (hashing, and
optionally transcoding, each member on the way), and a layout directory. All of them refuse unsafe
names, links that leave the archive, device files and conflicting duplicates.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, cast

from sealift import compression
from sealift.blobs import BlobStore
from sealift.digest import Digest, Hasher
from sealift.errors import InvalidArchiveError, LimitExceededError, SealiftError
from sealift.model import MAX_JSON_SIZE
from sealift.progress import human_size
from sealift.verify import CHUNK

MAX_MEMBERS = 100_000
_LINK_DEPTH = 16
_INLINE_LIMIT = 256 * 1024
_TAR_MAGIC_OFFSET = 257
_BLOB_NAME = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_METADATA_NAMES = frozenset({"index.json", "manifest.json", "oci-layout", "repositories"})
_MAX_HEADER_READ = 16 * 1024 * 1024


@dataclass
class Member:
    """One regular file of an archive.

    ``digest``/``size`` describe the stored bytes when they were hashed on arrival. When a streamed
    layer was transcoded on arrival, ``open`` returns the transcoded bytes (``stored_codec``,
    ``stored_digest``, ``stored_size``) while ``digest`` still names the original bytes, and
    ``diff_id`` is the digest of the uncompressed content.
    """

    name: str
    size: int
    opener: _Opener
    digest: Digest | None = None
    codec: str | None = None
    diff_id: Digest | None = None
    decode_error: SealiftError | None = None
    stored_codec: str | None = None
    stored_digest: Digest | None = None
    stored_size: int | None = None
    uncompressed_size: int | None = None
    inline: bytes | None = field(default=None, repr=False)

    def open(self) -> IO[bytes]:
        if self.inline is not None:
            return io.BytesIO(self.inline)
        return self.opener()

    @property
    def transcoded(self) -> bool:
        return self.stored_digest is not None


class _Opener(Protocol):
    def __call__(self) -> IO[bytes]: ...


class Files(Protocol):
    """Named members of an archive or layout directory."""

    def get(self, name: str) -> Member | None: ...

    def names(self) -> Iterable[str]: ...


def safe_name(raw: str) -> str:
    """Normalise a member name; refuse absolute paths, ``..``, and control characters."""
    if not raw or "\x00" in raw or "\\" in raw or any(ord(c) < 32 for c in raw):
        raise InvalidArchiveError(f"unsafe member name {raw!r} in archive")
    if raw.startswith("/"):
        raise InvalidArchiveError(f"absolute member path {raw!r} in archive")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArchiveError(f"member path {raw!r} escapes the archive with '..'")
    return "/".join(parts)


class _LinkTable:
    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.links: dict[str, str] = {}

    def add_member(self, member: Member) -> None:
        self._check_count()
        existing = self.members.get(member.name)
        if existing is not None:
            if existing.digest is None or member.digest is None or existing.digest != member.digest:
                raise InvalidArchiveError(
                    f"duplicate entry {member.name!r} in archive with different content"
                )
            return
        if member.name in self.links:
            raise InvalidArchiveError(f"duplicate entry {member.name!r} in archive")
        self.members[member.name] = member

    def add_link(self, name: str, target: str) -> None:
        self._check_count()
        if name.startswith("blobs/"):
            raise InvalidArchiveError(f"link {name!r} where a blob belongs: refusing")
        if name in self.members or (name in self.links and self.links[name] != target):
            raise InvalidArchiveError(f"duplicate entry {name!r} in archive")
        self.links[name] = target

    def _check_count(self) -> None:
        if len(self.members) + len(self.links) >= MAX_MEMBERS:
            raise LimitExceededError(f"archive has more than {MAX_MEMBERS} entries")

    def get(self, name: str) -> Member | None:
        seen = 0
        while name in self.links:
            seen += 1
            if seen > _LINK_DEPTH:
                raise InvalidArchiveError(f"link cycle at {name!r} in archive")
            name = self.links[name]
        return self.members.get(name)

    def names(self) -> Iterable[str]:
        return [*self.members, *self.links]


def _link_target(info: tarfile.TarInfo, name: str) -> str:
    target = info.linkname
    if info.issym():
        if target.startswith("/"):
            raise InvalidArchiveError(f"symlink {name!r} points outside the archive ({target!r})")
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if target.startswith("../") or target == "..":
            raise InvalidArchiveError(
                f"symlink {name!r} points outside the archive ({info.linkname!r})"
            )
    return safe_name(target)


def _kind_error(info: tarfile.TarInfo, name: str) -> InvalidArchiveError:
    kinds = {
        tarfile.CHRTYPE: "character device",
        tarfile.BLKTYPE: "block device",
        tarfile.FIFOTYPE: "fifo",
    }
    kind = kinds.get(info.type, f"entry of type {info.type!r}")
    return InvalidArchiveError(f"{kind} {name!r} in archive: refusing")


@contextmanager
def _tar_errors(what: str) -> Iterator[None]:
    """tarfile's own errors, as one archive error naming ``what``."""
    try:
        yield
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidArchiveError(f"{what} is truncated or not a valid tar ({exc})") from exc


class TarFiles:
    """Members of a seekable, uncompressed tar file, read in place."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._table = _LinkTable()
        with path.open("rb") as file, _tar_errors(f"archive {path}"):
            file_size = os.fstat(file.fileno()).st_size
            with tarfile.open(fileobj=file, mode="r:") as tar:
                for info in tar:
                    self._add(info, file_size)

    def _add(self, info: tarfile.TarInfo, file_size: int) -> None:
        if info.isdir():
            safe_name(info.name)
            return
        name = safe_name(info.name)
        if info.issym() or info.islnk():
            self._table.add_link(name, _link_target(info, name))
            return
        if not info.isreg():
            raise _kind_error(info, name)
        if info.offset_data + info.size > file_size:
            raise InvalidArchiveError(f"archive {self.path} is truncated inside {name!r}")
        offset, size, path = info.offset_data, info.size, self.path
        member = Member(name, size, lambda: cast(IO[bytes], _Section(path, offset, size)))
        if name in self._table.members:
            member.digest = _hash(member)
            previous = self._table.members[name]
            previous.digest = previous.digest or _hash(previous)
        self._table.add_member(member)

    def get(self, name: str) -> Member | None:
        return self._table.get(name)

    def names(self) -> Iterable[str]:
        return self._table.names()


def _hash(member: Member) -> Digest:
    hasher = Hasher()
    with member.open() as stream:
        while chunk := stream.read(CHUNK):
            hasher.update(chunk)
    return hasher.digest()


class _Section(io.RawIOBase):
    """A read-only, seekable window onto part of a file, with its own file descriptor (thread
    safe)."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._start = offset
        self._end = offset + size
        self._offset = offset

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: self._start, io.SEEK_CUR: self._offset, io.SEEK_END: self._end}
        target = base[whence] + offset
        if target < self._start:
            raise ValueError("negative seek position")
        self._offset = min(target, self._end)
        return self._offset - self._start

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._end - self._offset)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._offset)
        if not data:
            raise InvalidArchiveError("archive file changed or was truncated while reading")
        n = len(data)
        buffer[:n] = data
        self._offset += n
        return n

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class StreamFiles:
    """Members of a tar stream, spooled to ``store`` as they arrive.

    Each member is hashed on the way. A member that looks like a layer (a tar, or gzip/zstd data)
    is also decompressed and hashed, so its diff_id is known without a second read; when
    ``transcode_to`` names a codec, such a member is stored recompressed with it instead of as it
    came, which overlaps compression with the arrival of the stream. With ``keep=False`` nothing
    but small members is kept (enough to verify or inspect a stream without disk space).
    ``on_transcoded`` is told of each member stored transcoded (to keep it in a layer cache).
    """

    def __init__(
        self,
        stream: IO[bytes],
        store: BlobStore,
        *,
        what: str = "archive",
        transcode_to: str | None = None,
        transcode_compressed: bool = True,
        keep: bool = True,
        level: int | None = None,
        on_progress: ProgressCallback | None = None,
        on_transcoded: Callable[[Member, BlobStore], None] | None = None,
    ) -> None:
        self._table = _LinkTable()
        self._on_transcoded = on_transcoded
        self._store = store
        self._transcode_to = transcode_to
        self._transcode_compressed = transcode_compressed
        self._keep = keep
        self._level = level
        self._progress = on_progress
        self._forward = _ForwardOnly(stream)
        forward = cast(IO[bytes], self._forward)
        with _tar_errors(what), tarfile.open(fileobj=forward, mode="r:") as tar:
            for info in tar:
                self._add(tar, info)

    def _add(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        name = safe_name(info.name)
        if info.isdir():
            return
        if info.issym() or info.islnk():
            self._table.add_link(name, _link_target(info, name))
            return
        if not info.isreg():
            raise _kind_error(info, name)
        _check_member_size(name, info.size)
        if self._progress is not None:
            self._progress(name, info.size)
        if info.sparse is not None:
            source = tar.extractfile(info)
            assert source is not None
        else:  # read the body straight from the stream: tarfile's file objects copy twice
            source = cast(IO[bytes], _Body(self._forward, info.offset_data, info.size))
        member = self._spool(name, info.size, source)
        self._table.add_member(member)

    def _spool(self, name: str, size: int, source: IO[bytes]) -> Member:
        head = source.read(min(size, _INLINE_LIMIT))
        if len(head) < min(size, _INLINE_LIMIT):
            raise InvalidArchiveError(f"archive is truncated inside {name!r}")
        if size <= _INLINE_LIMIT and not _looks_like_layer(head):
            return Member(name, size, _never, digest=_digest_of(head), inline=head)
        compressed = compression.sniff(head) != compression.NONE
        member = _spool_large(
            name,
            size,
            head,
            source,
            self._store,
            None if compressed and not self._transcode_compressed else self._transcode_to,
            self._keep,
            self._level,
        )
        if member.transcoded and self._on_transcoded is not None:
            self._on_transcoded(member, self._store)
        return member

    def get(self, name: str) -> Member | None:
        return self._table.get(name)

    def names(self) -> Iterable[str]:
        return self._table.names()


def _check_member_size(name: str, size: int) -> None:
    """Refuse at its header a member larger than anything it can legitimately be."""
    if name in _METADATA_NAMES and size > MAX_JSON_SIZE:
        raise LimitExceededError(
            f"archive member {name!r} is {human_size(size)}: image metadata is at most "
            f"{human_size(MAX_JSON_SIZE)}"
        )
    cap = compression.max_uncompressed()
    if size > cap:
        raise LimitExceededError(
            f"archive member {name!r} is {human_size(size)}, more than the {human_size(cap)} "
            "sealift accepts (set SEALIFT_MAX_UNCOMPRESSED to raise the cap)"
        )


class ProgressCallback(Protocol):
    """Told of each member as its body starts to arrive."""

    def __call__(self, name: str, size: int) -> None: ...


def _never() -> IO[bytes]:
    raise AssertionError("inline member has no opener")


def _digest_of(data: bytes) -> Digest:
    hasher = Hasher()
    hasher.update(data)
    return hasher.digest()


def _looks_like_layer(head: bytes) -> bool:
    codec = compression.sniff(head)
    if codec in (compression.GZIP, compression.ZSTD):
        return True
    return head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar" or (
        len(head) >= 1024 and not head.strip(b"\x00")
    )


def _spool_large(
    name: str,
    size: int,
    head: bytes,
    source: IO[bytes],
    store: BlobStore,
    transcode_to: str | None,
    keep: bool,
    level: int | None,
) -> Member:
    from sealift.layers import LayerDigester  # the layer pipeline lives beside the model

    stream = cast(IO[bytes], _Prefixed(head, source))
    codec = compression.sniff(head)
    what = f"archive member {name!r}"
    if not _looks_like_layer(head):
        digest, _ = store.add(lambda out: _copy(stream, out, size, what))
        return Member(name, size, lambda: store.open(digest), digest=digest)
    named = _BLOB_NAME.fullmatch(name)
    digester = LayerDigester(
        codec,
        what,
        target=transcode_to,
        level=level,
        expected_digest=Digest("sha256", named.group(1)) if named else None,
    )
    member = Member(name, size, _never, codec=codec)
    try:
        if digester.target is not None or keep:

            def spool(out: IO[bytes]) -> None:
                if digester.target is None:
                    compression.ensure_room(out, size, what)
                digester.run(stream, out)

            stored_digest, stored_size = store.add(spool)
            member.opener = lambda: store.open(stored_digest)
            if digester.target is not None:
                member.stored_codec = digester.target
                member.stored_digest, member.stored_size = stored_digest, stored_size
        else:
            digester.run(stream, None)
    except LimitExceededError:
        raise
    except InvalidArchiveError as exc:
        member.decode_error = exc
        member.opener = _raise(exc)
        return member
    member.digest = digester.raw_digest
    member.diff_id = digester.diff_id
    member.uncompressed_size = digester.uncompressed_size
    return member


def _raise(error: SealiftError) -> _Opener:
    def opener() -> IO[bytes]:
        raise error

    return opener


def _copy(source: IO[bytes], out: IO[bytes], size: int, what: str) -> None:
    compression.ensure_room(out, size, what)
    while chunk := source.read(CHUNK):
        out.write(chunk)


class _ForwardOnly(io.RawIOBase):
    """A stream that ``tarfile`` may treat as seekable, as long as it only seeks forward.

    tarfile's own stream mode copies every byte several times through its buffers; reading
    members straight from the stream, and skipping forward by reading, avoids that.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._position + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < self._position:
            raise io.UnsupportedOperation("a tar stream can only be read forward")
        while self._position < target:
            skipped = len(self._raw.read(min(CHUNK, target - self._position)))
            if not skipped:
                break  # tarfile notices the missing data when it reads
            self._position += skipped
        return self._position

    def read(self, size: int = -1) -> bytes:
        # tarfile reads a pax or GNU long-name header whole, at the size its header claims
        if size < 0 or size > _MAX_HEADER_READ:
            raise LimitExceededError(
                f"archive has a tar header of {size} bytes: refusing (at most {_MAX_HEADER_READ})"
            )
        return super().read(size) or b""

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n: int = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        self._position += n
        return n


class _Body(io.RawIOBase):
    """The body of the tar member at ``offset``: exactly ``size`` bytes of a forward-only stream."""

    def __init__(self, stream: _ForwardOnly, offset: int, size: int) -> None:
        stream.seek(offset)
        self._stream = stream
        self._remaining = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._remaining <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), self._remaining)]
        n = self._stream.readinto(view)
        if n == 0:
            raise InvalidArchiveError("archive is truncated inside a member")
        self._remaining -= n
        return n


class _Prefixed(io.RawIOBase):
    """``prefix`` followed by the rest of ``rest``."""

    def __init__(self, prefix: bytes, rest: IO[bytes]) -> None:
        self._prefix = memoryview(prefix)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._rest.readinto(buffer)  # type: ignore[attr-defined,no-any-return]


class DirFiles:
    """Members of a layout directory. Only regular files count; symlinks are refused."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, name: str) -> Member | None:
        name = safe_name(name)
        path = self.root / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InvalidArchiveError(f"cannot read {path}: {exc.strerror}") from exc
        if stat.S_ISLNK(info.st_mode):
            raise InvalidArchiveError(f"symlink {path} where a blob belongs: refusing")
        if not stat.S_ISREG(info.st_mode):
            raise InvalidArchiveError(f"{path} is not a regular file")
        return Member(name, info.st_size, lambda: _open_nofollow(path))

    def names(self) -> Iterator[str]:
        for dirpath, _, filenames in os.walk(self.root):
            for filename in filenames:
                yield str(Path(dirpath, filename).relative_to(self.root))


def _open_nofollow(path: Path) -> IO[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    return os.fdopen(fd, "rb")
