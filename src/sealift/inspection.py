"""A plain-data description of what a source holds, for `inspect` and scripts.

Each image appears once, with every tag and ref name that points at it. Attestation manifests
(BuildKit provenance and SBOMs) are not images: each is listed under the image it describes.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sealift.digest import Digest
from sealift.model import Entry, Image, ImageIndex


def describe(entries: list[Entry]) -> dict[str, Any]:
    rows: dict[Digest, dict[str, Any]] = {}
    images: dict[Digest, Image] = {}
    attestations: dict[Digest, Image] = {}
    for entry in entries:
        index = str(entry.target.index.digest) if isinstance(entry.target, ImageIndex) else None
        for image in entry.images():
            if image.attestation:
                assert image.manifest is not None, "attestations are read from their manifest"
                attestations.setdefault(image.manifest.digest, image)
                continue
            images.setdefault(image.id, image)
            row = rows.setdefault(image.id, _image(image, index))
            row["tags"].extend(str(t) for t in entry.tags if str(t) not in row["tags"])
            row["ref_names"].extend(r for r in entry.ref_names if r not in row["ref_names"])
    unattached = _attach(rows, attestations.values())
    uses = Counter(layer.digest for image in images.values() for layer in image.layers)
    for row in rows.values():
        for layer in row["layers"]:
            layer["shared"] = uses[Digest.parse(layer["digest"])] > 1
    unique = {layer.digest: layer.size for image in images.values() for layer in image.layers}
    return {
        "images": list(rows.values()),
        "attestations": unattached,
        "unique_layers": len(unique),
        "total_size": sum(unique.values()),
    }


def _attach(rows: dict[Digest, dict[str, Any]], attestations: Any) -> list[dict[str, Any]]:
    """Put each attestation under the image whose manifest it names; return the ones that
    name no image here."""
    by_manifest = {row["manifest_digest"]: row for row in rows.values() if row["manifest_digest"]}
    unattached = []
    for attestation in attestations:
        row = by_manifest.get(str(attestation.attests)) if attestation.attests else None
        if row is None:
            unattached.append(_attestation(attestation))
        else:
            row["attestations"].append(_attestation(attestation))
    return unattached


def _attestation(image: Image) -> dict[str, Any]:
    assert image.manifest is not None
    return {
        "manifest_digest": str(image.manifest.digest),
        "attests": str(image.attests) if image.attests else None,
        "size": sum(layer.size for layer in image.layers),
        "blobs": [
            {
                "digest": str(layer.digest),
                "size": layer.size,
                "media_type": layer.descriptor.media_type,
                "predicate_type": layer.descriptor.annotations.get("in-toto.io/predicate-type"),
            }
            for layer in image.layers
        ],
    }


def _image(image: Image, index: str | None) -> dict[str, Any]:
    return {
        "id": str(image.id),
        "tags": [],
        "ref_names": [],
        "platform": str(image.effective_platform),
        "artifact": not image.config.is_image,
        "config_media_type": image.config.media_type,
        "manifest_digest": str(image.manifest.digest) if image.manifest else None,
        "index_digest": index,
        "size": sum(layer.size for layer in image.layers),
        "layers": [
            {
                "digest": str(layer.digest),
                "diff_id": str(layer.diff_id),
                "size": layer.size,
                "media_type": layer.descriptor.media_type,
                "compression": layer.codec,
                "shared": False,
            }
            for layer in image.layers
        ],
        "attestations": [],
    }
