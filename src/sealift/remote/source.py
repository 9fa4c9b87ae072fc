"""The sending side's images: what is offered to a host, and the images behind the offer.

Two kinds: :class:`LazySource` offers an engine's images from its metadata (``docker image
inspect`` gives image IDs, diff_ids and tags without reading a byte of layer data) and reads the
engine's save stream (spooled, once, however many hosts) only when a receiver asks for a layer
or a config, so pushing an image every host already has costs no ``docker save``.
:class:`EntriesOffer` offers the images of any other source (an archive, a layout), whose
metadata is cheap and whose layers are read only when sent.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

from sealift import media
from sealift.digest import Digest
from sealift.ends import open as ends
from sealift.ends.base import Source
from sealift.ends.engine import Engine, EngineSource
from sealift.errors import EngineError, InvalidArchiveError, SealiftError, UsageError
from sealift.model import Entry, Image
from sealift.reference import Reference
from sealift.remote.protocol import OfferedImage, OfferedLayer
from sealift.remote.sender import single_images, with_manifests
from sealift.transfer import Selection


class Offering(Protocol):
    """Images a push offers: ``offer`` describes them, ``entries()`` gives them (once read)."""

    offer: list[OfferedImage]
    saved: bool
    engine: Engine | None
    """The engine the images come from, if any (where patch bases are exported from)."""

    def entries(self) -> list[Entry]: ...

    def close(self) -> None: ...


class EntriesOffer:
    """The images of any source, offered from their configs and manifests as read."""

    def __init__(self, entries: list[Entry], *, closing: Source | None = None) -> None:
        self._entries = with_manifests(entries)
        self.offer = _offers(self._entries)
        self.saved = False
        self.engine: Engine | None = None
        self._closing = closing

    def entries(self) -> list[Entry]:
        self.saved = True
        return self._entries

    def close(self) -> None:
        if self._closing is not None:
            self._closing.close()


def _offers(entries: list[Entry]) -> list[OfferedImage]:
    """One offer per image, with every tag any entry gives it."""
    images: dict[Digest, Image] = {}
    tags: dict[Digest, list[str]] = {}
    for image, entry in single_images(entries):
        images.setdefault(image.id, image)
        named = tags.setdefault(image.id, [])
        named.extend(str(tag) for tag in entry.tags if str(tag) not in named)
    return [_offered(image, tuple(tags[image_id])) for image_id, image in images.items()]


def _offered(image: Image, tags: tuple[str, ...]) -> OfferedImage:
    layers = tuple(
        OfferedLayer(layer.diff_id, layer.digest, layer.size, layer.descriptor.media_type)
        for layer in image.layers
    )
    manifest = image.manifest.digest if image.manifest is not None else None
    return OfferedImage(image.id, image.config.diff_ids, layers, tags, manifest)


class LazySource:
    """``export_early`` asks the engine to start its export at once, betting that a layer will
    be wanted: the export (seconds for a large image) then overlaps the SSH handshake and the
    offer; if nothing is wanted, the request is dropped unread."""

    def __init__(
        self,
        engine: Engine,
        refs: list[str],
        platform: str | None = None,
        *,
        export_early: bool = False,
    ) -> None:
        if not refs:
            raise UsageError("name at least one image")
        self.engine: Engine | None = engine
        self._engine = engine
        self.refs = refs
        self.platform = platform
        self._source: EngineSource | None = EngineSource(engine, refs) if export_early else None
        self._lock = threading.Lock()
        self._entries: list[Entry] | None = None
        self._error: SealiftError | None = None
        self.saved = False
        self.offer: list[OfferedImage] = []
        """Empty until made: a save read before it (the containerd store) checks nothing."""
        if engine.containerd_store:
            # its inspect names images by manifest digest and carries no config digest, so
            # the offer is made from the images as saved
            self.offer = _offers(self.entries())
            return
        found = self._source.found if self._source else {ref: engine.inspect(ref) for ref in refs}
        self.offer = _offer(found)

    def entries(self) -> list[Entry]:
        """The images with their layers, read from the engine's save stream on first use."""
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._entries is None:
                try:
                    self._entries = self._save()
                except SealiftError as exc:
                    self._error = exc  # every host waiting for it gets the same error, once
                    raise
                self.saved = True
            return self._entries

    def _save(self) -> list[Entry]:
        if self._source is None:
            self._source = EngineSource(self._engine, self.refs)
        entries = with_manifests(Selection((), self.platform).apply(self._source.entries()))
        saved = {str(image.id) for image, _ in single_images(entries)}
        offered = {str(image.id) for image in self.offer}
        if offered and saved != offered:
            raise EngineError("the images changed while sealift read them (a tag moved): try again")
        return entries

    def close(self) -> None:
        if self._source is not None:
            self._source.close()


def _offer(found: dict[str, dict[str, Any]]) -> list[OfferedImage]:
    """What an offer says of each image, from the engine's inspect of every ref asked for."""
    by_id: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for ref, info in found.items():
        image_id = str(info["Id"])
        _, tags = by_id.setdefault(image_id, (info, []))
        reference = None if _is_id(ref, image_id) else Reference.parse(ref)
        named = reference is not None and reference.tag is not None and not reference.digest
        if named and str(reference) not in tags:
            tags.append(str(reference))
    offer = []
    for image_id, (info, tags) in by_id.items():
        try:
            listed = (info.get("RootFS") or {}).get("Layers") or []
            diff_ids = tuple(Digest.parse(d) for d in listed)
        except (TypeError, ValueError, InvalidArchiveError) as exc:
            raise EngineError(f"the engine reports no layers for image {image_id}") from exc
        layers = tuple(OfferedLayer(d, d, 0, media.OCI_LAYER) for d in diff_ids)
        offer.append(OfferedImage(Digest.parse(image_id), diff_ids, layers, tuple(tags)))
    return offer


def _is_id(ref: str, image_id: str) -> bool:
    """Whether the user named the image by (a prefix of) its ID rather than by a name."""
    hex_id = image_id.removeprefix("sha256:")
    text = ref.removeprefix("sha256:")
    return len(text) >= 4 and hex_id.startswith(text) and ":" not in ref.removeprefix("sha256:")


def open_offering(
    arguments: list[str],
    engine_host: str | None,
    platform: str | None,
    tags: tuple[str, ...],
    *,
    export_early: bool,
) -> Offering:
    """What a push offers: an archive or layout's images, or images of the local engine.

    ``arguments`` are what the user named: one archive or layout, or engine images.
    """
    ends_named = [ends.parse_end(a) for a in arguments]
    files = [end for end in ends_named if _names_a_file(end)]
    if files:
        if len(arguments) != 1:
            raise UsageError("push takes one archive or layout, or engine images, not both")
        source = ends.open_source(files[0], ends.EndOptions(engine_host=engine_host))
        try:
            entries = Selection(tags, platform).apply(source.entries())
            return EntriesOffer(entries, closing=source)
        except BaseException:
            source.close()
            raise
    if tags:
        raise UsageError("--tag picks images from an archive; name engine images directly")
    refs: list[str] = []
    for end in ends_named:
        refs.extend(end.images if end.kind == ends.ENGINE else [_reference(end.text)])
    return LazySource(Engine(engine_host), refs, platform, export_early=export_early)


def _names_a_file(end: ends.End) -> bool:
    """An archive or layout named as such (a transport prefix, or a path that exists)."""
    if end.kind == ends.LAYOUT:
        return True
    return end.kind == ends.ARCHIVE and (end.text != end.location or Path(end.location).exists())


def _reference(text: str) -> str:
    if text.startswith("-"):
        raise UsageError(f"invalid image reference {text!r}")
    Reference.parse(text)
    return text
