"""Media types of image manifests, indexes, configs and layers, and what they imply."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

OCI_LAYOUT_VERSION = "1.0.0"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# sealift records a compressed layer's uncompressed size, so a reader that must hand the layer
# on uncompressed (into a tar, whose header needs the size first) can stream it, not spool it
UNCOMPRESSED_SIZE = "io.sealift.layer.uncompressed.size"

# BuildKit (docker buildx, Docker 25+) adds to an image index one attestation manifest per image:
# platform unknown/unknown, these annotations on its descriptor, blobs of in-toto JSON, not tars
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION_MANIFEST = "attestation-manifest"
IN_TOTO = "application/vnd.in-toto+json"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

_LAYER_CODEC = {
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST: "none",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    OCI_LAYER_NONDIST_ZSTD: "zstd",
    DOCKER_LAYER: "none",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_ZSTD: "zstd",
    DOCKER_FOREIGN_LAYER: "gzip",
}

_OCI_LAYER_FOR_CODEC = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFEST_TYPES


def is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def is_attestation(annotations: Mapping[str, str]) -> bool:
    """True for the index descriptor of an attestation manifest (not an image to run)."""
    return annotations.get(REFERENCE_TYPE) == ATTESTATION_MANIFEST


def with_uncompressed_size(annotations: Mapping[str, str], codec: str, size: int) -> dict[str, str]:
    """Layer annotations, with the uncompressed size recorded for a compressed layer."""
    result = {k: v for k, v in annotations.items() if k != UNCOMPRESSED_SIZE}
    if codec != "none":
        result[UNCOMPRESSED_SIZE] = str(size)
    return result


def uncompressed_size(annotations: Mapping[str, str]) -> int | None:
    text = annotations.get(UNCOMPRESSED_SIZE, "")
    return int(text) if text.isdigit() and len(text) < 20 else None


def layer_codec(media_type: str) -> str | None:
    """The compression a layer media type declares, or None when the type does not say."""
    return _LAYER_CODEC.get(media_type)


def oci_layer_type(codec: str) -> str:
    return _OCI_LAYER_FOR_CODEC[codec]


def guess_manifest_type(raw: bytes) -> str | None:
    """The media type of a manifest or index document that may not say it (older writers).

    The document's own ``mediaType`` wins; otherwise the shape decides, as containers/image does.
    None for anything that is not a manifest of a known schema version.
    """
    try:
        document: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict):
        return None
    own = document.get("mediaType")
    if isinstance(own, str) and own:
        return own
    version = document.get("schemaVersion")
    if version == 1:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in document else DOCKER_SCHEMA1
    if version != 2:
        return None
    if "manifests" in document:
        return OCI_INDEX
    config = document.get("config")
    if isinstance(config, dict) and config.get("mediaType") == DOCKER_CONFIG:
        return DOCKER_MANIFEST
    return OCI_MANIFEST
