"""The receiving side: say what the engine lacks, stage what arrives, load once it all checks.

Used by ``sealift agent`` on the remote for ``push`` and by the local side for ``pull``. What the
engine has is judged by image IDs and layer diff_ids (chain IDs), which classic and
containerd-store engines both report. The images are built from staging and loaded with
:class:`~sealift.ends.engine.EngineSink` (thin: layers the engine has are left out), and success
means the engine shows the expected image ID under every tag.

With protocol 3 a receiver whose engine keeps blobs (the containerd store) stages each layer
under its blob digest (a compressed blob arrives as it is) and loads the images with their
exact manifests, so the engine's ID (the manifest digest) is the sender's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import IO, Any, cast

from sealift import compression, media
from sealift.digest import Digest
from sealift.ends.engine import Engine, EngineSink, EngineSource, chain_ids, engine_ids
from sealift.errors import EngineError, SealiftError
from sealift.model import Descriptor, Entry, Image, ImageConfig, Layer, Manifest
from sealift.reference import Reference
from sealift.remote.deltas import ReceiverBases, held_images, receive_patch
from sealift.remote.protocol import (
    Channel,
    HeldImage,
    LayerStream,
    Need,
    OfferedImage,
    ProtocolError,
)
from sealift.remote.staging import Staging


@dataclass
class Received:
    layers: int = 0
    bytes_appended: int = 0
    wire_bytes: int = 0
    seconds: float = 0.0
    results: list[dict[str, Any]] = field(default_factory=list)


class Receiver:
    def __init__(self, engine: Engine, staging: Staging, *, exact: bool = False) -> None:
        """``exact``: the sender speaks protocol 3 (it can send blobs and manifests as they are)."""
        self.engine = engine
        self.exact = exact
        self._blob_keys: dict[Digest, Digest] = {}
        """With exact blobs: diff_id -> the digest its layer is staged under (its blob's)."""
        self.staging = staging
        self.received = Received()
        self._containerd: bool | None = None
        self._local: dict[Digest, str] = {}
        """Layers not asked for because the engine holds their stack: diff_id -> an image."""
        self._bases: ReceiverBases | None = None
        self._present: dict[Digest, str] = {}
        """Offered images the engine has: image ID -> what the engine calls it."""

    @property
    def containerd_store(self) -> bool:
        if self._containerd is None:
            self._containerd = self.engine.containerd_store
        return self._containerd

    def plan(self, images: list[OfferedImage], *, deltas: bool = False) -> Need:
        """The layers to send (with the offset staging already holds), images to tag only;
        with ``deltas``, also the images held of the offered repositories (patch bases)."""
        self.staging.expire()
        self._present = _present(images, set(self.engine.image_ids()))
        missing = [image for image in images if image.id not in self._present]
        holders = self.engine.chain_holders() if missing else {}
        blobs = self.exact and self.containerd_store
        if blobs:
            self._blob_keys = {layer.diff_id: layer.digest for i in images for layer in i.layers}
        needed: dict[Digest, int] = {}
        skipped: set[Digest] = set()
        for image in missing:
            for diff_id, chain in zip(image.diff_ids, chain_ids(list(image.diff_ids)), strict=True):
                if chain in holders:
                    skipped.add(diff_id)
                    self._local[diff_id] = holders[chain]
                elif not self.staging.hold(key := self._blob_keys.get(diff_id, diff_id)):
                    needed[diff_id] = self.staging.offset(key)
        held = self._held(images) if deltas and needed else None
        return Need(
            needed,
            tuple(sorted({str(image_id) for image_id in self._present})),
            len(skipped - set(needed)),
            tuple(sorted({str(image.id) for image in missing})),
            held,
            blobs,
        )

    def _held(self, images: list[OfferedImage]) -> tuple[HeldImage, ...]:
        repositories = {Reference.parse(tag).repository for image in images for tag in image.tags}
        held = tuple(held_images(self.engine, repositories))
        self._bases = ReceiverBases(self.engine, self.staging, held)
        return held

    def receive(self, channel: Channel, header: dict[str, Any]) -> None:
        receive_layer(self.staging, self.received, channel, header, self._blob_keys)

    def _stage_from_engine(self, images: list[OfferedImage]) -> None:
        """For a whole load after a refused thin one: the layers the engine holds (and so were
        not sent) staged from its own export of an image that holds them, on this host."""
        wanted = {d for image in images for d in image.diff_ids if d in self._local}
        by_image: dict[str, dict[Digest, Digest]] = {}
        for diff_id in wanted:
            key = self._blob_keys.get(diff_id, diff_id)
            if not self.staging.hold(key) and not self.staging.hold(diff_id):
                by_image.setdefault(self._local[diff_id], {})[diff_id] = key
        for image_id, keys in by_image.items():
            _export_layers(self.engine, image_id, keys, self.staging)

    def receive_patch(self, channel: Channel, header: dict[str, Any]) -> str | None:
        """Rebuild a layer from a patch; None when staged, else why it is wanted whole."""
        wire_before = channel.bytes_in
        reason = receive_patch(self.staging, self._bases, channel, header, self._blob_keys)
        self.received.wire_bytes += channel.bytes_in - wire_before
        if reason is None:
            self.received.layers += 1
        return reason

    def prefetch_bases(self, bases: list[Digest]) -> None:
        """Start reading these patch bases out of the engine (the sender's hint)."""
        if self._bases is not None:
            self._bases.prefetch(bases)

    def close(self) -> None:
        if self._bases is not None:
            self._bases.close()

    def commit(
        self,
        images: list[OfferedImage],
        configs: dict[Digest, bytes],
        manifests: dict[Digest, Manifest] | None = None,
    ) -> list[dict[str, Any]]:
        """Load the images from staging into the engine; check every tag shows its image ID.

        ``configs`` holds the config bytes of the images to load (checked against their IDs);
        the other images are already in the engine and are only tagged. ``manifests``
        (protocol 3) holds their exact manifests, kept wherever staging holds their blobs.
        """
        manifests = manifests or {}
        start = time.monotonic()
        loaded = [image for image in images if image.id in configs]

        def entries(wanted: list[OfferedImage]) -> list[Entry]:
            return [
                staged_entry(self.staging, image, configs[image.id], manifests.get(image.id))
                for image in wanted
            ]

        def whole(refused: list[Entry]) -> list[Entry]:
            # the containerd store hid an image: it lacks a left-out layer's very blob, so
            # those layers come from its own export
            ids = {image.config.digest for entry in refused for image in entry.images()}
            wanted = [image for image in loaded if image.id in ids]
            self._stage_from_engine(wanted)
            load.extend(entries(wanted))
            return load[-len(wanted) :]

        load = entries(loaded)
        if load:
            EngineSink(self.engine, whole_entries=whole).write(load[:])
        # the IDs the engine may show: config digest, or (containerd store) manifest digest
        known: dict[Digest, set[str]] = {}
        for entry in load:
            for loaded_image in entry.images():
                known.setdefault(loaded_image.id, set()).update(engine_ids(loaded_image))
        results: list[dict[str, Any]] = []
        for image in images:
            image_id = str(image.id)
            status = "loaded" if image.id in configs else "present"
            engine_id = self._present.get(image.id, image_id)
            expected = known.get(image.id, {image_id, engine_id})
            tags = [Reference.parse(tag) for tag in image.tags]
            for tag in tags:
                if status == "present":
                    self.engine.tag(engine_id, tag)
                shown = self.engine.inspect(tag.familiar).get("Id")
                if shown not in expected:
                    raise EngineError(
                        f"after loading, {tag.familiar} is {shown}, expected {image_id}"
                    )
                results.append({"ref": tag.familiar, "id": image_id, "status": status})
            if not tags:
                if not expected & set(self.engine.image_ids()):
                    raise EngineError(f"after loading, the engine has no image {image_id}")
                results.append({"ref": None, "id": image_id, "status": status})
        staged = {d for image in images for d in image.diff_ids}
        staged |= {self._blob_keys.get(d, d) for d in staged}
        self.staging.discard(sorted(staged, key=str))
        self.received.seconds += time.monotonic() - start
        self.received.results = results
        return results


def _present(images: list[OfferedImage], engine_ids: set[str]) -> dict[Digest, str]:
    """The offered images the engine has, by config digest (a classic store's ID) or by
    manifest digest (a containerd store's, once an image arrived with its exact manifest)."""
    present: dict[Digest, str] = {}
    for image in images:
        for candidate in (str(image.id), str(image.manifest) if image.manifest else None):
            if candidate in engine_ids:
                present[image.id] = candidate
                break
    return present


def _export_layers(
    engine: Engine, image_id: str, wanted: dict[Digest, Digest], staging: Staging
) -> None:
    """Stage the ``wanted`` layers (diff_id -> the blob digest wanted) of an image the engine
    holds, from its export: as its blob when the engine holds that very blob, else its
    content (by diff_id; the image's manifest is then rebuilt)."""
    source = EngineSource(engine, [image_id])
    try:
        for entry in source.entries():
            for image in entry.images():
                for layer in image.layers:
                    key = wanted.get(layer.diff_id)
                    if key is None or staging.hold(key) or staging.hold(layer.diff_id):
                        continue
                    with layer.open() as stored:
                        if layer.digest == key:
                            staging.receive(key, 0, compression.NONE, stored)
                            continue
                        content = compression.open_decompressed(
                            stored, layer.codec, f"layer {layer.diff_id}"
                        )
                        staging.receive(layer.diff_id, 0, compression.NONE, content)
    finally:
        source.close()


def receive_layer(
    staging: Staging,
    received: Received,
    channel: Channel,
    header: dict[str, Any],
    blob_keys: dict[Digest, Digest] | None = None,
) -> None:
    """Stage one layer from a ``layer`` header and the frames after it.

    ``blob_keys`` (protocol 3, a receiver that keeps blobs): the digest each layer is to be
    staged under; a header naming a ``digest`` carries that raw blob.
    """
    try:
        diff_id = Digest.parse(header.get("diff_id"))
        offset = header.get("offset")
        codec = compression.check_layer_codec(str(header.get("codec")))
        blob = header.get("digest")
        key = diff_id if blob is None else Digest.parse(blob)
    except SealiftError as exc:
        raise ProtocolError(f"invalid layer header: {exc}") from exc
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ProtocolError(f"invalid layer offset {offset!r}")
    expected = (blob_keys or {}).get(diff_id, diff_id)
    if key != expected:
        raise ProtocolError(f"layer {diff_id} arrived as {key}, offered as {expected}")
    if blob is not None and codec != compression.NONE:
        raise ProtocolError(f"blob {key} arrived compressed again ({codec})")
    stream = LayerStream(channel)
    appended = staging.receive(key, offset, codec, cast(IO[bytes], stream))
    stream.finish()
    received.layers += 1
    received.bytes_appended += appended
    received.wire_bytes += stream.wire_bytes


class StagingReceiver:
    """The receiving side with no engine behind it (a pull into a file or a layout): every
    layer not already staged is asked for, and every image's config.

    With protocol 3 (``exact``, set once the agent agreed on it) a compressed layer is asked
    for as its blob and staged under the blob's digest, and the agent sends each image's
    manifest as it is: the file or layout written from staging holds the remote's manifests."""

    def __init__(self, staging: Staging) -> None:
        self.staging = staging
        self.received = Received()
        self.exact = False
        self._blob_keys: dict[Digest, Digest] = {}
        """With exact blobs: diff_id -> the digest its layer is staged under (its blob's)."""

    def plan(self, images: list[OfferedImage]) -> Need:
        self.staging.expire()
        if self.exact:
            self._blob_keys = {layer.diff_id: layer.digest for i in images for layer in i.layers}
        needed: dict[Digest, int] = {}
        for image in images:
            for diff_id in image.diff_ids:
                key = self._blob_keys.get(diff_id, diff_id)
                if not self.staging.hold(key):
                    needed[diff_id] = self.staging.offset(key)
        configs = tuple(sorted({str(image.id) for image in images}))
        return Need(needed, (), 0, configs, blobs=self.exact)

    def receive(self, channel: Channel, header: dict[str, Any]) -> None:
        receive_layer(self.staging, self.received, channel, header, self._blob_keys)


def staged_entry(
    staging: Staging, image: OfferedImage, raw: bytes, manifest: Manifest | None = None
) -> Entry:
    """The offered image built from its config and the layers in ``staging`` (a layer not
    staged is one the engine has: it must not be read). With ``manifest`` (protocol 3), the
    image keeps it as it is unless a layer is staged only as its content."""
    config = ImageConfig.parse(raw, f"config of image {image.id}")
    if config.diff_ids != image.diff_ids:
        raise ProtocolError(f"image {image.id}: its config lists other layers than offered")
    tags = tuple(Reference.parse(tag) for tag in image.tags)
    if manifest is not None:
        exact = exact_layers(staging, config, manifest)
        if exact is not None:
            return Entry(Image(config, exact, manifest), tags)
    layers = []
    for offered, diff_id in zip(image.layers, config.diff_ids, strict=True):
        if staging.hold(diff_id):
            descriptor = Descriptor(media.OCI_LAYER, diff_id, staging.size(diff_id))
            layers.append(
                Layer(
                    descriptor,
                    diff_id,
                    compression.NONE,
                    _opener(staging, diff_id),
                    verified=True,
                )
            )
        else:
            # received as its blob (protocol 3) while another layer is staged as content, or
            # held by the engine and not to be read
            codec = media.layer_codec(offered.media_type) or compression.GZIP
            descriptor = Descriptor(offered.media_type, offered.digest, offered.size)
            if staging.hold(offered.digest):
                opener = _opener(staging, offered.digest)
                layers.append(Layer(descriptor, diff_id, codec, opener, verified=False))
            else:
                layers.append(Layer(descriptor, diff_id, codec, _absent(diff_id), verified=True))
    config_descriptor = Descriptor(media.OCI_CONFIG, config.digest, len(config.raw))
    rebuilt = Manifest.build(config_descriptor, [layer.descriptor for layer in layers])
    return Entry(Image(config, tuple(layers), rebuilt), tags)


def exact_layers(
    staging: Staging, config: ImageConfig, manifest: Manifest
) -> tuple[Layer, ...] | None:
    """The manifest's layers read from their staged blobs (a layer the engine has is left
    unread); None when some layer is staged only as its content (a patch rebuilt it, or the
    engine held another blob of it), so the manifest cannot be kept."""
    if len(manifest.layers) != len(config.diff_ids):
        raise ProtocolError(f"image {config.digest}: its manifest lists other layers")
    layers = []
    for descriptor, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
        uncompressed = descriptor.digest == diff_id
        codec = media.layer_codec(descriptor.media_type) or (
            compression.NONE if uncompressed else compression.GZIP
        )
        if staging.hold(descriptor.digest):
            opener = _opener(staging, descriptor.digest)
        elif staging.hold(diff_id):
            return None
        else:
            opener = _absent(diff_id)
        # a compressed blob was checked against its digest, not yet its content's diff_id
        layers.append(Layer(descriptor, diff_id, codec, opener, verified=uncompressed))
    return tuple(layers)


def _opener(staging: Staging, diff_id: Digest) -> Any:
    return lambda: staging.open(diff_id)


def _absent(diff_id: Digest) -> Any:
    def fail() -> IO[bytes]:
        raise EngineError(
            f"layer {diff_id} was neither received nor found in the engine (did it change "
            "while sealift ran?)"
        )

    return fail
