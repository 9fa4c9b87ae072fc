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
names every other file of the part with its sha256; ``manifest_digest`` is the image's manifest
in this archive (layers recompressed by sealift have manifests of their own; the image ID never
changes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sealift.digest import Digest
from sealift.errors import InvalidArchiveError
from sealift.model import Entry

FORMAT = "sealift-compose-bundle/1"
BUNDLE_FILE = "bundle.json"
COMPOSE_FILE = "compose.yaml"


@dataclass(frozen=True)
class ServiceImage:
    image: str
    image_id: str
    manifest_digest: str


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
            "services": {
                name: {
                    "image": s.image,
                    "image_id": s.image_id,
                    "manifest_digest": s.manifest_digest,
                }
                for name, s in sorted(self.services.items())
            },
            "files": {COMPOSE_FILE: _sha256(self.compose_yaml)},
        }
        encoded = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
        return {BUNDLE_FILE: encoded, COMPOSE_FILE: self.compose_yaml}


def manifest_digests(entries: list[Entry]) -> dict[str, str]:
    """Image ID -> digest of the manifest the archive stores for it."""
    digests: dict[str, str] = {}
    for entry in entries:
        for image in entry.images():
            if image.manifest is not None:
                digests.setdefault(str(image.id), str(image.manifest.digest))
    return digests


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


def _service(detail: Any, what: str) -> ServiceImage:
    if not isinstance(detail, dict):
        raise InvalidArchiveError(f"{what} is not an object")
    image_id = _text(detail, "image_id", what)
    Digest.parse(image_id)
    return ServiceImage(
        _text(detail, "image", what), image_id, _text(detail, "manifest_digest", what)
    )


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
