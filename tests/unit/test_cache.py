"""The layer cache: keys, verification on use, the size bound, concurrent processes."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealift import compression
from sealift.blobs import BlobStore
from sealift.cache import CachedLayer, Key, LayerCache, default_max, parse_max
from sealift.cli import cli
from sealift.digest import Digest, sha256_of
from sealift.errors import InvalidArchiveError, UsageError
from sealift.model import Descriptor, Layer
from sealift.samples import SampleLayer, binary_blob, demo_images, write_docker_save
from sealift.transfer import transcode


def diff_id(seed: int) -> Digest:
    return sha256_of(f"layer {seed}".encode())


def blob_file(directory: Path, data: bytes) -> tuple[Path, Digest]:
    """A blob file as sealift's spool writes them: a new file renamed into place, never changed
    in place afterwards (the cache may hard-link it)."""
    digest = sha256_of(data)
    path = directory / digest.encoded
    temp = directory / f".{digest.encoded}.{os.getpid()}"
    temp.write_bytes(data)
    temp.replace(path)
    return path, digest


def put(cache: LayerCache, tmp: Path, seed: int, data: bytes, codec: str = "zstd") -> Digest:
    path, digest = blob_file(tmp, data)
    cache.put(diff_id(seed), codec, None, path, digest, len(data) * 2)
    return digest


def contents(blob: CachedLayer | Layer) -> bytes:
    with blob.open() as stream:
        return stream.read()


def uncompressed_layer(content: bytes) -> Layer:
    tar = SampleLayer({"file": content}).tar()
    digest = sha256_of(tar)
    descriptor = Descriptor("application/vnd.oci.image.layer.v1.tar", digest, len(tar))
    return Layer(descriptor, digest, compression.NONE, lambda: io.BytesIO(tar))


def test_a_stored_layer_comes_back_with_its_digest_and_sizes(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "cache", 1 << 30)
    digest = put(cache, tmp_path, 1, b"compressed bytes")

    found = cache.get(diff_id(1), "zstd", 3)

    assert found is not None
    assert (found.digest, found.size, found.uncompressed_size) == (digest, 16, 32)
    assert contents(found) == b"compressed bytes"
    assert (cache.stats.hits, cache.stats.stored) == (1, 1)


def test_keys_differ_by_codec_and_level_and_no_level_means_the_default() -> None:
    layer = diff_id(1)
    keys = {Key.of(layer, "zstd", 3), Key.of(layer, "zstd", 19), Key.of(layer, "gzip", 3)}
    assert len(keys) == 3
    assert Key.of(layer, "zstd", None) == Key.of(layer, "zstd", 3)
    assert Key.of(layer, "gzip", None) == Key.of(layer, "gzip", compression.DEFAULT_LEVEL["gzip"])


def test_another_codec_or_level_is_a_miss(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "cache", 1 << 30)
    put(cache, tmp_path, 1, b"zstd level 3")

    assert cache.get(diff_id(1), "zstd", 19) is None
    assert cache.get(diff_id(1), "gzip", None) is None
    assert cache.get(diff_id(2), "zstd", None) is None
    assert cache.stats.misses == 3


def test_a_corrupted_blob_is_refused_and_dropped(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    digest = put(LayerCache(root, 1 << 30), tmp_path, 1, b"the right bytes")
    (root / "blobs" / "sha256" / digest.encoded).write_bytes(b"the wrong bytes")

    cache = LayerCache(root, 1 << 30)
    assert cache.get(diff_id(1), "zstd", None) is None
    assert cache.stats.dropped == 1
    assert cache.entries() == []


def test_a_broken_entry_file_is_a_miss(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    put(LayerCache(root, 1 << 30), tmp_path, 1, b"bytes")
    (entry,) = (root / "entries").glob("*/*.json")
    entry.write_text("{not json")

    assert LayerCache(root, 1 << 30).get(diff_id(1), "zstd", None) is None


def test_transcode_compresses_once_then_takes_the_cache_and_recompresses_a_corrupted_blob(
    tmp_path: Path,
) -> None:
    layer = uncompressed_layer(binary_blob(1, 300_000))
    store = BlobStore(tmp_path / "spool")
    root = tmp_path / "cache"

    with LayerCache(root, 1 << 30) as cache:
        first = transcode(layer, "zstd", store, None, cache)
        assert (cache.stats.hits, cache.stats.stored) == (0, 1)
    with LayerCache(root, 1 << 30) as cache:
        second = transcode(uncompressed_layer(binary_blob(1, 300_000)), "zstd", store, 3, cache)
        assert (cache.stats.hits, cache.stats.stored) == (1, 0)
    assert second.descriptor == first.descriptor
    assert contents(second) == contents(first)

    (root / "blobs" / "sha256" / first.digest.encoded).write_bytes(b"rot")
    with LayerCache(root, 1 << 30) as cache:
        third = transcode(layer, "zstd", store, None, cache)
        assert (cache.stats.hits, cache.stats.dropped, cache.stats.stored) == (0, 1, 1)
    assert third.descriptor == first.descriptor


def test_a_cache_hit_still_checks_the_source_layer(tmp_path: Path) -> None:
    good = uncompressed_layer(binary_blob(2, 100_000))
    store = BlobStore(tmp_path / "spool")
    with LayerCache(tmp_path / "cache", 1 << 30) as cache:
        transcode(good, "zstd", store, None, cache)
        broken = replace(good, open=lambda: io.BytesIO(b"not the layer"))
        with pytest.raises(InvalidArchiveError):
            transcode(broken, "zstd", store, None, cache)


def test_a_pinned_layer_survives_a_prune_by_another_process(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    put(LayerCache(root, 1 << 30), tmp_path, 1, b"kept while in use")
    with LayerCache(root, 1 << 30) as user:
        found = user.get(diff_id(1), "zstd", None)
        LayerCache(root, 1 << 30).clear()
        assert found is not None and contents(found) == b"kept while in use"
    assert not list((root / "tmp").iterdir())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=25),
    bound=st.integers(min_value=0, max_value=20000),
)
def test_eviction_keeps_the_bound_and_the_most_recently_used(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], bound: int
) -> None:
    tmp = tmp_path_factory.mktemp("evict")
    cache = LayerCache(tmp / "cache", bound)
    for seed, size in enumerate(sizes):
        put(cache, tmp, seed, binary_blob(seed, size))
        for entry in (tmp / "cache" / "entries").glob(f"*/{diff_id(seed).encoded}.json"):
            os.utime(entry, (seed, seed))  # put in this order, used in this order

    assert cache.total_size() <= bound
    kept = sorted(int(entry.last_used) for entry in cache.entries())
    fitting = [seed for seed, size in enumerate(sizes) if size <= bound]  # larger: never stored
    assert kept == fitting[len(fitting) - len(kept) :]
    assert bool(kept) == bool(fitting), "the newest layer that fits is always kept"


def _writer(root: str, worker: int, rounds: int) -> None:
    cache = LayerCache(Path(root), 40_000)
    scratch = Path(root).parent / f"scratch-{worker}"
    scratch.mkdir(exist_ok=True)
    for i in range(rounds):
        seed = (worker * 7 + i) % 12  # writers overlap on the same keys
        put(cache, scratch, seed, binary_blob(seed, 3000 + seed))
        found = cache.get(diff_id((seed + 5) % 12), "zstd", None)
        if found is not None:
            assert contents(found) == binary_blob((seed + 5) % 12, 3000 + (seed + 5) % 12)
    cache.close()


def test_concurrent_processes_share_the_cache_safely(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(str(root), n, 30)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]

    cache = LayerCache(root, 40_000)
    assert cache.total_size() <= 40_000
    for entry in cache.entries():
        found = cache.get(entry.key.diff_id, entry.key.codec, entry.key.level)
        assert found is not None and sha256_of(contents(found)) == entry.digest
    assert not [p for p in (root / "tmp").iterdir() if p.name.startswith("incoming-")]


def test_sizes_use_binary_units_and_zero_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse_max("20G") == 20 * 1024**3
    assert parse_max("0") == 0
    monkeypatch.setenv("SEALIFT_CACHE_MAX", "512M")
    assert default_max(tmp_path) == 512 * 1024**2
    monkeypatch.setenv("SEALIFT_CACHE_MAX", "lots")
    with pytest.raises(UsageError, match="SEALIFT_CACHE_MAX"):
        default_max(tmp_path)
    monkeypatch.delenv("SEALIFT_CACHE_MAX")
    assert 0 < default_max(tmp_path) <= 10 * 1024**3


# ------------------------------------------------------------------------------------ the CLI
@pytest.fixture
def docker_save(tmp_path: Path) -> Path:
    path = tmp_path / "docker-save.tar"
    with path.open("wb") as out:
        write_docker_save(demo_images(), out)
    return path


def sealift(*args: str | Path, env: dict[str, str]) -> Result:
    result = CliRunner().invoke(cli, [str(arg) for arg in args], env=env)
    assert result.exit_code == 0, result.output
    return result


def test_a_repeat_convert_takes_the_cache_and_cache_ls_lists_it(
    docker_save: Path, tmp_path: Path
) -> None:
    env = {"SEALIFT_CACHE_DIR": str(tmp_path / "cache"), "SEALIFT_NO_CACHE": ""}
    layers = len({layer.tar() for image in demo_images() for layer in image.layers})

    sealift("convert", docker_save, tmp_path / "a.tar", "--compression", "zstd", "-q", env=env)
    listed = json.loads(sealift("cache", "ls", "--json", env=env).output)
    assert len(listed["entries"]) == layers
    assert {e["codec"] for e in listed["entries"]} == {"zstd"}
    assert listed["total"] == sum(e["size"] for e in listed["entries"])
    assert listed["limit"] > 0
    before = {e["diff_id"]: e["last_used"] for e in listed["entries"]}

    sealift("convert", docker_save, tmp_path / "b.tar", "--compression", "zstd", "-q", env=env)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    after = json.loads(sealift("cache", "ls", "--json", env=env).output)["entries"]
    assert {e["diff_id"] for e in after} == set(before)
    assert "layers" in sealift("cache", "ls", env=env).output


def test_no_cache_and_sealift_no_cache_leave_the_cache_alone(
    docker_save: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = {"SEALIFT_CACHE_DIR": str(cache), "SEALIFT_NO_CACHE": ""}
    out = tmp_path / "out.tar"
    sealift("convert", docker_save, out, "--compression", "zstd", "-q", "--no-cache", env=env)
    sealift("convert", docker_save, out, "-q", env={**env, "SEALIFT_NO_CACHE": "1"})
    assert not cache.exists()


def test_prune_shrinks_to_max_and_all_empties(docker_save: Path, tmp_path: Path) -> None:
    env = {"SEALIFT_CACHE_DIR": str(tmp_path / "cache"), "SEALIFT_NO_CACHE": ""}
    sealift("convert", docker_save, tmp_path / "a.tar", "--compression", "gzip", "-q", env=env)
    listed = json.loads(sealift("cache", "ls", "--json", env=env).output)
    largest = max(e["size"] for e in listed["entries"])

    sealift("cache", "prune", "--max", f"{largest}", env=env)
    left = json.loads(sealift("cache", "ls", "--json", env=env).output)
    assert 0 < left["total"] <= largest < listed["total"]

    assert "freed" in sealift("cache", "prune", "--all", env=env).output
    assert json.loads(sealift("cache", "ls", "--json", env=env).output)["entries"] == []


def test_prune_refuses_all_with_max(tmp_path: Path) -> None:
    env = {"SEALIFT_CACHE_DIR": str(tmp_path / "cache")}
    result = CliRunner().invoke(cli, ["cache", "prune", "--all", "--max", "1G"], env=env)
    assert result.exit_code == 2
