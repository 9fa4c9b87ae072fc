"""The ``sealift/`` part of a compose bundle: the resolved compose file and ``bundle.json``.

``bundle.json``::

    {
      "format": "sealift-compose-bundle/1",
      "project": "shop",
      "compose_file": "compose.yaml",
      "profiles": ["debug"],
      "services": {"web": {"image": "shop/web:1.4", "image_id": "sha256:...",
                           "manifest_digest": "sha256:..."}},
      "files": {"compose.yaml": "sha256:..."}
    }

``profiles`` are those the kept services belong to (all must be active to run them); ``files``
names every other file of the part with its sha256; ``image_id`` is the image's config digest
(it never changes), ``manifest_digest`` its manifest in this archive (layers recompressed by
sealift have manifests of their own) and ``index_digest``, only for a multi-platform image, its
index: a containerd-store engine knows an image by one of the last two.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sealift.digest import Digest
from sealift.ends.engine import engine_ids
from sealift.errors import InvalidArchiveError, SealiftError, UsageError
from sealift.formats.write import docker_image, host_platform
from sealift.model import Entry, ImageIndex
from sealift.reference import Reference

FORMAT = "sealift-compose-bundle/1"
BUNDLE_FILE = "bundle.json"
COMPOSE_FILE = "compose.yaml"


@dataclass(frozen=True)
class ServiceImage:
    """A service's image: the reference it names, and the digests an engine may know it by."""

    image: str
    image_id: str
    manifest_digest: str
    index_digest: str | None = None

    @property
    def engine_ids(self) -> set[str]:
        """The IDs an engine lists it under: the config digest (classic store), the manifest or
        index digest (containerd store)."""
        ids = {self.image_id, self.manifest_digest}
        return ids | {self.index_digest} if self.index_digest else ids


@dataclass(frozen=True)
class Bundle:
    """What ``bundle.json`` says, with the compose file it vouches for."""

    project: str
    profiles: tuple[str, ...]
    services: dict[str, ServiceImage]
    compose_yaml: bytes

    def files(self) -> dict[str, bytes]:
        """The ``sealift/`` part: name (relative to it) -> bytes."""
        document = {
            "format": FORMAT,
            "project": self.project,
            "compose_file": COMPOSE_FILE,
            "profiles": list(self.profiles),
            "services": {name: _service_json(s) for name, s in sorted(self.services.items())},
            "files": {COMPOSE_FILE: _sha256(self.compose_yaml)},
        }
        encoded = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
        return {BUNDLE_FILE: encoded, COMPOSE_FILE: self.compose_yaml}


def service_image(ref: str, engine_id: str, entries: list[Entry]) -> ServiceImage:
    """What the archive holds for a service's image ``ref`` (which the engine knows as
    ``engine_id``): its image ID, manifest digest and, for a multi-platform image, index digest.
    The image of a multi-platform index is the one ``docker load`` takes (this host's)."""
    wanted = _reference(ref)
    for entry in entries:
        image = docker_image(entry.target, host_platform())
        if image is None or image.manifest is None:
            continue
        index = entry.target.index.digest if isinstance(entry.target, ImageIndex) else None
        known_as = engine_ids(image) | ({str(index)} if index else set())
        if (wanted is not None and wanted in entry.tags) or engine_id in known_as:
            return ServiceImage(
                ref, str(image.id), str(image.manifest.digest), str(index) if index else None
            )
    raise SealiftError(f"image {ref} is missing from the engine's save stream")


def _reference(text: str) -> Reference | None:
    try:
        return Reference.parse(text)
    except UsageError:
        return None


def read_bundle(part: dict[str, bytes], what: str) -> Bundle:
    """The bundle in an archive's ``sealift/`` part, every listed file checked against its
    sha256."""
    raw = part.get(BUNDLE_FILE)
    if raw is None:
        raise InvalidArchiveError(
            f"{what} is not a compose bundle (no sealift/{BUNDLE_FILE}): "
            "load its images with `sealift load`"
        )
    document = _json(raw, what)
    if document.get("format") != FORMAT:
        raise InvalidArchiveError(
            f"{what}: sealift/{BUNDLE_FILE} has format {document.get('format')!r}, "
            f"this sealift reads {FORMAT!r}"
        )
    files = _dict(document, "files", what)
    for name, expected in files.items():
        content = part.get(name)
        if content is None:
            raise InvalidArchiveError(f"{what}: sealift/{name} is listed in the bundle but missing")
        if _sha256(content) != expected:
            raise InvalidArchiveError(
                f"{what}: sealift/{name} does not match its sha256 in sealift/{BUNDLE_FILE}"
            )
    compose_name = document.get("compose_file")
    if not isinstance(compose_name, str) or compose_name not in files:
        raise InvalidArchiveError(f"{what}: the bundle's compose file is not among its files")
    return Bundle(
        project=_text(document, "project", what),
        profiles=tuple(str(p) for p in _list(document, "profiles", what)),
        services={
            name: _service(detail, f"{what}: service {name!r}")
            for name, detail in _dict(document, "services", what).items()
        },
        compose_yaml=part[compose_name],
    )


def _service_json(service: ServiceImage) -> dict[str, str]:
    document = {
        "image": service.image,
        "image_id": service.image_id,
        "manifest_digest": service.manifest_digest,
    }
    if service.index_digest is not None:
        document["index_digest"] = service.index_digest
    return document


def _service(detail: Any, what: str) -> ServiceImage:
    if not isinstance(detail, dict):
        raise InvalidArchiveError(f"{what} is not an object")
    digests = [_text(detail, key, what) for key in ("image_id", "manifest_digest")]
    index = detail.get("index_digest")
    for digest in [*digests, *([index] if index is not None else [])]:
        Digest.parse(digest)
    return ServiceImage(_text(detail, "image", what), digests[0], digests[1], index)


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise InvalidArchiveError(f"{what}: sealift/{BUNDLE_FILE} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidArchiveError(f"{what}: sealift/{BUNDLE_FILE} is not a JSON object")
    return document


def _text(document: dict[str, Any], key: str, what: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidArchiveError(f"{what}: {key!r} is missing or not a string")
    return value


def _dict(document: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    value = document.get(key)
    if not isinstance(value, dict):
        raise InvalidArchiveError(f"{what}: {key!r} is missing or not an object")
    return value


def _list(document: dict[str, Any], key: str, what: str) -> list[Any]:
    value = document.get(key, [])
    if not isinstance(value, list):
        raise InvalidArchiveError(f"{what}: {key!r} is not a list")
    return value


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"
