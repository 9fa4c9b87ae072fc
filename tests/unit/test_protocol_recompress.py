"""Patches for compressed blobs (protocols 2 + 3): the sender finds the recipe that rewrites a
blob from its content, the receiver recompresses the rebuilt layer by it and stages the blob
only when its digest checks; a blob no recipe rewrites crosses whole."""

from __future__ import annotations

import gzip
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from sealift import compression, media
from sealift.delta import make_patch
from sealift.digest import Digest, sha256_of
from sealift.ends.engine import Engine
from sealift.errors import SealiftError
from sealift.model import Descriptor, Entry, Image, ImageConfig, Layer
from sealift.reference import Reference
from sealift.remote.deltas import (
    EXACT_BLOB_REASON,
    LayerDelta,
    PatchMaker,
    PlannedPatch,
    ReceiverBases,
    receive_patch,
    send_patch,
)
from sealift.remote.protocol import (
    Channel,
    HeldImage,
    Need,
    OfferedImage,
    OfferedLayer,
    ProtocolError,
)
from sealift.remote.recompress import BlobRecipe, library_of, recipe_for, write_blob
from sealift.remote.staging import Staging

RNG = random.Random(21)
BASE = RNG.randbytes(256 * 1024) + b"config line\n" * 40_000
TARGET = BASE[:1000] + b"one small change" + BASE[1000:]
BOTTOM = b"bottom layer " * 100


def _sealift_blob(content: bytes, codec: str, level: int) -> bytes:
    out = io.BytesIO()
    write_blob(io.BytesIO(content), codec, level, out)
    return out.getvalue()


def _layer(content: bytes, blob: bytes | None = None, codec: str = compression.ZSTD) -> Layer:
    if blob is None:
        return Layer(
            Descriptor(media.OCI_LAYER, sha256_of(content), len(content)),
            sha256_of(content),
            compression.NONE,
            lambda: io.BytesIO(content),
            verified=True,
        )
    media_type = media.OCI_LAYER_ZSTD if codec == compression.ZSTD else media.OCI_LAYER_GZIP
    return Layer(
        Descriptor(media_type, sha256_of(blob), len(blob)),
        sha256_of(content),
        codec,
        lambda: io.BytesIO(blob),
        verified=True,
    )


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[Staging]:
    with Staging(tmp_path / "staging") as held:
        yield held.ensure()


# --------------------------------------------------------------------------------- recipes
def test_a_blob_sealift_wrote_has_a_recipe_and_another_tools_has_none() -> None:
    zstd_blob = _sealift_blob(TARGET, compression.ZSTD, 3)
    recipe = recipe_for(_layer(TARGET, zstd_blob), [3])
    assert recipe == BlobRecipe(
        sha256_of(zstd_blob), compression.ZSTD, 3, library_of(compression.ZSTD, 3)
    )
    gzip_blob = _sealift_blob(TARGET, compression.GZIP, 6)
    assert recipe_for(_layer(TARGET, gzip_blob, compression.GZIP), [3]) is None, "other level"
    found = recipe_for(_layer(TARGET, gzip_blob, compression.GZIP), [3, 6])
    assert found is not None and found.level == 6 and "zlib-ng" in found.library
    foreign = gzip.compress(TARGET, mtime=0)  # Python's zlib: not a compressor sealift uses
    assert recipe_for(_layer(TARGET, foreign, compression.GZIP), [3, 6]) is None


def test_recipes_are_parsed_strictly() -> None:
    recipe = BlobRecipe(sha256_of(b"x"), compression.ZSTD, 3, "zstandard 0.25.0 libzstd 1.5.7")
    assert BlobRecipe.parse(recipe.to_json()) == recipe
    bad_values: list[object] = [
        {**recipe.to_json(), "codec": "xz"},
        {**recipe.to_json(), "level": "3"},
        [],
    ]
    for bad in bad_values:
        with pytest.raises(SealiftError, match="recipe"):
            BlobRecipe.parse(bad)


# ---------------------------------------------------------------------------- sending side
def _entry(tag: str, layers: list[Layer]) -> Entry:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [str(layer.diff_id) for layer in layers]},
    }
    parsed = ImageConfig.parse(json.dumps(config).encode(), tag)
    return Entry(Image(parsed, tuple(layers)), (Reference.parse(tag),))


def _offered(entry: Entry) -> OfferedImage:
    (image,) = entry.images()
    layers = tuple(
        OfferedLayer(layer.diff_id, layer.digest, layer.size, layer.descriptor.media_type)
        for layer in image.layers
    )
    return OfferedImage(image.id, image.config.diff_ids, layers, tuple(map(str, entry.tags)))


def _plan_for(new_top: Layer) -> tuple[LayerDelta, bool]:
    """(the report of ``new_top``, whether a recipe goes with its patch) for a receiver that
    keeps blobs and holds app:1, whose top layer is BASE."""
    bottom = _layer(BOTTOM)
    old = _entry("app:1", [bottom, _layer(BASE, _sealift_blob(BASE, compression.ZSTD, 3))])
    new = _entry("app:2", [bottom, new_top])
    held = _offered(old)
    need = Need(
        {new_top.diff_id: 0},
        configs=(str(_offered(new).id),),
        held=(HeldImage(str(held.id), held.tags, held.diff_ids, "2026-01-01T00:00:00Z"),),
        blobs=True,
    )
    maker = PatchMaker(None, compression.ZSTD, None)
    try:
        plan = maker.plan([old, new], [_offered(old), _offered(new)], need)
    finally:
        maker.close()
    return plan.reports[new_top.diff_id], new_top.diff_id in plan.recipes


def test_a_blob_sealift_can_rewrite_is_patched_for_a_receiver_that_keeps_blobs() -> None:
    blob = _sealift_blob(TARGET, compression.ZSTD, 3)
    report, with_recipe = _plan_for(_layer(TARGET, blob))
    assert report.sent == "patch" and with_recipe, report
    assert report.layer_bytes == len(blob), "it would otherwise cross as its blob"


def test_a_blob_no_recipe_rewrites_crosses_whole() -> None:
    report, with_recipe = _plan_for(
        _layer(TARGET, gzip.compress(TARGET, mtime=0), compression.GZIP)
    )
    assert report.sent == "whole" and report.reason == EXACT_BLOB_REASON and not with_recipe


# -------------------------------------------------------------------------- receiving side
def _wire(tmp_path: Path, recipe: BlobRecipe) -> bytes:
    path = tmp_path / "patch"
    with path.open("wb") as out:
        info = make_patch(io.BytesIO(BASE), io.BytesIO(TARGET), out)
    assert info is not None
    planned = PlannedPatch(sha256_of(TARGET), sha256_of(BASE), path, info.size)
    out_stream = io.BytesIO()
    channel = Channel(io.BytesIO(b'{"t":"patched","ok":true}\n'), out_stream)
    send_patch(channel, planned, LayerDelta(str(planned.diff_id), len(TARGET)), None, recipe)
    return out_stream.getvalue()


def _received(staging: Staging, wire: bytes, blob: Digest) -> str | None:
    staging.complete_path(sha256_of(BASE)).write_bytes(BASE)
    bases = ReceiverBases(cast(Engine, object()), staging, [])
    channel = Channel(io.BytesIO(wire), io.BytesIO(), "the client")
    blob_keys = {sha256_of(TARGET): blob}
    return receive_patch(staging, bases, channel, channel.expect("patch"), blob_keys)


def test_the_receiver_recompresses_the_rebuilt_layer_into_its_blob(
    staging: Staging, tmp_path: Path
) -> None:
    blob = _sealift_blob(TARGET, compression.ZSTD, 3)
    recipe = BlobRecipe(sha256_of(blob), compression.ZSTD, 3, library_of(compression.ZSTD, 3))
    wire = _wire(tmp_path, recipe)
    assert len(wire) < len(blob) // 20
    assert _received(staging, wire, recipe.digest) is None
    assert staging.complete_path(recipe.digest).read_bytes() == blob
    assert not staging.hold(sha256_of(TARGET)), "staged as the blob only"


def test_a_blob_the_recipe_does_not_give_is_asked_for_whole(
    staging: Staging, tmp_path: Path
) -> None:
    blob = _sealift_blob(TARGET, compression.ZSTD, 3)
    wrong = BlobRecipe(sha256_of(blob), compression.ZSTD, 1, library_of(compression.ZSTD, 1))
    reason = _received(staging, _wire(tmp_path, wrong), wrong.digest)
    assert reason is not None and "did not give its blob" in reason
    assert not staging.hold(wrong.digest) and staging.offset(wrong.digest) == 0


def test_another_library_on_the_receiver_asks_for_the_whole_blob(
    staging: Staging, tmp_path: Path
) -> None:
    blob = _sealift_blob(TARGET, compression.ZSTD, 3)
    other = BlobRecipe(sha256_of(blob), compression.ZSTD, 3, "zstandard 0.1 libzstd 1.0.0")
    reason = _received(staging, _wire(tmp_path, other), other.digest)
    assert reason is not None and "written with zstandard 0.1" in reason


def test_a_patch_for_a_blob_must_name_that_blob(staging: Staging, tmp_path: Path) -> None:
    blob = _sealift_blob(TARGET, compression.ZSTD, 3)
    recipe = BlobRecipe(sha256_of(blob), compression.ZSTD, 3, library_of(compression.ZSTD, 3))
    with pytest.raises(ProtocolError, match="names blob"):
        _received(staging, _wire(tmp_path, recipe), sha256_of(b"another blob"))
