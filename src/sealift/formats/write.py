"""Write the model as sealift's dual-format archive or as an OCI image layout.

The archive is one tar holding an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``)
and Docker's ``manifest.json`` + ``repositories`` pointing at the same blobs, so that ``docker
load`` (classic and containerd store), ``ctr images import``, ``podman load`` and skopeo all read
it. Every blob is stored once under its digest. Output is reproducible: fixed entry order, mtime 0,
uid/gid 0, no extended attributes.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import platform as host
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, cast

from sealift import compression, media
from sealift.blobs import BlobStore
from sealift.digest import Digest
from sealift.errors import InvalidArchiveError, UsageError
from sealift.formats.files import safe_name
from sealift.formats.read import CONTAINERD_NAME, EXTRA_PART, REF_NAME
from sealift.layers import copy_verified
from sealift.model import (
    Descriptor,
    Entry,
    Image,
    ImageIndex,
    Index,
    Layer,
    Platform,
    canonical_json,
)
from sealift.reference import Reference
from sealift.verify import CHUNK

ExtraFile = bytes | Path
"""A file stored under ``sealift/``: its bytes, or a file to stream in (a large one)."""

LAYOUT_DOCUMENT = canonical_json({"imageLayoutVersion": media.OCI_LAYOUT_VERSION})


@dataclass(frozen=True)
class PlannedBlob:
    digest: Digest
    size: int
    open: Callable[[], IO[bytes]]
    layer: Layer | None = None


def planned_blobs(entries: list[Entry]) -> list[PlannedBlob]:
    """Every blob the entries need, each once, in a fixed order (layers, config, manifest)."""
    seen: set[Digest] = set()
    ordered: list[PlannedBlob] = []

    def add(blob: PlannedBlob) -> None:
        if blob.digest not in seen:
            seen.add(blob.digest)
            ordered.append(blob)

    def add_bytes(raw: bytes, digest: Digest) -> None:
        add(PlannedBlob(digest, len(raw), lambda: io.BytesIO(raw)))

    def visit(target: Image | ImageIndex) -> None:
        if isinstance(target, ImageIndex):
            for _, child in target.children:
                visit(child)
            add_bytes(target.index.raw, target.index.digest)
            return
        for layer in target.layers:
            add(PlannedBlob(layer.digest, layer.size, layer.open, layer))
        add_bytes(target.config.raw, target.config.digest)
        assert target.manifest is not None, "images are given final manifests before writing"
        add_bytes(target.manifest.raw, target.manifest.digest)

    for entry in entries:
        visit(entry.target)
    return ordered


def target_descriptor(target: Image | ImageIndex) -> Descriptor:
    if isinstance(target, ImageIndex):
        return Descriptor(target.index.media_type, target.index.digest, len(target.index.raw))
    assert target.manifest is not None
    return Descriptor(
        target.manifest.media_type,
        target.manifest.digest,
        len(target.manifest.raw),
        platform=target.platform,
    )


def index_document(entries: list[Entry]) -> bytes:
    """index.json: one descriptor per tag, annotated as containerd and the OCI spec expect.

    The OCI ref name is the name in the form docker prints it (``myapp:1.0``, ``myorg/api:1.2``,
    ``registry:5000/x/y:1``), which is what skopeo users type (``oci-archive:stack.tar:myapp:1.0``);
    unlike the bare tag Docker 25 writes, it keeps two repositories with the same tag distinct.
    The fully qualified name goes in ``io.containerd.image.name``.
    """
    descriptors = []
    for entry in entries:
        base = target_descriptor(entry.target)
        names = [{CONTAINERD_NAME: str(tag), REF_NAME: tag.familiar} for tag in entry.tags] + [
            {REF_NAME: ref} for ref in entry.ref_names if not _names_a_tag(ref, entry)
        ]
        for labels in names or [{}]:
            descriptors.append(
                Descriptor(base.media_type, base.digest, base.size, labels, base.platform).to_json()
            )
    return canonical_json(
        {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": descriptors}
    )


def _names_a_tag(ref_name: str, entry: Entry) -> bool:
    try:
        return Reference.parse(ref_name) in entry.tags
    except UsageError:
        return False


def host_platform() -> Platform:
    machine = host.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    return Platform("linux", arch)


def docker_image(target: Image | ImageIndex, preferred: Platform) -> Image | None:
    """The single image Docker's manifest.json can describe for a target (the host's platform)."""
    if isinstance(target, Image):
        return target
    images = list(target.without_attestations().images())
    for image in images:
        if image.effective_platform.matches(preferred):
            return image
    return images[0] if len(images) == 1 else None


def docker_manifest_document(entries: list[Entry]) -> tuple[bytes, bytes]:
    """manifest.json and repositories for ``docker load``; images grouped by ID like docker save."""
    preferred = host_platform()
    order: list[Digest] = []
    by_id: dict[Digest, tuple[Image, list[str]]] = {}
    repositories: dict[str, dict[str, str]] = {}
    for entry in entries:
        image = docker_image(entry.target, preferred)
        if image is None or not image.config.is_image:
            continue
        if image.id not in by_id:
            order.append(image.id)
            by_id[image.id] = (image, [])
        for tag in entry.tags:
            if tag.tag is None:
                continue
            familiar = f"{tag.familiar_repository}:{tag.tag}"
            if familiar not in by_id[image.id][1]:
                by_id[image.id][1].append(familiar)
            repositories.setdefault(tag.familiar_repository, {})[tag.tag] = image.id.hex
    items = []
    for image_id in order:
        image, tags = by_id[image_id]
        items.append(
            {
                "Config": f"blobs/sha256/{image.id.hex}",
                "RepoTags": tags or None,
                "Layers": [
                    f"blobs/{layer.digest.algorithm}/{layer.digest.hex}" for layer in image.layers
                ],
                "LayerSources": {
                    str(layer.diff_id): Descriptor(
                        layer.descriptor.media_type, layer.digest, layer.size
                    ).to_json()
                    for layer in image.layers
                },
            }
        )
    return canonical_json(items), canonical_json(repositories)


def copy_blob(blob: PlannedBlob, out: IO[bytes], what: str) -> None:
    """Copy a blob's bytes to ``out``, verifying a layer that was not checked on the way in."""
    layer = blob.layer
    compression.ensure_room(out, blob.size, what)
    with blob.open() as source:
        if layer is None or layer.verified:
            send_file = getattr(out, "send_file", None)
            remaining = blob.size - (send_file(source, blob.size) if callable(send_file) else 0)
            while remaining > 0:
                chunk = source.read(min(CHUNK, remaining))
                if not chunk:
                    raise InvalidArchiveError(f"{what}: blob {blob.digest} ended early")
                out.write(chunk)
                remaining -= len(chunk)
            return
        copy_verified(layer, source, out, what)


def _copy_to(blob: PlannedBlob, out: IO[bytes]) -> None:
    copy_blob(blob, out, blob.layer.label if blob.layer else f"blob {blob.digest}")


def _info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info


def write_archive(
    entries: list[Entry],
    out: IO[bytes],
    *,
    omit: frozenset[Digest] | set[Digest] = frozenset(),
    before_end: Callable[[], None] | None = None,
    on_blob: Callable[[Digest, int], None] | None = None,
    extra_files: Mapping[str, ExtraFile] | None = None,
) -> None:
    """Write the dual-format archive of ``entries`` as a tar stream to ``out``.

    ``omit`` leaves blobs out (a thin archive for an engine that already holds those layers);
    ``before_end`` runs before the index and end-of-archive are written, and may raise to leave
    the stream incomplete. ``extra_files`` (name relative to ``sealift/`` -> bytes, or a file
    streamed in) are stored under ``sealift/`` right after ``oci-layout``; image tools ignore them.
    """
    manifest_json, repositories = docker_manifest_document(entries)
    tar = _TarWriter(out)
    tar.add("oci-layout", LAYOUT_DOCUMENT)
    if extra_files is not None:
        _add_extra_files(tar, extra_files)
    tar.add_directory("blobs")
    tar.add_directory("blobs/sha256")
    for blob in planned_blobs(entries):
        if blob.digest in omit:
            continue
        if on_blob is not None:
            on_blob(blob.digest, blob.size)
        with tar.member(f"blobs/{blob.digest.algorithm}/{blob.digest.hex}", blob.size) as body:
            copy_blob(blob, body, blob.layer.label if blob.layer else f"blob {blob.digest}")
    if before_end is not None:
        before_end()
    tar.add("index.json", index_document(entries))
    tar.add("manifest.json", manifest_json)
    tar.add("repositories", repositories)
    tar.close()


def archive_size(
    entries: list[Entry],
    extra_files: Mapping[str, ExtraFile] | None = None,
    omit: frozenset[Digest] | set[Digest] = frozenset(),
) -> int:
    """The exact size in bytes of what ``write_archive(entries, ...)`` writes."""
    manifest_json, repositories = docker_manifest_document(entries)
    documents = {
        "oci-layout": len(LAYOUT_DOCUMENT),
        **{EXTRA_PART + name: _extra_size(data) for name, data in (extra_files or {}).items()},
        "index.json": len(index_document(entries)),
        "manifest.json": len(manifest_json),
        "repositories": len(repositories),
    }
    directories = _header_size("blobs", True) + _header_size("blobs/sha256", True)
    if extra_files is not None:
        directories += _header_size(EXTRA_PART.rstrip("/"), True)
    size = directories + 2 * tarfile.BLOCKSIZE  # and the two zero blocks that end a tar
    for name, length in [
        *documents.items(),
        *(
            (f"blobs/{b.digest.algorithm}/{b.digest.hex}", b.size)
            for b in planned_blobs(entries)
            if b.digest not in omit
        ),
    ]:
        size += _header_size(name) + length + (-length % tarfile.BLOCKSIZE)
    return size + (-size % tarfile.RECORDSIZE)


def _header_size(name: str, directory: bool = False) -> int:
    return len(_info(name, directory=directory).tobuf(tarfile.GNU_FORMAT, "utf-8"))


def _extra_size(data: ExtraFile) -> int:
    return len(data) if isinstance(data, bytes) else data.stat().st_size


def _add_extra_files(tar: _TarWriter, files: Mapping[str, ExtraFile]) -> None:
    tar.add_directory(EXTRA_PART.rstrip("/"))
    for name, data in files.items():
        if safe_name(name) != name:
            raise UsageError(f"unsafe extra file name {name!r}")
        if isinstance(data, bytes):
            tar.add(EXTRA_PART + name, data)
            continue
        with data.open("rb") as stream, tar.member(EXTRA_PART + name, _extra_size(data)) as body:
            shutil.copyfileobj(stream, body, CHUNK)


class _TarWriter:
    """A tar stream written straight to ``out``: the bytes tarfile's ``w|`` mode writes (GNU
    format, end blocks, padding to a whole record), without its buffer, which copies every byte
    of a member's body three times. Nothing ends the archive unless ``close`` is called, so a
    failure leaves it visibly truncated."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._offset = 0

    def add(self, name: str, data: bytes) -> None:
        with self.member(name, len(data)) as body:
            body.write(data)

    def add_directory(self, name: str) -> None:
        self._write(_info(name, directory=True).tobuf(tarfile.GNU_FORMAT, "utf-8"))

    @contextlib.contextmanager
    def member(self, name: str, size: int) -> Iterator[IO[bytes]]:
        """The body of a regular file of ``size`` bytes; exactly that many must be written."""
        compression.ensure_room(self._out, size, name)
        self._write(_info(name, size).tobuf(tarfile.GNU_FORMAT, "utf-8"))
        before = self._offset
        yield cast(IO[bytes], _Body(self._write, self._send_file))
        if self._offset - before != size:
            raise InvalidArchiveError(f"{name}: wrote {self._offset - before} of {size} bytes")
        self._write(tarfile.NUL * (-size % tarfile.BLOCKSIZE))

    def close(self) -> None:
        self._write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        self._write(tarfile.NUL * (-self._offset % tarfile.RECORDSIZE))

    def _write(self, data: bytes | memoryview) -> None:
        self._out.write(data)
        self._offset += len(data)

    def _send_file(self, source: IO[bytes], size: int) -> int:
        """Copy up to ``size`` bytes of ``source`` in the kernel when both ends are plain files
        (or ``out`` a pipe): no pass through Python's buffers. Returns how many were copied,
        with ``source`` positioned after them; 0 when they must be copied the usual way."""
        if not isinstance(self._out, io.BufferedWriter | io.FileIO) or not isinstance(
            source, io.BufferedReader | io.FileIO
        ):
            return 0
        try:
            in_fd, out_fd = source.fileno(), self._out.fileno()
            if not stat.S_ISREG(os.fstat(in_fd).st_mode):
                return 0
            start = source.tell()
            self._out.flush()
        except (OSError, ValueError):
            return 0
        sent = 0
        with contextlib.suppress(OSError):  # refused (or stopped): the rest goes the usual way
            while sent < size and (n := os.sendfile(out_fd, in_fd, start + sent, size - sent)):
                sent += n
        source.seek(start + sent)
        self._offset += sent
        return sent


class _Body(io.RawIOBase):
    def __init__(
        self,
        write: Callable[[bytes | memoryview], None],
        send_file: Callable[[IO[bytes], int], int],
    ) -> None:
        self._write = write
        self.send_file = send_file
        """Copies a file's bytes in the kernel where it can (see ``_TarWriter._send_file``)."""

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | memoryview) -> int:  # type: ignore[override]
        self._write(data)
        return len(data)


def write_layout(entries: list[Entry], root: Path) -> None:
    """Write ``entries`` into an OCI image layout directory, keeping what it already holds.

    A new layout is built in a temporary sibling directory and renamed into place when complete.
    In an existing one, blobs only ever appear whole under their digest and index.json is replaced
    atomically at the end, so a failure leaves at most unreferenced, verified blobs behind.
    """
    if root.exists():
        _write_layout_into(entries, root)
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".partial"))
    try:
        _write_layout_into(entries, temp)
        temp.chmod(0o755)
        temp.rename(root)
    except OSError:
        shutil.rmtree(temp, ignore_errors=True)
        if not root.is_dir():
            raise
        _write_layout_into(entries, root)  # another copy made the layout meanwhile: add to it
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _write_layout_into(entries: list[Entry], root: Path) -> None:
    store = BlobStore(root / "blobs")
    for blob in planned_blobs(entries):
        if store.has(blob.digest):
            continue
        store.add(partial(_copy_to, blob), expected=blob.digest)
    index = json.loads(index_document(entries))
    with _locked(root):  # copies into one layout at once each add their names
        existing = _existing_descriptors(root, index["manifests"])
        index["manifests"] = existing + index["manifests"]
        _atomic_write(root / "oci-layout", LAYOUT_DOCUMENT)
        _atomic_write(root / "index.json", canonical_json(index))


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive lock on the layout directory itself (no lock file is left in it)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _existing_descriptors(root: Path, added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The layout's current index entries that the ``added`` ones do not replace: same full
    name (whatever form its ref name took when written), or the same ref name without one."""
    path = root / "index.json"
    if not path.is_file():
        return []
    new_names = [d.get("annotations", {}) for d in added]
    full_names = {n[CONTAINERD_NAME] for n in new_names if CONTAINERD_NAME in n}
    ref_names = {n[REF_NAME] for n in new_names if REF_NAME in n}
    current = Index.parse(path.read_bytes(), where=f"{path}")
    kept = []
    for descriptor in current.manifests:
        full = descriptor.annotations.get(CONTAINERD_NAME)
        ref = descriptor.annotations.get(REF_NAME)
        replaced = full in full_names if full else ref is not None and ref in ref_names
        if not replaced:
            kept.append(descriptor.to_json())
    return kept


def _atomic_write(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
