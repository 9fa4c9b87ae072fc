"""What ``sealift serve`` serves: the manifests, blobs and tags of one source, checked once.

The model's entries become three tables a registry needs: repository -> tag -> manifest digest,
manifest digest -> raw manifest, blob digest -> how to open the blob. Manifests and indexes are
served byte for byte as the source stores them; an image the source keeps without a manifest
(legacy ``docker save``) gets the one ``sealift convert`` would write for it.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, cast

from sealift import media
from sealift.digest import Digest, sha256_of
from sealift.layers import copy_verified
from sealift.model import Descriptor, Entry, Image, ImageIndex, Layer, Manifest
from sealift.reference import DEFAULT_DOMAIN, Reference
from sealift.verify import CHUNK, VerifyingReader

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
"""A repository name as the distribution spec allows it (``myorg/api``)."""
TAG = re.compile(r"[\w][\w.-]{0,127}")
_LIBRARY = "library/"


@dataclass(frozen=True)
class ServedManifest:
    digest: Digest
    media_type: str
    raw: bytes


@dataclass(frozen=True)
class ServedBlob:
    """A blob the server may send: bytes held in memory, or a layer opened on each request."""

    digest: Digest
    size: int
    data: bytes | None = None
    layer: Layer | None = None

    def open(self) -> IO[bytes]:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.layer is not None
        return self.layer.open()

    @property
    def from_storage(self) -> bool:
        """Read from the archive or layout on each request (not held in memory)."""
        return self.data is None


@dataclass
class Content:
    """Everything one source serves, by repository, tag and digest.

    Digests are global: a manifest or blob of the source is found under any repository name,
    which is how untagged images stay reachable (by digest).
    """

    repositories: dict[str, dict[str, Digest]] = field(default_factory=dict)
    manifests: dict[Digest, ServedManifest] = field(default_factory=dict)
    blobs: dict[Digest, ServedBlob] = field(default_factory=dict)
    untagged: list[Digest] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_entries(cls, entries: Iterable[Entry], ref_repository: str | None = None) -> Content:
        """The content of ``entries``; ``ref_repository`` names the repository under which
        images with only an OCI ref name (``app-1``, ``latest``) are served, tagged with it."""
        content = cls()
        targets: list[Digest] = []
        for entry in entries:
            digest = content._add_target(entry.target)
            targets.append(digest)
            names = list(_tag_names(entry.tags))
            if ref_repository is not None and not entry.tags:
                names += [(ref_repository, ref) for ref in entry.ref_names if TAG.fullmatch(ref)]
            for repository, tag in names:
                content._tag(repository, tag, digest)
        tagged = {digest for tags in content.repositories.values() for digest in tags.values()}
        content.untagged = list(dict.fromkeys(d for d in targets if d not in tagged))
        return content

    def _tag(self, repository: str, tag: str, digest: Digest) -> None:
        tags = self.repositories.setdefault(repository, {})
        existing = tags.setdefault(tag, digest)
        if existing != digest:
            self.warnings.append(
                f"{repository}:{tag} names two images ({existing.short}, {digest.short}); "
                f"serving the first"
            )

    def _add_target(self, target: Image | ImageIndex) -> Digest:
        if isinstance(target, ImageIndex):
            for _, child in target.children:
                self._add_target(child)
            return self._add_manifest(target.index.media_type, target.index.raw)
        manifest = target.manifest or _manifest_for(target)
        self._add_bytes(target.config.digest, target.config.raw)
        for layer in target.layers:
            self.blobs.setdefault(layer.digest, ServedBlob(layer.digest, layer.size, layer=layer))
        return self._add_manifest(manifest.media_type, manifest.raw)

    def _add_manifest(self, media_type: str, raw: bytes) -> Digest:
        manifest = ServedManifest(self._add_bytes(None, raw), media_type, raw)
        self.manifests.setdefault(manifest.digest, manifest)
        return manifest.digest

    def _add_bytes(self, digest: Digest | None, raw: bytes) -> Digest:
        blob = ServedBlob(digest or sha256_of(raw), len(raw), data=raw)
        self.blobs.setdefault(blob.digest, blob)
        return blob.digest

    def tags(self) -> Iterator[str]:
        """Every ``repository:tag`` served, sorted."""
        for repository in sorted(self.repositories):
            for tag in sorted(self.repositories[repository]):
                yield f"{repository}:{tag}"

    @property
    def stored_bytes(self) -> int:
        return sum(blob.size for blob in self.blobs.values())

    def blobs_to_verify(self) -> list[ServedBlob]:
        """Blobs whose bytes have not been checked yet (everything held in memory was)."""
        return [
            blob
            for blob in self.blobs.values()
            if blob.layer is not None and not blob.layer.verified
        ]


def _tag_names(tags: Iterable[Reference]) -> Iterator[tuple[str, str]]:
    """``(repository, tag)`` pairs a registry serves for the archive's tags: the path without
    the registry domain, and Docker Hub's official images also without ``library/``."""
    for reference in tags:
        if reference.tag is None:
            continue
        yield reference.path, reference.tag
        if reference.domain == DEFAULT_DOMAIN and reference.path.startswith(_LIBRARY):
            yield reference.path.removeprefix(_LIBRARY), reference.tag


def _manifest_for(image: Image) -> Manifest:
    """The manifest ``sealift convert`` writes for an image its source kept without one."""
    config = Descriptor(media.OCI_CONFIG, image.config.digest, len(image.config.raw))
    return Manifest.build(config, [layer.descriptor for layer in image.layers])


Progress = Callable[[int], None]


def verify_blobs(blobs: list[ServedBlob], on_bytes: Progress, workers: int | None = None) -> None:
    """Read every blob once, in parallel, checking its digest and size, and for an image layer
    also its diff_id and tar shape; raise the first mismatch (a DigestMismatchError)."""
    if not blobs:
        return
    count = workers or min(4, os.cpu_count() or 1)
    lock = threading.Lock()

    def counted(n: int) -> None:
        with lock:
            on_bytes(n)

    largest_first = sorted(blobs, key=lambda blob: blob.size, reverse=True)
    with ThreadPoolExecutor(max_workers=count) as pool:
        for _ in pool.map(lambda blob: _verify(blob, counted), largest_first):
            pass


def _verify(blob: ServedBlob, on_bytes: Progress) -> None:
    layer = blob.layer
    assert layer is not None
    what = layer.label or f"blob {blob.digest}"
    with blob.open() as raw:
        stream = cast(IO[bytes], _Counting(raw, on_bytes))
        if _is_image_layer(layer):
            copy_verified(layer, stream, None, what)
            return
        # an attestation's or artifact's blob (JSON, a chart...): its digest is all it promises
        checked = VerifyingReader(stream, layer.digest, layer.size, what)
        while checked.read(CHUNK):
            pass


def _is_image_layer(layer: Layer) -> bool:
    return not layer.opaque and media.layer_codec(layer.descriptor.media_type) is not None


class _Counting(io.RawIOBase):
    def __init__(self, raw: IO[bytes], on_bytes: Progress) -> None:
        self._raw = raw
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if n:
            self._on_bytes(n)
        return n
