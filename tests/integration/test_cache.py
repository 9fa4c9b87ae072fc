"""The layer cache against real engines: a repeat save compresses nothing.

Docker 20.10 sends layers uncompressed; Docker 26 with the containerd store sends the compressed
blobs it holds, which ``--compression zstd`` recompresses (and so caches) too.

``sealift save --json`` says ``"cache": {"hits": N, "stored": M}``: layers taken from the cache,
and layers compressed now and kept there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run_sealift
from tests.support.dockerd import DockerDaemon, EngineKind
from tests.support.engines import both_engine_kinds
from tests.support.images import ImageSet

pytestmark = pytest.mark.engine


def save_json(engine: DockerDaemon, out: Path, cache: Path, *refs: str) -> Any:
    result = run_sealift(
        "save",
        *refs,
        "-o",
        out,
        "-H",
        engine.host,
        "-q",
        "--compression",
        "zstd",
        "--json",
        env={**_base_env(), "SEALIFT_CACHE_DIR": str(cache)},
    ).assert_ok()
    return result.json()


def _base_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "SEALIFT_NO_CACHE"}


@both_engine_kinds
def test_a_repeat_save_takes_every_layer_from_the_cache_and_writes_the_same_bytes(
    engine_kind: EngineKind, source_engine: DockerDaemon, test_images: ImageSet, tmp_path: Path
) -> None:
    # one image: Docker 20.10 lists several in a random order, cached or not
    cache = tmp_path / "cache"
    layers = len(set(test_images.large.diff_ids))

    first = save_json(source_engine, tmp_path / "first.tar", cache, test_images.large.ref)
    second = save_json(source_engine, tmp_path / "second.tar", cache, test_images.large.ref)

    assert first["cache"] == {"hits": 0, "stored": layers}
    assert second["cache"] == {"hits": layers, "stored": 0}
    assert (tmp_path / "first.tar").read_bytes() == (tmp_path / "second.tar").read_bytes()
    run_sealift("verify", tmp_path / "second.tar", "-q").assert_ok()


def test_a_corrupted_cached_layer_is_compressed_again_and_the_archive_is_unchanged(
    source_engine: DockerDaemon, test_images: ImageSet, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    ref = test_images.app1.ref
    save_json(source_engine, tmp_path / "first.tar", cache, ref)
    blob = max((cache / "blobs" / "sha256").iterdir(), key=lambda path: path.stat().st_size)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    second = save_json(source_engine, tmp_path / "second.tar", cache, ref)

    layers = len(set(test_images.app1.diff_ids))
    assert second["cache"] == {"hits": layers - 1, "stored": 1}
    assert (tmp_path / "first.tar").read_bytes() == (tmp_path / "second.tar").read_bytes()


def test_no_cache_neither_reads_nor_fills_the_cache(
    source_engine: DockerDaemon, test_images: ImageSet, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    ref = test_images.base.ref
    save_json(source_engine, tmp_path / "first.tar", cache, ref)
    result = run_sealift(
        "save",
        ref,
        "-o",
        tmp_path / "second.tar",
        "-H",
        source_engine.host,
        "-q",
        "--compression",
        "zstd",
        "--json",
        "--no-cache",
        env={**_base_env(), "SEALIFT_CACHE_DIR": str(cache)},
    ).assert_ok()
    assert "cache" not in result.json()
    assert (tmp_path / "first.tar").read_bytes() == (tmp_path / "second.tar").read_bytes()


@both_engine_kinds
def test_an_image_sharing_layers_with_a_saved_one_compresses_only_its_own(
    engine_kind: EngineKind, source_engine: DockerDaemon, test_images: ImageSet, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    app1, app2 = test_images.app1, test_images.app2
    save_json(source_engine, tmp_path / "app1.tar", cache, app1.ref)

    second = save_json(source_engine, tmp_path / "app2.tar", cache, app2.ref)

    shared = len(set(app1.diff_ids) & set(app2.diff_ids))
    assert second["cache"] == {"hits": shared, "stored": len(set(app2.diff_ids)) - shared}
    uncached = save_json(
        source_engine, tmp_path / "uncached.tar", tmp_path / "other-cache", app2.ref
    )
    assert uncached["cache"]["hits"] == 0
    assert (tmp_path / "app2.tar").read_bytes() == (tmp_path / "uncached.tar").read_bytes()
