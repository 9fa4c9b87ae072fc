"""The receiving side: say what the engine lacks, stage what arrives, load once it all checks.

Used by ``sealift agent`` on the remote for ``push`` and by the local side for ``pull``. What the
engine has is judged by image IDs and layer diff_ids (chain IDs), which classic and
containerd-store engines both report. The images are built from staging and loaded with
:class:`~sealift.ends.engine.EngineSink` (thin: layers the engine has are left out), and success
means the engine shows the expected image ID under every tag.
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
    def __init__(self, engine: Engine, staging: Staging) -> None:
        self.engine = engine
        self.staging = staging
        self.received = Received()
        self._containerd: bool | None = None
        self._local: dict[Digest, str] = {}
        """Layers not asked for because the engine holds their stack: diff_id -> an image."""
        self._bases: ReceiverBases | None = None

    @property
    def containerd_store(self) -> bool:
        if self._containerd is None:
            self._containerd = self.engine.containerd_store
        return self._containerd

    def plan(self, images: list[OfferedImage], *, deltas: bool = False) -> Need:
        """The layers to send (with the offset staging already holds), images to tag only;
        with ``deltas``, also the images held of the offered repositories (patch bases)."""
        self.staging.expire()
        present = set(self.engine.image_ids())
        missing = [image for image in images if str(image.id) not in present]
        holders = self.engine.chain_holders() if missing else {}
        needed: dict[Digest, int] = {}
        skipped: set[Digest] = set()
        for image in missing:
            for diff_id, chain in zip(image.diff_ids, chain_ids(list(image.diff_ids)), strict=True):
                if chain in holders:
                    skipped.add(diff_id)
                    self._local[diff_id] = holders[chain]
                elif not self.staging.hold(diff_id):
                    needed[diff_id] = self.staging.offset(diff_id)
        held = self._held(images) if deltas and needed else None
        return Need(
            needed,
            tuple(sorted({str(i.id) for i in images if str(i.id) in present})),
            len(skipped - set(needed)),
            tuple(sorted({str(image.id) for image in missing})),
            held,
        )

    def _held(self, images: list[OfferedImage]) -> tuple[HeldImage, ...]:
        repositories = {Reference.parse(tag).repository for image in images for tag in image.tags}
        held = tuple(held_images(self.engine, repositories))
        self._bases = ReceiverBases(self.engine, self.staging, held)
        return held

    def receive(self, channel: Channel, header: dict[str, Any]) -> None:
        receive_layer(self.staging, self.received, channel, header)

    def _stage_from_engine(self, images: list[OfferedImage]) -> None:
        """The containerd store takes no thin archive whose blobs it may lack: the layers the
        engine holds (and so were not sent) are staged from its own export of an image that
        holds them, on this host, before the images are loaded whole."""
        wanted = {d for image in images for d in image.diff_ids if d in self._local}
        by_image: dict[str, set[Digest]] = {}
        for diff_id in wanted:
            if not self.staging.hold(diff_id):
                by_image.setdefault(self._local[diff_id], set()).add(diff_id)
        for image_id, diff_ids in by_image.items():
            _export_layers(self.engine, image_id, diff_ids, self.staging)

    def receive_patch(self, channel: Channel, header: dict[str, Any]) -> str | None:
        """Rebuild a layer from a patch; None when staged, else why it is wanted whole."""
        wire_before = channel.bytes_in
        reason = receive_patch(self.staging, self._bases, channel, header)
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
        self, images: list[OfferedImage], configs: dict[Digest, bytes]
    ) -> list[dict[str, Any]]:
        """Load the images from staging into the engine; check every tag shows its image ID.

        ``configs`` holds the config bytes of the images to load (checked against their IDs);
        the other images are already in the engine and are only tagged.
        """
        start = time.monotonic()
        if self.containerd_store:
            self._stage_from_engine([image for image in images if image.id in configs])
        load = [
            staged_entry(self.staging, image, configs[image.id])
            for image in images
            if image.id in configs
        ]
        if load:
            EngineSink(self.engine).write(load)
        # the IDs the engine may show: config digest, or (containerd store) manifest digest
        known = {image.id: engine_ids(image) for entry in load for image in entry.images()}
        results: list[dict[str, Any]] = []
        for image in images:
            image_id = str(image.id)
            status = "loaded" if image.id in configs else "present"
            expected = known.get(image.id, {image_id})
            tags = [Reference.parse(tag) for tag in image.tags]
            for tag in tags:
                if status == "present":
                    self.engine.tag(image_id, tag)
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
        self.staging.discard([diff_id for image in images for diff_id in image.diff_ids])
        self.received.seconds += time.monotonic() - start
        self.received.results = results
        return results


def _export_layers(engine: Engine, image_id: str, wanted: set[Digest], staging: Staging) -> None:
    """Stage the ``wanted`` layers (by diff_id) of an image the engine holds, from its export."""
    source = EngineSource(engine, [image_id])
    try:
        for entry in source.entries():
            for image in entry.images():
                for layer in image.layers:
                    if layer.diff_id in wanted and not staging.hold(layer.diff_id):
                        with layer.open() as stored:
                            content = compression.open_decompressed(
                                stored, layer.codec, f"layer {layer.diff_id}"
                            )
                            staging.receive(layer.diff_id, 0, compression.NONE, content)
    finally:
        source.close()


def receive_layer(
    staging: Staging, received: Received, channel: Channel, header: dict[str, Any]
) -> None:
    """Stage one layer from a ``layer`` header and the frames after it."""
    try:
        diff_id = Digest.parse(header.get("diff_id"))
        offset = header.get("offset")
        codec = compression.check_layer_codec(str(header.get("codec")))
    except SealiftError as exc:
        raise ProtocolError(f"invalid layer header: {exc}") from exc
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ProtocolError(f"invalid layer offset {offset!r}")
    stream = LayerStream(channel)
    appended = staging.receive(diff_id, offset, codec, cast(IO[bytes], stream))
    stream.finish()
    received.layers += 1
    received.bytes_appended += appended
    received.wire_bytes += stream.wire_bytes


class StagingReceiver:
    """The receiving side with no engine behind it (a pull into a file or a layout): every
    layer not already staged is asked for, and every image's config."""

    def __init__(self, staging: Staging) -> None:
        self.staging = staging
        self.received = Received()

    def plan(self, images: list[OfferedImage]) -> Need:
        self.staging.expire()
        needed = {
            diff_id: self.staging.offset(diff_id)
            for image in images
            for diff_id in image.diff_ids
            if not self.staging.hold(diff_id)
        }
        return Need(needed, (), 0, tuple(sorted({str(image.id) for image in images})))

    def receive(self, channel: Channel, header: dict[str, Any]) -> None:
        receive_layer(self.staging, self.received, channel, header)


def staged_entry(staging: Staging, image: OfferedImage, raw: bytes) -> Entry:
    """The offered image built from its config and the layers in ``staging`` (a layer not
    staged is one the engine has: it must not be read)."""
    config = ImageConfig.parse(raw, f"config of image {image.id}")
    if config.diff_ids != image.diff_ids:
        raise ProtocolError(f"image {image.id}: its config lists other layers than offered")
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
            codec = media.layer_codec(offered.media_type) or compression.GZIP
            descriptor = Descriptor(offered.media_type, offered.digest, offered.size)
            layers.append(Layer(descriptor, diff_id, codec, _absent(diff_id), verified=True))
    config_descriptor = Descriptor(media.OCI_CONFIG, config.digest, len(config.raw))
    manifest = Manifest.build(config_descriptor, [layer.descriptor for layer in layers])
    tags = tuple(Reference.parse(tag) for tag in image.tags)
    return Entry(Image(config, tuple(layers), manifest), tags)


def _opener(staging: Staging, diff_id: Digest) -> Any:
    return lambda: staging.open(diff_id)


def _absent(diff_id: Digest) -> Any:
    def fail() -> IO[bytes]:
        raise EngineError(
            f"layer {diff_id} was neither received nor found in the engine (did it change "
            "while sealift ran?)"
        )

    return fail
