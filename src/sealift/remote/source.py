"""The sending side's images: offered from the engine's metadata, saved only if someone needs them.

``docker image inspect`` gives what an offer needs (image ID, diff_ids, tags) without reading a
byte of layer data. The engine's save stream is read (and spooled, once, however many hosts)
only when a receiver asks for a layer or a config: pushing an image every host already has
costs no ``docker save`` at all.
"""

from __future__ import annotations

import threading
from typing import Any

from sealift import media
from sealift.digest import Digest
from sealift.ends.engine import Engine, EngineSource
from sealift.errors import EngineError, InvalidArchiveError, SealiftError, UsageError
from sealift.model import Entry
from sealift.reference import Reference
from sealift.remote.protocol import OfferedImage, OfferedLayer
from sealift.remote.sender import single_images, with_manifests
from sealift.transfer import Selection


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
        self.engine = engine
        self.refs = refs
        self.platform = platform
        self._source: EngineSource | None = EngineSource(engine, refs) if export_early else None
        found = self._source.found if self._source else {ref: engine.inspect(ref) for ref in refs}
        self.offer = _offer(found)
        self._lock = threading.Lock()
        self._entries: list[Entry] | None = None
        self._error: SealiftError | None = None
        self.saved = False

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
            self._source = EngineSource(self.engine, self.refs)
        entries = with_manifests(Selection((), self.platform).apply(self._source.entries()))
        saved = {str(image.id) for image, _ in single_images(entries)}
        offered = {str(image.id) for image in self.offer}
        if saved != offered:
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
