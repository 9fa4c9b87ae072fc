"""The image model every source and sink shares.

Parsed objects keep the raw bytes they were parsed from, so digests stay stable: sealift never
re-serialises a config, and re-serialises a manifest or index only when its content changes
(for example when layers are recompressed).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, Any

from sealift import media
from sealift.digest import Digest, sha256_of
from sealift.errors import InvalidArchiveError, UsageError
from sealift.reference import Reference

MAX_JSON_SIZE = 32 * 1024 * 1024

_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s\"<>\\^`{|}]+")
_ENV = re.compile(r"[^=]+=.*", re.DOTALL)


def load_json(raw: bytes, what: str) -> Any:
    """Parse JSON strictly: one clear error for invalid, oversized or duplicate-key documents."""
    if len(raw) > MAX_JSON_SIZE:
        raise InvalidArchiveError(f"{what} is larger than {MAX_JSON_SIZE} bytes")
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidArchiveError(f"{what} is not valid JSON: {exc}") from exc


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def canonical_json(value: Any) -> bytes:
    """Deterministic, compact JSON for the documents sealift writes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class _Fields:
    """Typed access to a JSON object that names its location in every error."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise InvalidArchiveError(f"{where} must be a JSON object, not {_kind(value)}")
        self.value: dict[str, Any] = value
        self.where = where

    def _get(self, key: str, kind: type | tuple[type, ...], required: bool) -> Any:
        if key not in self.value or (self.value[key] is None and not required):
            if required:
                raise InvalidArchiveError(f"{self.where}: missing {key!r}")
            return None
        item = self.value[key]
        if not isinstance(item, kind) or (isinstance(item, bool) and kind is int):
            raise InvalidArchiveError(
                f"{self.where}: {key!r} must be {_name(kind)}, not {_kind(item)}"
            )
        return item

    def text(self, key: str, required: bool = False) -> str | None:
        return self._get(key, str, required)  # type: ignore[no-any-return]

    def integer(self, key: str, required: bool = False) -> int | None:
        return self._get(key, int, required)  # type: ignore[no-any-return]

    def items(self, key: str, required: bool = False) -> list[Any] | None:
        return self._get(key, list, required)  # type: ignore[no-any-return]

    def object(self, key: str, required: bool = False) -> dict[str, Any] | None:
        return self._get(key, dict, required)  # type: ignore[no-any-return]

    def str_map(self, key: str) -> dict[str, str]:
        mapping = self.object(key) or {}
        if not all(isinstance(v, str) for v in mapping.values()):
            raise InvalidArchiveError(f"{self.where}: {key!r} values must be strings")
        return mapping

    def str_list(self, key: str) -> list[str]:
        items = self.items(key) or []
        if not all(isinstance(v, str) for v in items):
            raise InvalidArchiveError(f"{self.where}: {key!r} must be a list of strings")
        return items


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _name(kind: type | tuple[type, ...]) -> str:
    return {str: "a string", int: "an integer", list: "a list", dict: "an object"}.get(
        kind if isinstance(kind, type) else object, "valid"
    )


def check_media_type(value: str, where: str) -> str:
    if not _MEDIA_TYPE.fullmatch(value):
        raise InvalidArchiveError(f"{where}: invalid media type {value!r}")
    return value


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/arm64/v8`` -> Platform; raise UsageError if malformed."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(
                f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/arm64"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_json(cls, value: Any, where: str) -> Platform:
        fields = _Fields(value, where)
        return cls(
            os=fields.text("os", required=True) or "",
            architecture=fields.text("architecture", required=True) or "",
            variant=fields.text("variant") or None,
            os_version=fields.text("os.version") or None,
            features=tuple(fields.str_list("features")),
        )

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            result["os.version"] = self.os_version
        if self.variant:
            result["variant"] = self.variant
        if self.features:
            result["features"] = list(self.features)
        return result

    def matches(self, wanted: Platform) -> bool:
        """True when this platform satisfies ``wanted`` (a variant is checked only if asked for)."""
        if (self.os, self.architecture) != (wanted.os, wanted.architecture):
            return False
        return wanted.variant is None or _variant(self) == _variant(wanted)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def _variant(platform: Platform) -> str | None:
    if platform.variant is None and platform.architecture == "arm64":
        return "v8"
    return platform.variant


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None
    data: bytes | None = None

    @classmethod
    def from_json(cls, value: Any, where: str, *, media_type_required: bool = True) -> Descriptor:
        fields = _Fields(value, where)
        media_type = fields.text("mediaType", required=media_type_required)
        if media_type == "" and "mediaType" in fields.value:
            raise InvalidArchiveError(f"{where}: empty media type")
        size = fields.integer("size", required=True)
        assert size is not None
        if size < 0:
            raise InvalidArchiveError(f"{where}: negative size {size}")
        urls = fields.str_list("urls")
        for url in urls:
            if not _URL.fullmatch(url):
                raise InvalidArchiveError(f"{where}: invalid URL {url!r}")
        artifact_type = fields.text("artifactType")
        if artifact_type is not None:
            check_media_type(artifact_type, where)
        platform = value.get("platform")
        return cls(
            media_type=check_media_type(media_type, where) if media_type else "",
            digest=_digest(fields.text("digest", required=True), where),
            size=size,
            annotations=fields.str_map("annotations"),
            platform=Platform.from_json(platform, f"{where}.platform") if platform else None,
            urls=tuple(urls),
            artifact_type=artifact_type,
            data=_base64(fields.text("data"), where),
        )

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.urls:
            result["urls"] = list(self.urls)
        if self.annotations:
            result["annotations"] = dict(sorted(self.annotations.items()))
        if self.platform:
            result["platform"] = self.platform.to_json()
        if self.artifact_type:
            result["artifactType"] = self.artifact_type
        return result

    @property
    def is_foreign(self) -> bool:
        return bool(self.urls) or self.media_type == media.DOCKER_FOREIGN_LAYER


def _digest(text: str | None, where: str) -> Digest:
    try:
        return Digest.parse(text)
    except InvalidArchiveError as exc:
        raise InvalidArchiveError(f"{where}: {exc}") from exc


def _base64(text: str | None, where: str) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArchiveError(f"{where}: 'data' is not valid base64") from exc


@dataclass(frozen=True)
class Manifest:
    """An OCI image manifest or Docker v2 schema 2 manifest, with its raw bytes."""

    raw: bytes
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str]

    @property
    def digest(self) -> Digest:
        return sha256_of(self.raw)

    @classmethod
    def parse(cls, raw: bytes, media_type_hint: str = "", where: str = "manifest") -> Manifest:
        fields = _Fields(load_json(raw, where), where)
        _check_schema_version(fields, raw)
        media_type = (
            fields.text("mediaType")
            or media_type_hint
            or media.guess_manifest_type(raw)
            or media.OCI_MANIFEST
        )
        check_media_type(media_type, where)
        if media.is_index(media_type) or "manifests" in fields.value:
            raise InvalidArchiveError(f"{where} is an image index where a manifest was expected")
        config = Descriptor.from_json(fields.object("config", required=True), f"{where}.config")
        layer_values = fields.items("layers", required=True) or []
        if not layer_values:
            raise InvalidArchiveError(f"{where} has no layers")
        layers = tuple(
            Descriptor.from_json(v, f"{where}.layers[{i}]") for i, v in enumerate(layer_values)
        )
        subject = fields.value.get("subject")
        if subject is not None:
            Descriptor.from_json(subject, f"{where}.subject")
        return cls(raw, media_type, config, layers, fields.str_map("annotations"))

    @classmethod
    def build(
        cls, config: Descriptor, layers: Sequence[Descriptor], annotations: Mapping[str, str] = {}
    ) -> Manifest:
        document: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media.OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
        if annotations:
            document["annotations"] = dict(sorted(annotations.items()))
        return cls(canonical_json(document), media.OCI_MANIFEST, config, tuple(layers), annotations)


@dataclass(frozen=True)
class Index:
    """An OCI image index or Docker manifest list, with its raw bytes."""

    raw: bytes
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str]

    @property
    def digest(self) -> Digest:
        return sha256_of(self.raw)

    @classmethod
    def parse(cls, raw: bytes, media_type_hint: str = "", where: str = "index") -> Index:
        document = load_json(raw, where)
        fields = _Fields(document, where)
        _check_schema_version(fields, raw)
        media_type = fields.text("mediaType") or media_type_hint or media.OCI_INDEX
        check_media_type(media_type, where)
        if media.is_manifest(media_type) or "layers" in fields.value:
            raise InvalidArchiveError(f"{where} is an image manifest where an index was expected")
        if "manifests" not in fields.value:
            raise InvalidArchiveError(f"{where}: missing 'manifests'")
        # Docker 25 writes "manifests": null for an archive of untagged images; read it as empty
        manifests = tuple(
            Descriptor.from_json(v, f"{where}.manifests[{i}]")
            for i, v in enumerate(fields.items("manifests") or [])
        )
        subject = fields.value.get("subject")
        if subject is not None:
            Descriptor.from_json(subject, f"{where}.subject")
        return cls(raw, media_type, manifests, fields.str_map("annotations"))

    @classmethod
    def build(cls, manifests: Sequence[Descriptor], annotations: Mapping[str, str] = {}) -> Index:
        document: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media.OCI_INDEX,
            "manifests": [m.to_json() for m in manifests],
        }
        if annotations:
            document["annotations"] = dict(sorted(annotations.items()))
        return cls(canonical_json(document), media.OCI_INDEX, tuple(manifests), annotations)


def _check_schema_version(fields: _Fields, raw: bytes) -> None:
    version = fields.value.get("schemaVersion")
    if version == 1:
        raise InvalidArchiveError(
            f"{fields.where} is a Docker schema 1 manifest, which is deprecated and not supported"
        )
    if version != 2 or isinstance(version, bool):
        raise InvalidArchiveError(f"{fields.where}: schemaVersion must be 2, not {version!r}")


@dataclass(frozen=True)
class ImageConfig:
    """An image configuration blob. Its digest is the image ID; its bytes are never rewritten."""

    raw: bytes
    diff_ids: tuple[Digest, ...]
    platform: Platform
    document: Mapping[str, Any]
    media_type: str = media.OCI_CONFIG

    @property
    def digest(self) -> Digest:
        return sha256_of(self.raw)

    @property
    def is_image(self) -> bool:
        """False for OCI artifacts (Helm charts, signatures...), whose layers are opaque blobs."""
        return self.media_type in (media.OCI_CONFIG, media.DOCKER_CONFIG)

    @classmethod
    def artifact(cls, raw: bytes, media_type: str) -> ImageConfig:
        """The config blob of a non-image artifact: kept byte for byte, not interpreted."""
        return cls(raw, (), Platform("unknown", "unknown"), {}, media_type)

    @classmethod
    def parse(cls, raw: bytes, where: str = "image config") -> ImageConfig:
        document = load_json(raw, where)
        fields = _Fields(document, where)
        rootfs = _Fields(fields.object("rootfs", required=True), f"{where}.rootfs")
        if rootfs.text("type", required=True) != "layers":
            raise InvalidArchiveError(f"{where}: rootfs.type must be 'layers'")
        diff_ids = tuple(
            _digest(v, f"{where}.rootfs.diff_ids[{i}]")
            for i, v in enumerate(rootfs.items("diff_ids", required=True) or [])
        )
        platform = Platform(
            os=fields.text("os", required=True) or "",
            architecture=fields.text("architecture", required=True) or "",
            variant=fields.text("variant"),
            os_version=fields.text("os.version"),
        )
        _check_runtime_config(fields.object("config"), f"{where}.config")
        fields.items("history")
        return cls(raw, diff_ids, platform, document)


def _check_runtime_config(value: dict[str, Any] | None, where: str) -> None:
    if value is None:
        return
    fields = _Fields(value, where)
    fields.text("User")
    fields.text("WorkingDir")
    fields.text("StopSignal")
    for key in ("Entrypoint", "Cmd"):
        fields.str_list(key)
    for entry in fields.str_list("Env"):
        if not _ENV.fullmatch(entry):
            raise InvalidArchiveError(f"{where}.Env: {entry!r} is not NAME=value")
    for key in ("Volumes", "ExposedPorts"):
        fields.object(key)
    fields.str_map("Labels")


Opener = Callable[[], IO[bytes]]


@dataclass(frozen=True)
class Layer:
    """One layer of an image: the blob as its source stores it, and its uncompressed digest.

    ``open`` returns the stored (possibly compressed) bytes; nothing is read until it is called.
    """

    descriptor: Descriptor
    diff_id: Digest
    codec: str
    open: Opener = field(compare=False, repr=False)
    verified: bool = field(default=False, compare=False)
    opaque: bool = field(default=False, compare=False)
    """An artifact's blob: checked against its digest only, never decompressed or recompressed."""
    label: str = field(default="", compare=False)
    """Where the layer sits, for messages: ``fixture/app:1 layer 2/3``."""

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size


@dataclass(frozen=True)
class Image:
    """A single-platform image: config, layers, and the manifest its source stored (if any).

    An attestation manifest (BuildKit's provenance or SBOM beside an image in an index) is
    carried as an Image too, with ``attestation`` set: its blobs are opaque and engines never
    get it. ``attests`` is the manifest digest of the image it describes, when the index says.
    """

    config: ImageConfig
    layers: tuple[Layer, ...]
    manifest: Manifest | None = None
    platform: Platform | None = None
    attestation: bool = False
    attests: Digest | None = None

    @property
    def id(self) -> Digest:
        return self.config.digest

    @property
    def effective_platform(self) -> Platform:
        return self.platform or self.config.platform

    @property
    def is_loadable(self) -> bool:
        """A container image an engine can load: not an attestation, not an OCI artifact."""
        return self.config.is_image and not self.attestation


Child = tuple[Descriptor, "Image | ImageIndex"]


@dataclass(frozen=True)
class ImageIndex:
    """A multi-platform image: an index whose children are images or further indexes."""

    index: Index
    children: tuple[tuple[Descriptor, Image | ImageIndex], ...]

    def images(self) -> Iterator[Image]:
        """Every image manifest under the index, attestations included."""
        for _, child in self.children:
            if isinstance(child, ImageIndex):
                yield from child.images()
            else:
                yield child

    def without_attestations(self) -> ImageIndex:
        """This index with its attestation manifests left out (rebuilt only if it had any)."""
        children: list[Child] = []
        for descriptor, child in self.children:
            if isinstance(child, Image) and child.attestation:
                continue
            if isinstance(child, ImageIndex):
                narrowed = child.without_attestations()
                if narrowed is not child:
                    digest, size = narrowed.index.digest, len(narrowed.index.raw)
                    children.append((replace(descriptor, digest=digest, size=size), narrowed))
                    continue
            children.append((descriptor, child))
        if [c for _, c in children] == [c for _, c in self.children]:
            return self
        index = Index.build([d for d, _ in children], self.index.annotations)
        return ImageIndex(index, tuple(children))


@dataclass(frozen=True)
class Entry:
    """A top-level, named thing a source holds: an image or an index, with its tags.

    ``tags`` are normalised references; ``ref_names`` keeps OCI ref names that are not references
    (such as ``latest`` or ``app-1``), so they can be written back unchanged.
    """

    target: Image | ImageIndex
    tags: tuple[Reference, ...] = ()
    ref_names: tuple[str, ...] = ()

    def images(self) -> Iterator[Image]:
        """Every image manifest of the entry, attestations and artifacts included: what a copy
        carries and a verify checks."""
        if isinstance(self.target, ImageIndex):
            yield from self.target.images()
        else:
            yield self.target

    def loadable_images(self) -> Iterator[Image]:
        """The container images an engine may be given (no attestations, no artifacts)."""
        return (image for image in self.images() if image.is_loadable)

    def attestations(self) -> Iterator[Image]:
        return (image for image in self.images() if image.attestation)

    def without_attestations(self) -> Entry:
        """The entry as an engine should receive it: attestation manifests left out. An index
        left with one image becomes that image, so the manifest an engine gets is one its source
        has too (not an index sealift made up)."""
        if not isinstance(self.target, ImageIndex):
            return self
        narrowed = self.target.without_attestations()
        if narrowed is self.target:
            return self
        descriptor, only = narrowed.children[0] if len(narrowed.children) == 1 else (None, None)
        if descriptor is not None and isinstance(only, Image):
            platform = descriptor.platform or only.platform
            return replace(self, target=replace(only, platform=platform))
        return replace(self, target=narrowed)


def relink_attestations(children: Sequence[Child], renamed: Mapping[Digest, Digest]) -> list[Child]:
    """Point attestations at their images' new manifest digests after those were rebuilt.

    The attestation manifest itself stays byte for byte (its in-toto statement still names the
    manifest it was made for); only the index's ``vnd.docker.reference.digest`` follows the image.
    """
    result: list[Child] = []
    for descriptor, child in children:
        target = descriptor.annotations.get(media.REFERENCE_DIGEST, "")
        new = next((n for old, n in renamed.items() if str(old) == target and n != old), None)
        if isinstance(child, Image) and child.attestation and new is not None:
            annotations = {**descriptor.annotations, media.REFERENCE_DIGEST: str(new)}
            descriptor = replace(descriptor, annotations=annotations)
            child = replace(child, attests=new)
        result.append((descriptor, child))
    return result
