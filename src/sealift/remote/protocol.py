"""The line protocol sealift speaks with ``sealift agent`` over an SSH channel.

Every message is one line of compact JSON (an object with a ``t`` field naming its type),
optionally followed by exactly ``n`` bytes of binary payload when the header carries ``n``. A
layer travels as a ``layer`` header, ``c`` (chunk) frames whose payloads together form one
compressed stream of the layer's uncompressed bytes from ``offset`` on, and an ``end`` frame.
Either side may send ``error`` instead of what was expected; the other side raises it.

Before the first message the agent prints a banner line (``SEALIFT-AGENT``); anything the remote
login scripts print before it is skipped. See docs/protocol.md for the whole conversation.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from sealift import __version__
from sealift.digest import Digest
from sealift.errors import InvalidArchiveError, SealiftError, TransportError
from sealift.model import Manifest, check_media_type

PROTOCOLS = (1, 2, 3)
"""Protocol versions this sealift speaks, oldest first. Version 2 adds binary deltas: the
offer may ask for ``held``, the receiver's images of the offered repositories, and a layer may
cross as a ``patch`` that the receiver answers with ``patched``. Version 3 adds exact blobs: a
receiver that keeps blobs says ``blobs`` in its ``need``, compressed layers then cross as their
raw blob (staged by blob digest) and ``commit`` carries each image's exact manifest bytes."""
DELTA_PROTOCOL = 2
EXACT_PROTOCOL = 3

BANNER = b"SEALIFT-AGENT"
NO_AGENT = b"SEALIFT-NO-AGENT"
MAX_LINE = 64 * 1024 * 1024
MAX_FRAME = 16 * 1024 * 1024
MAX_BANNER_LINES = 200
MAX_BASES = 10_000


class RemoteError(SealiftError):
    """The other side reported an error (its own one-line message).

    ``kind`` is ``"engine"`` when the agent cannot reach its container engine at all.
    """

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


class ProtocolError(TransportError):
    """The stream does not follow the protocol, or ended where it must not."""


Message = dict[str, Any]


class Channel:
    """Framed messages over a pair of byte streams (an ssh process's stdout and stdin)."""

    def __init__(self, reader: IO[bytes], writer: IO[bytes], peer: str = "the remote") -> None:
        self._reader = reader
        self._writer = writer
        self.peer = peer
        self.bytes_in = 0
        self.bytes_out = 0

    # ------------------------------------------------------------------ writing
    def send(self, message: Message, payload: bytes | memoryview | None = None) -> None:
        if payload is not None:
            message = {**message, "n": len(payload)}
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            self._writer.write(line)
            if payload is not None:
                self._writer.write(payload)
            self.bytes_out += len(line) + (len(payload) if payload is not None else 0)
        except (BrokenPipeError, ConnectionResetError, ValueError) as exc:
            raise ProtocolError(f"connection to {self.peer} closed") from exc

    def flush(self) -> None:
        try:
            self._writer.flush()
        except (BrokenPipeError, ConnectionResetError, ValueError) as exc:
            raise ProtocolError(f"connection to {self.peer} closed") from exc

    def error(self, message: str, kind: str | None = None) -> None:
        self.send({"t": "error", "message": message, **({"kind": kind} if kind else {})})
        self.flush()

    # ------------------------------------------------------------------ reading
    def _line(self) -> bytes:
        line = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ProtocolError(f"{self.peer} sent a line longer than {MAX_LINE} bytes")
        self.bytes_in += len(line)
        return line

    def read_banner(self) -> list[bytes]:
        """Skip login noise up to the agent's banner; return the banner line's words.

        Raises ProtocolError at EOF (the caller then looks at ssh's stderr and exit status).
        """
        for _ in range(MAX_BANNER_LINES):
            line = self._line()
            if not line:
                raise ProtocolError(f"{self.peer} closed the connection before answering")
            if line.startswith((BANNER, NO_AGENT)):
                return line.split()
        raise ProtocolError(f"{self.peer} did not answer with a sealift banner")

    def lines_until_eof(self) -> list[str]:
        """The rest of the stream as text lines (used after a NO_AGENT banner)."""
        data = self._reader.read(1024 * 1024)
        self.bytes_in += len(data)
        return data.decode(errors="replace").splitlines()

    def recv(self) -> tuple[Message, bytes | None]:
        line = self._line()
        if not line:
            raise ProtocolError(f"{self.peer} closed the connection")
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise ProtocolError(f"{self.peer} sent garbage: {line[:80]!r}") from exc
        if not isinstance(message, dict) or not isinstance(message.get("t"), str):
            raise ProtocolError(f"{self.peer} sent a message without a type: {line[:80]!r}")
        if message["t"] == "error":
            kind = message.get("kind")
            raise RemoteError(
                f"{self.peer}: {message.get('message', 'unknown error')}",
                kind if isinstance(kind, str) else None,
            )
        size = message.get("n")
        if size is None:
            return message, None
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FRAME:
            raise ProtocolError(f"{self.peer} sent a frame of invalid size {size!r}")
        payload = self._reader.read(size)
        self.bytes_in += len(payload)
        if len(payload) != size:
            raise ProtocolError(f"{self.peer} closed the connection inside a frame")
        return message, payload

    def expect(self, kind: str) -> Message:
        message, _ = self.recv()
        if message["t"] != kind:
            raise ProtocolError(f"{self.peer} sent {message['t']!r} where {kind!r} was expected")
        return message


def hello() -> Message:
    return {"t": "hello", "protocols": list(PROTOCOLS), "sealift": __version__}


def choose_protocol(message: Message) -> int:
    """The newest version both sides speak; ProtocolError naming both versions if none."""
    offered = message.get("protocols")
    theirs = {p for p in offered if isinstance(p, int)} if isinstance(offered, list) else set()
    common = theirs & set(PROTOCOLS)
    if not common:
        raise ProtocolError(
            f"protocol mismatch: the remote sealift {__version__} speaks protocol "
            f"{list(PROTOCOLS)}, the local sealift {message.get('sealift', '?')} speaks "
            f"{sorted(theirs)}: install the same sealift version on both hosts"
        )
    return max(common)


class LayerStream(io.RawIOBase):
    """The payload of ``c`` frames up to the ``end`` frame, as one readable stream."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._buffer = b""
        self._pos = 0
        self.end: Message | None = None
        self.wire_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self._pos >= len(self._buffer):
            if self.end is not None:
                return 0
            message, payload = self._channel.recv()
            if message["t"] == "end":
                self.end = message
                return 0
            if message["t"] != "c" or payload is None:
                raise ProtocolError(
                    f"{self._channel.peer} sent {message['t']!r} inside a layer stream"
                )
            self._buffer, self._pos = payload, 0
            self.wire_bytes += len(payload)
        n = min(len(buffer), len(self._buffer) - self._pos)
        buffer[:n] = self._buffer[self._pos : self._pos + n]
        self._pos += n
        return n

    def finish(self) -> Message:
        """Read up to the ``end`` frame (nothing but empty chunks may remain)."""
        while self.end is None:
            if self.read(1):
                raise ProtocolError(f"{self._channel.peer} sent data after the layer's stream")
        return self.end


# ---------------------------------------------------------------------------------- documents
@dataclass(frozen=True)
class OfferedLayer:
    diff_id: Digest
    digest: Digest
    size: int
    media_type: str

    def to_json(self) -> Message:
        return {
            "diff_id": str(self.diff_id),
            "digest": str(self.digest),
            "size": self.size,
            "media_type": self.media_type,
        }


@dataclass(frozen=True)
class OfferedImage:
    """One image as offered: its ID (config digest), diff_ids, layers and the tags to give it.

    The config bytes themselves travel later, only for images the receiver lacks.
    """

    id: Digest
    diff_ids: tuple[Digest, ...]
    layers: tuple[OfferedLayer, ...]
    tags: tuple[str, ...]
    manifest: Digest | None = None
    """The manifest's digest when the sender holds it: what a containerd-store engine calls
    an image that arrived with exact blobs (so a second push finds it there)."""

    def to_json(self) -> Message:
        message: Message = {
            "id": str(self.id),
            "diff_ids": [str(d) for d in self.diff_ids],
            "layers": [layer.to_json() for layer in self.layers],
            "tags": list(self.tags),
        }
        if self.manifest is not None:
            message["manifest"] = str(self.manifest)
        return message


def offer_message(images: Iterable[OfferedImage], *, deltas: bool = False) -> Message:
    """The ``offer``; ``deltas`` (protocol 2 only) asks the receiver to list what it holds."""
    message: Message = {"t": "offer", "images": [image.to_json() for image in images]}
    if deltas:
        message["deltas"] = True
    return message


def parse_offer(message: Message) -> list[OfferedImage]:
    """Validate an ``offer`` strictly: every field typed, every digest and tag well formed."""
    from sealift.reference import Reference

    images = message.get("images")
    if not isinstance(images, list):
        raise ProtocolError("offer without images")
    result = []
    for item in images:
        if not isinstance(item, dict):
            raise ProtocolError("offer: image is not an object")
        tags = item.get("tags")
        layers = item.get("layers")
        diff_ids = item.get("diff_ids")
        if not all(isinstance(v, list) for v in (tags, layers, diff_ids)):
            raise ProtocolError("offer: tags, layers and diff_ids must be lists")
        assert isinstance(tags, list) and isinstance(layers, list) and isinstance(diff_ids, list)
        try:
            image_id = Digest.parse(item.get("id"))
            parsed_diff_ids = tuple(Digest.parse(d) for d in diff_ids)
            parsed_tags = tuple(str(Reference.parse(str(tag))) for tag in tags)
            parsed_layers = tuple(_offered_layer(layer) for layer in layers)
            manifest = item.get("manifest")
            manifest_digest = None if manifest is None else Digest.parse(manifest)
        except (SealiftError, KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"offer: {exc}") from exc
        if [layer.diff_id for layer in parsed_layers] != list(parsed_diff_ids):
            raise ProtocolError(f"offer: image {image_id}: layers do not match its diff_ids")
        result.append(
            OfferedImage(image_id, parsed_diff_ids, parsed_layers, parsed_tags, manifest_digest)
        )
    return result


def parse_bases(message: Message) -> list[Digest]:
    """The diff_ids of a ``bases`` hint (protocol 2): the patch bases the sender chose."""
    items = message.get("diff_ids")
    if not isinstance(items, list) or len(items) > MAX_BASES:
        raise ProtocolError(f"bases: diff_ids must be a list of at most {MAX_BASES}")
    try:
        return [Digest.parse(item) for item in items]
    except (InvalidArchiveError, TypeError) as exc:
        raise ProtocolError(f"bases: {exc}") from exc


def configs_json(configs: dict[Digest, bytes]) -> dict[str, str]:
    return {str(d): base64.b64encode(raw).decode() for d, raw in configs.items()}


def parse_configs(message: Message, wanted: Iterable[str]) -> dict[Digest, bytes]:
    """The config bytes a ``commit``/``sent`` message carries, each checked against its ID."""
    from sealift.digest import sha256_of

    value = message.get("configs") or {}
    if not isinstance(value, dict):
        raise ProtocolError("configs must be an object")
    configs: dict[Digest, bytes] = {}
    for wanted_id in wanted:
        text = value.get(wanted_id)
        if not isinstance(text, str):
            raise ProtocolError(f"the config of image {wanted_id} did not arrive")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"the config of image {wanted_id} is not base64") from exc
        digest = Digest.parse(wanted_id)
        if sha256_of(raw) != digest:
            raise ProtocolError(f"the config sent as image {wanted_id} hashes to {sha256_of(raw)}")
        configs[digest] = raw
    return configs


def manifests_json(manifests: dict[Digest, bytes]) -> dict[str, str]:
    """Manifest bytes (base64) by image ID, for a protocol 3 ``commit``."""
    return configs_json(manifests)


def parse_manifests(message: Message, wanted: Iterable[str]) -> dict[Digest, Manifest]:
    """The exact manifests a protocol 3 ``commit`` carries, each checked to name its image's
    config; an image the sender sent none for is absent (its manifest is rebuilt)."""
    value = message.get("manifests") or {}
    if not isinstance(value, dict):
        raise ProtocolError("manifests must be an object")
    manifests: dict[Digest, Manifest] = {}
    for wanted_id in wanted:
        text = value.get(wanted_id)
        if text is None:
            continue
        if not isinstance(text, str):
            raise ProtocolError(f"the manifest of image {wanted_id} is not base64")
        try:
            raw = base64.b64decode(text, validate=True)
            manifest = Manifest.parse(raw, where=f"manifest of image {wanted_id}")
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"the manifest of image {wanted_id} is not base64") from exc
        except SealiftError as exc:
            raise ProtocolError(str(exc)) from exc
        if str(manifest.config.digest) != wanted_id:
            raise ProtocolError(
                f"the manifest sent for image {wanted_id} names config {manifest.config.digest}"
            )
        manifests[manifest.config.digest] = manifest
    return manifests


def _offered_layer(value: Any) -> OfferedLayer:
    if not isinstance(value, dict):
        raise InvalidArchiveError("layer is not an object")
    size = value["size"]
    media_type = value["media_type"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArchiveError(f"invalid layer size {size!r}")
    if not isinstance(media_type, str):
        raise InvalidArchiveError("invalid media type")
    check_media_type(media_type, "offered layer")
    return OfferedLayer(
        Digest.parse(value["diff_id"]), Digest.parse(value["digest"]), size, media_type
    )


@dataclass(frozen=True)
class HeldImage:
    """An image the receiver's engine holds, for the sender to choose patch bases from: its
    ID (as the engine names it), its tags, its layers and its ``created`` time."""

    id: str
    tags: tuple[str, ...]
    diff_ids: tuple[Digest, ...]
    created: str = ""

    def to_json(self) -> Message:
        return {
            "id": self.id,
            "tags": list(self.tags),
            "diff_ids": [str(d) for d in self.diff_ids],
            "created": self.created,
        }

    @classmethod
    def parse(cls, value: Any) -> HeldImage:
        from sealift.reference import Reference

        if not isinstance(value, dict):
            raise ProtocolError("need: held image is not an object")
        tags, diff_ids, created = value.get("tags"), value.get("diff_ids"), value.get("created")
        if not isinstance(tags, list) or not isinstance(diff_ids, list):
            raise ProtocolError("need: held image without tags or diff_ids")
        try:
            image_id = str(Digest.parse(value.get("id")))
            parsed_tags = tuple(str(Reference.parse(str(tag))) for tag in tags)
            parsed_diff_ids = tuple(Digest.parse(d) for d in diff_ids)
        except (SealiftError, TypeError, ValueError) as exc:
            raise ProtocolError(f"need: held image: {exc}") from exc
        return cls(
            image_id, parsed_tags, parsed_diff_ids, created if isinstance(created, str) else ""
        )


@dataclass(frozen=True)
class Need:
    """What the receiving side lacks: layers (diff_id -> bytes it already holds) and a tally."""

    layers: dict[Digest, int]
    present_images: tuple[str, ...] = ()
    skipped_layers: int = 0
    configs: tuple[str, ...] = ()
    """IDs of the images the receiver will load (it needs their config bytes)."""
    held: tuple[HeldImage, ...] | None = None
    """Protocol 2, when the offer asked: the receiver's images to patch against."""
    blobs: bool = False
    """Protocol 3: the receiver keeps blobs as they are; compressed layers cross as their raw
    blob (offsets count blob bytes) and ``commit`` carries the exact manifests."""

    def to_json(self) -> Message:
        message: Message = {
            "t": "need",
            "layers": [{"diff_id": str(d), "offset": o} for d, o in self.layers.items()],
            "present": list(self.present_images),
            "skipped": self.skipped_layers,
            "configs": list(self.configs),
        }
        if self.held is not None:
            message["held"] = [image.to_json() for image in self.held]
        if self.blobs:
            message["blobs"] = True
        return message

    @classmethod
    def parse(cls, message: Message) -> Need:
        items = message.get("layers")
        if not isinstance(items, list):
            raise ProtocolError("need without layers")
        layers: dict[Digest, int] = {}
        try:
            for item in items:
                offset = item["offset"]
                if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                    raise ProtocolError(f"need: invalid offset {offset!r}")
                layers[Digest.parse(item["diff_id"])] = offset
        except (KeyError, TypeError, InvalidArchiveError) as exc:
            raise ProtocolError(f"need: {exc}") from exc
        present = message.get("present") or []
        skipped = message.get("skipped") or 0
        configs = message.get("configs") or []
        if not isinstance(present, list) or not isinstance(skipped, int):
            raise ProtocolError("need: invalid present/skipped")
        if not isinstance(configs, list):
            raise ProtocolError("need: invalid configs")
        try:
            config_ids = tuple(str(Digest.parse(c)) for c in configs)
        except InvalidArchiveError as exc:
            raise ProtocolError(f"need: {exc}") from exc
        held = message.get("held")
        if held is not None and not isinstance(held, list):
            raise ProtocolError("need: invalid held")
        held_images = None if held is None else tuple(HeldImage.parse(item) for item in held)
        return cls(
            layers,
            tuple(str(p) for p in present),
            skipped,
            config_ids,
            held_images,
            message.get("blobs") is True,
        )
