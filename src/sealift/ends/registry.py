"""A registry as a source and as a sink (``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]``).

Blobs move as they are: a pull hands the copy each layer as a lazy stream of the registry's
bytes, checked against its digest and size as it streams (:class:`CheckedBlob`). Told which
layers the copy will read (:meth:`RegistrySource.will_read`), the source downloads them
``parallel`` at a time ahead of it (:mod:`sealift.registry.prefetch`), so the sink, which reads
one blob after another, finds the next one already arriving. A push uploads
every blob with the compression it has, checked the same way before it is committed. So
manifests and indexes arrive byte-identical and keep their digests. Neither decompresses a
layer to check its diff_id, as skopeo and crane do not: that costs more CPU than the transfer
itself, and whatever unpacks the layer (an engine, a transcode) checks it there.

The sink works blob by blob, in the order of the per-blob contract other sinks share:
:meth:`RegistrySink.missing` (HEAD of every blob in every repository, in parallel), then per
blob a cross-repository mount where the registry already holds it under another repository,
else :meth:`RegistrySink.put_blob` (verified, then committed); then manifests by digest,
children before the indexes that list them, and tags last.
"""

from __future__ import annotations

import concurrent.futures
import functools
import io
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, cast

from sealift import compression, media
from sealift.digest import Digest
from sealift.ends.base import WriteResult
from sealift.errors import DigestMismatchError, InvalidArchiveError, UsageError
from sealift.model import (
    MAX_JSON_SIZE,
    Descriptor,
    Entry,
    Image,
    ImageConfig,
    ImageIndex,
    Index,
    Layer,
    Manifest,
    load_json,
)
from sealift.reference import Reference
from sealift.registry.client import RegistryClient
from sealift.registry.names import RegistryTarget, parse_docker_reference
from sealift.registry.options import BlobProgress, RegistryOptions
from sealift.registry.prefetch import PrefetchBlob, Prefetcher
from sealift.registry.upload import BlobUpload, UploadStats
from sealift.verify import CHUNK

__all__ = ["BlobProgress", "RegistryOptions", "RegistrySink", "RegistrySource"]

_MAX_DEPTH = 8


def _target(target: RegistryTarget | str) -> RegistryTarget:
    return parse_docker_reference(target) if isinstance(target, str) else target


# ----------------------------------------------------------------------------------- source
class RegistrySource:
    """Images on a registry: one (``docker://host/repo:tag``) or every tag of every
    repository the catalog lists (``docker://host/``)."""

    def __init__(
        self, target: RegistryTarget | str, options: RegistryOptions | None = None
    ) -> None:
        self.target = _target(target)
        self.options = options or RegistryOptions()
        self.client = RegistryClient(self.target.host, self.options.transport())
        self.input_counter = _Counter(self.client)
        self._blobs: dict[Digest, PrefetchBlob] = {}
        self._prefetcher: Prefetcher | None = None

    def entries(self, want_codec: str | None = None, want_level: int | None = None) -> list[Entry]:
        reference = self.target.reference
        if reference is not None:
            return [self.entry(reference)]
        entries = []
        for repository in sorted(self.client.catalog()):
            for tag in sorted(self.client.tags(repository)):
                entries.append(self.entry(Reference(self.target.host, repository, tag)))
        return entries

    def entry(self, reference: Reference) -> Entry:
        """The image or index ``reference`` names, its blobs not read yet."""
        wanted = str(reference.digest) if reference.digest else reference.tag
        assert wanted is not None
        fetched = self.client.get_manifest(reference.path, wanted)
        descriptor = Descriptor(fetched.media_type, fetched.digest, len(fetched.raw))
        target = self._target(reference.path, descriptor, fetched.raw, f"{reference}", 0)
        return Entry(target, (reference,))

    def _target(
        self, repository: str, descriptor: Descriptor, raw: bytes, where: str, depth: int
    ) -> Image | ImageIndex:
        if depth > _MAX_DEPTH:
            raise InvalidArchiveError(f"{where}: indexes nested deeper than {_MAX_DEPTH}")
        document = load_json(raw, where)
        is_index = isinstance(document, dict) and (
            media.is_index(str(document.get("mediaType", ""))) or "manifests" in document
        )
        if is_index:
            index = Index.parse(raw, descriptor.media_type, where=where)
            children = []
            for i, child in enumerate(index.manifests):
                child_where = f"{where} > manifests[{i}]"
                children.append((child, self._child(repository, child, child_where, depth + 1)))
            return ImageIndex(index, tuple(children))
        hint = descriptor.media_type if media.is_manifest(descriptor.media_type) else ""
        manifest = Manifest.parse(raw, hint, where=where)
        return self._image(repository, manifest, descriptor, where)

    def _child(
        self, repository: str, descriptor: Descriptor, where: str, depth: int
    ) -> Image | ImageIndex:
        fetched = self.client.get_manifest(repository, str(descriptor.digest))
        if fetched.digest != descriptor.digest or len(fetched.raw) != descriptor.size:
            raise DigestMismatchError(
                f"{where}: the registry's manifest is {len(fetched.raw)} bytes with digest "
                f"{fetched.digest}, expected {descriptor.size} bytes, {descriptor.digest}"
            )
        return self._target(repository, descriptor, fetched.raw, where, depth)

    def _image(
        self, repository: str, manifest: Manifest, descriptor: Descriptor, where: str
    ) -> Image:
        raw = self.client.read_blob(
            repository, manifest.config.digest, manifest.config.size, MAX_JSON_SIZE
        )
        if manifest.config.media_type not in (media.OCI_CONFIG, media.DOCKER_CONFIG):
            config = ImageConfig.artifact(raw, manifest.config.media_type)
            diff_ids: tuple[Digest, ...] = tuple(layer.digest for layer in manifest.layers)
        else:
            config = ImageConfig.parse(raw, where=f"{where} config")
            diff_ids = config.diff_ids
            if len(diff_ids) != len(manifest.layers):
                raise InvalidArchiveError(
                    f"{where} has {len(manifest.layers)} layers but its config lists "
                    f"{len(diff_ids)} diff_ids"
                )
        count = len(manifest.layers)
        layers = tuple(
            self._layer(repository, layer, diff_id, f"{where} layer {i + 1}/{count}")
            for i, (layer, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True))
        )
        return Image(config, layers, manifest, descriptor.platform)

    def _layer(self, repository: str, descriptor: Descriptor, diff_id: Digest, what: str) -> Layer:
        client, digest, size = self.client, descriptor.digest, descriptor.size
        codec = media.layer_codec(descriptor.media_type)
        label = what if codec is None else f"{what} ({digest})"

        def stream_blob() -> IO[bytes]:
            stream = client.open_blob(repository, digest, size)
            return cast(IO[bytes], CheckedBlob(stream, digest, size, label))

        def open_blob() -> IO[bytes]:
            prefetched = self._prefetcher.open(digest) if self._prefetcher else None
            return prefetched if prefetched is not None else stream_blob()

        self._blobs.setdefault(digest, PrefetchBlob(digest, size, stream_blob, label))

        if codec is None:  # an artifact's blob or an attestation: moved as it is, never unpacked
            return Layer(
                descriptor,
                digest,
                compression.NONE,
                open_blob,
                verified=True,
                opaque=True,
                label=label,
            )
        return Layer(descriptor, diff_id, codec, open_blob, verified=True, label=label)

    def will_read(self, digests: Sequence[Digest]) -> None:
        """The copy is about to read these layers (those its destination lacks), in about this
        order: the first streams to the reader as it reads, and ``parallel - 1`` workers start
        downloading the others ahead of it (handing bytes over between threads costs CPU, so
        the blob read first is not)."""
        if self._prefetcher is not None:
            self._prefetcher.close()
        blobs = [self._blobs[digest] for digest in digests if digest in self._blobs]
        workers = self.options.parallel - 1
        ahead = blobs[1:]
        self._prefetcher = Prefetcher(ahead, parallel=workers) if ahead and workers else None

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()
        self.client.close()


class CheckedBlob(io.RawIOBase):
    """A registry blob's bytes, checked against its digest and size as they stream: the read
    that completes the blob raises instead of returning its last bytes when they do not match,
    so a consumer that stops at the declared size (and never reads EOF) is protected too.

    That check is why a registry's layers count as verified: exact-blob destinations keep them
    as they are, and whatever unpacks one (an engine, a transcode) checks the diff_id then.
    """

    def __init__(self, raw: IO[bytes], digest: Digest, size: int, what: str) -> None:
        self._raw = raw
        self._digest = digest
        self._size = size
        self._what = what
        self._hasher = digest.new_hasher()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        left = self._size - self._hasher.size
        if left <= 0:
            return 0
        view = memoryview(buffer)[:left]
        n: int = self._raw.readinto(view)  # type: ignore[attr-defined]
        if not n:
            raise DigestMismatchError(
                f"{self._what}: ended after {self._hasher.size} bytes, expected {self._size}"
            )
        self._hasher.update(view[:n])
        if self._hasher.size == self._size and self._hasher.digest() != self._digest:
            raise DigestMismatchError(
                f"{self._what}: blob digest is {self._hasher.digest()}, expected {self._digest}"
            )
        return n

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _Counter:
    """Bytes downloaded so far, as the CLI's progress bar reads an input counter."""

    def __init__(self, client: RegistryClient) -> None:
        self._client = client

    @property
    def count(self) -> int:
        return self._client.bytes_read


# ------------------------------------------------------------------------------------- sink
@dataclass(frozen=True)
class Blob:
    """A blob the push needs: a layer (read from its source) or a config (bytes at hand)."""

    digest: Digest
    size: int
    layer: Layer | None = None
    data: bytes | None = None

    def write_verified(self, out: IO[bytes]) -> None:
        """Write the blob to ``out``; raise if it is not what its digest and size say.

        The bytes go up as they are, so their digest and size are all the registry keeps and
        all that is checked here: decompressing to check the diff_id would cost more CPU than
        the upload itself, and whatever unpacks the layer checks it.
        """
        if self.data is not None:
            out.write(self.data)
            return
        assert self.layer is not None
        what = self.layer.label or f"layer {self.digest}"
        hasher = self.digest.new_hasher()
        with self.layer.open() as stream:
            while chunk := stream.read(min(CHUNK, self.size - hasher.size + 1)):
                hasher.update(chunk)
                if hasher.size > self.size:
                    raise DigestMismatchError(f"{what}: more than the declared {self.size} bytes")
                out.write(chunk)
        if hasher.size != self.size:
            raise DigestMismatchError(f"{what}: {hasher.size} bytes, expected {self.size}")
        if hasher.digest() != self.digest:
            raise DigestMismatchError(
                f"{what}: blob digest is {hasher.digest()}, expected {self.digest}"
            )


@dataclass
class Placement:
    """One top-level image or index going to one repository, under these tags."""

    repository: str
    target: Image | ImageIndex
    tags: list[str] = field(default_factory=list)

    @property
    def digest(self) -> Digest:
        return _document(self.target)[1]


@dataclass
class PushSummary:
    images: list[dict[str, str]] = field(default_factory=list)
    blobs_sent: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    layers_sent: int = 0
    layers_skipped: int = 0
    bytes_sent: int = 0
    uploads_resumed: int = 0
    uploads_restarted: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_upload(self, blob: Blob, stats: UploadStats) -> None:
        with self._lock:
            self.blobs_sent += 1
            self.layers_sent += blob.layer is not None
            self.bytes_sent += stats.bytes_sent
            self.uploads_resumed += stats.resumed
            self.uploads_restarted += stats.restarted

    def add_skipped(self, blob: Blob, *, mounted: bool) -> None:
        with self._lock:
            self.blobs_skipped += not mounted
            self.blobs_mounted += mounted
            self.layers_skipped += blob.layer is not None

    def details(self, host: str) -> dict[str, object]:
        return {
            "registry": host,
            "images": self.images,
            "blobs_sent": self.blobs_sent,
            "blobs_skipped": self.blobs_skipped,
            "blobs_mounted": self.blobs_mounted,
            "bytes_sent": self.bytes_sent,
            "uploads_resumed": self.uploads_resumed,
            "uploads_restarted": self.uploads_restarted,
        }


class RegistrySink:
    """Pushes images to a registry: ``docker://host/repo:tag`` takes exactly one image,
    ``docker://host/`` takes every image under its own repository path and tags."""

    def __init__(
        self, target: RegistryTarget | str, options: RegistryOptions | None = None
    ) -> None:
        self.target = _target(target)
        self.options = options or RegistryOptions()
        self.client = RegistryClient(self.target.host, self.options.transport())
        self._checked: dict[tuple[str, Digest], bool] = {}
        self._stopping = threading.Event()

    @property
    def keeps_blobs(self) -> bool:
        return True

    def accepts_codec(self, codec: str) -> bool:
        return True  # blobs go up as they are; a registry that refuses a type says so

    def write(self, entries: list[Entry]) -> WriteResult:
        placements = self.place(entries)
        summary = PushSummary()
        wanted = _wanted(placements)
        present = self.missing(wanted)
        self._in_parallel(
            [
                functools.partial(self._deliver, blob, repositories, present, summary)
                for blob, repositories in _by_digest(wanted)
            ]
        )
        for placement in placements:
            self._put_documents(placement.repository, placement.target)
        names = []
        for placement in placements:
            digest = self._put_tags(placement)
            for tag in placement.tags or [str(digest)]:
                name = f"{self.target.host}/{placement.repository}{_ref_text(tag)}"
                names.append(name)
                summary.images.append({"name": name, "digest": str(digest)})
        return WriteResult(
            names=names,
            layers_sent=summary.layers_sent,
            layers_skipped=summary.layers_skipped,
            bytes_sent=summary.bytes_sent,
            details=summary.details(self.target.host),
        )

    # ---------------------------------------------------------------------------- placement
    def place(self, entries: list[Entry]) -> list[Placement]:
        """Which repository and tags each entry goes to."""
        reference = self.target.reference
        if reference is not None:
            if len(entries) != 1:
                raise UsageError(
                    f"{self.target} takes one image and the source has {len(entries)}: "
                    "pick one with --tag, or push to docker://HOST/ to keep every name"
                )
            placement = Placement(reference.path, entries[0].target)
            if reference.digest is not None and reference.digest != placement.digest:
                raise UsageError(
                    f"{self.target}: the image's digest is {placement.digest}, "
                    f"not {reference.digest}"
                )
            if reference.tag is not None:
                placement.tags.append(reference.tag)
            return [placement]
        placements: dict[tuple[str, Digest], Placement] = {}
        for entry in entries:
            if not entry.tags:
                name = entry.ref_names[0] if entry.ref_names else "an untagged image"
                raise UsageError(
                    f"{name} has no repository name to keep under {self.target}; "
                    f"push it to {self.target}REPO:TAG"
                )
            for tag in entry.tags:
                placement = Placement(tag.path, entry.target)
                key = (tag.path, placement.digest)
                placement = placements.setdefault(key, placement)
                if tag.tag is not None and tag.tag not in placement.tags:
                    placement.tags.append(tag.tag)
        return list(placements.values())

    # -------------------------------------------------------------------------- blob steps
    def missing_layers(self, entries: list[Entry]) -> set[Digest]:
        """The layers some repository of the push lacks (HEAD of each, in parallel); the
        answers are kept for :meth:`write`."""
        wanted = _wanted(self.place(entries))
        present = self.missing(wanted)
        return {
            blob.digest
            for repository, blobs in wanted.items()
            for blob in blobs
            if blob.layer is not None and repository not in present.get(blob.digest, set())
        }

    def missing(self, wanted: dict[str, list[Blob]]) -> dict[Digest, set[str]]:
        """HEAD of every blob in every repository (in parallel): where each one already is."""
        checks = [
            (repo, blob)
            for repo, blobs in wanted.items()
            for blob in blobs
            if (repo, blob.digest) not in self._checked
        ]

        def check(item: tuple[str, Blob]) -> None:
            repository, blob = item
            found = self.client.blob_size(repository, blob.digest) == blob.size
            self._checked[repository, blob.digest] = found

        self._in_parallel([functools.partial(check, item) for item in checks])
        present: dict[Digest, set[str]] = {}
        for (repository, digest), found in self._checked.items():
            if found:
                present.setdefault(digest, set()).add(repository)
        return present

    def _in_parallel(self, steps: list[Callable[[], None]]) -> None:
        """Run ``steps`` on ``parallel`` threads; the first failure (or Ctrl-C) stops the rest:
        queued steps are dropped and running uploads stop at their next read."""
        pool = ThreadPoolExecutor(max_workers=max(self.options.parallel, 1))
        try:
            futures = [pool.submit(step) for step in steps]
            concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
            for future in futures:
                if future.done():
                    future.result()
        except BaseException:
            self._stopping.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()

    def _deliver(
        self,
        blob: Blob,
        repositories: list[str],
        present: dict[Digest, set[str]],
        summary: PushSummary,
    ) -> None:
        """Get one blob into every repository that lacks it: mount it from one that has it,
        else upload it once and mount it into the others."""
        holders = sorted(present.get(blob.digest, set()))
        for repository in repositories:
            if repository in holders:
                self._skipped(blob, summary, mounted=False)
                continue
            if any(self.client.mount(repository, blob.digest, source) for source in holders[:1]):
                self._skipped(blob, summary, mounted=True)
            else:
                self.put_blob(repository, blob, summary)
            holders.append(repository)

    def put_blob(self, repository: str, blob: Blob, summary: PushSummary) -> None:
        """Upload one blob, verified before it is committed."""
        progress = self.options.progress
        if progress is not None:
            progress.blob_started(blob.digest, blob.size)
        upload = BlobUpload(
            self.client,
            repository,
            blob.digest,
            blob.size,
            blob.write_verified,
            chunk_size=self.options.chunk_size,
            monolithic_limit=self.options.monolithic_limit,
            progress=progress.blob_bytes if progress is not None else None,
            stopping=self._stopping,
        )
        summary.add_upload(blob, upload.run())

    def _skipped(self, blob: Blob, summary: PushSummary, *, mounted: bool) -> None:
        summary.add_skipped(blob, mounted=mounted)
        if self.options.progress is not None:
            self.options.progress.blob_skipped(blob.digest, blob.size, mounted=mounted)

    # ---------------------------------------------------------------------- manifests, tags
    def _put_documents(self, repository: str, target: Image | ImageIndex) -> None:
        """Every manifest and index under ``target`` by digest, children first."""
        if isinstance(target, ImageIndex):
            for _, child in target.children:
                self._put_documents(repository, child)
        raw, digest = _document(target)
        media_type = _media_type(target)
        if self.client.manifest_digest(repository, str(digest)) != digest:
            self.client.put_manifest(repository, str(digest), raw, media_type)

    def _put_tags(self, placement: Placement) -> Digest:
        raw, digest = _document(placement.target)
        for tag in placement.tags:
            if self.client.manifest_digest(placement.repository, tag) != digest:
                self.client.put_manifest(
                    placement.repository, tag, raw, _media_type(placement.target)
                )
        return digest

    def close(self) -> None:
        self.client.close()


def _document(target: Image | ImageIndex) -> tuple[bytes, Digest]:
    if isinstance(target, ImageIndex):
        return target.index.raw, target.index.digest
    assert target.manifest is not None, "images are given final manifests before writing"
    return target.manifest.raw, target.manifest.digest


def _media_type(target: Image | ImageIndex) -> str:
    if isinstance(target, ImageIndex):
        return target.index.media_type
    assert target.manifest is not None
    return target.manifest.media_type


def _wanted(placements: list[Placement]) -> dict[str, list[Blob]]:
    """The blobs each repository needs, each once."""
    wanted: dict[str, dict[Digest, Blob]] = {}
    for placement in placements:
        blobs = wanted.setdefault(placement.repository, {})
        for blob in _blobs(placement.target):
            blobs.setdefault(blob.digest, blob)
    return {repository: list(blobs.values()) for repository, blobs in wanted.items()}


def _blobs(target: Image | ImageIndex) -> list[Blob]:
    found: dict[Digest, Blob] = {}
    for image in _images(target):
        for layer in image.layers:
            found.setdefault(layer.digest, Blob(layer.digest, layer.size, layer=layer))
        config = image.config
        found.setdefault(config.digest, Blob(config.digest, len(config.raw), data=config.raw))
    return list(found.values())


def _images(target: Image | ImageIndex) -> Iterator[Image]:
    if isinstance(target, ImageIndex):
        yield from target.images()
    else:
        yield target


def _by_digest(wanted: dict[str, list[Blob]]) -> list[tuple[Blob, list[str]]]:
    """Each distinct blob once, with the repositories that need it."""
    result: dict[Digest, tuple[Blob, list[str]]] = {}
    for repository, blobs in wanted.items():
        for blob in blobs:
            result.setdefault(blob.digest, (blob, []))[1].append(repository)
    return list(result.values())


def _ref_text(tag: str) -> str:
    return f"@{tag}" if ":" in tag else f":{tag}"
