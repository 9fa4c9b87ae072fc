"""A plain-data description of what a source holds, for `inspect` and scripts."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sealift.model import Entry, Image, ImageIndex


def describe(entries: list[Entry]) -> dict[str, Any]:
    rows: list[tuple[Entry, Image, str | None]] = []
    for entry in entries:
        if isinstance(entry.target, ImageIndex):
            for image in entry.target.images():
                rows.append((entry, image, str(entry.target.index.digest)))
        else:
            rows.append((entry, entry.target, None))
    uses = Counter(layer.digest for _, image, _ in _unique(rows) for layer in image.layers)
    images = [_image(entry, image, index, uses) for entry, image, index in rows]
    unique = {layer.digest: layer.size for _, image, _ in rows for layer in image.layers}
    return {
        "images": images,
        "unique_layers": len(unique),
        "total_size": sum(unique.values()),
    }


def _unique(rows: list[tuple[Entry, Image, str | None]]) -> list[tuple[Entry, Image, str | None]]:
    seen = set()
    result = []
    for row in rows:
        if row[1].id not in seen:
            seen.add(row[1].id)
            result.append(row)
    return result


def _image(entry: Entry, image: Image, index: str | None, uses: Counter[Any]) -> dict[str, Any]:
    return {
        "id": str(image.id),
        "tags": [str(tag) for tag in entry.tags],
        "ref_names": list(entry.ref_names),
        "platform": str(image.effective_platform),
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
                "shared": uses[layer.digest] > 1,
            }
            for layer in image.layers
        ],
    }
