"""Patches in update bundles without engines: described in update.json, planned against the
inventory, made only where they pay, and checked and rebuilt or refused on the site."""

from __future__ import annotations

import contextlib
import gzip
import io
import random
import tarfile
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from sealift import media
from sealift.cache import LayerCache
from sealift.delta import PatchError, WrongBaseError
from sealift.digest import Digest, sha256_of
from sealift.ends.archive import ArchiveSource
from sealift.ends.engine import Engine
from sealift.ends.memory import MemorySink, MemorySource, image_from_layers
from sealift.errors import DigestMismatchError, InvalidArchiveError, NotFoundError, UsageError
from sealift.inventory import HeldImage, Inventory
from sealift.model import Entry
from sealift.transfer import copy, left_out, verify
from sealift.update import FORMAT, PATCHED_FORMAT, Omitted, UpdateSink
from sealift.update_patches import (
    BaseFinder,
    BundlePatcher,
    EngineBases,
    PatchedLayer,
    check_patch,
    patch_member,
    plan_patches,
    rebuild_layer,
)


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


RNG = random.Random(13)
PAYLOAD = RNG.randbytes(512 * 1024) + b"config line\n" * 20_000
BOTTOM = _tar({"bin/sh": b"bottom layer " * 100})
OLD_TOP = _tar({"app/data.bin": PAYLOAD, "app/version.txt": b"1\n"})
NEW_TOP = _tar({"app/data.bin": PAYLOAD, "app/version.txt": b"2\n"})
UNRELATED = _tar({"other.bin": RNG.randbytes(300 * 1024)})


def _inventory(*images: tuple[str, list[bytes]]) -> Inventory:
    held = tuple(
        HeldImage(str(sha256_of(repr(tag).encode())), (tag,), tuple(sha256_of(d) for d in layers))
        for tag, layers in images
    )
    return Inventory("2026-12-01T00:00:00+00:00", "site", False, held)


def _site_with_old_release() -> Inventory:
    return _inventory(("edge:1", [BOTTOM, OLD_TOP]))


def _new_release(tag: str = "edge:2") -> list[Entry]:
    return [image_from_layers([BOTTOM, NEW_TOP], (tag,))]


def _bases(*tars: bytes, root: Path) -> dict[Digest, Path]:
    paths = {}
    for data in tars:
        path = root / f"base-{sha256_of(data).hex}"
        path.write_bytes(data)
        paths[sha256_of(data)] = path
    return paths


def _finder(paths: dict[Digest, Path]) -> BaseFinder:
    def find(base: Digest, holders: Sequence[HeldImage]) -> Path | None:
        assert holders, "the inventory names the images that hold the base"
        return paths.get(base)

    return find


def test_a_layer_the_site_holds_an_older_version_of_is_planned_against_it() -> None:
    plans = plan_patches(_new_release(), _site_with_old_release())
    assert [(layer.diff_id, plan.base) for layer, plan in plans] == [
        (sha256_of(NEW_TOP), sha256_of(OLD_TOP))
    ]


def test_no_patch_is_planned_for_another_repository_or_an_untagged_image() -> None:
    assert plan_patches(_new_release("other:2"), _site_with_old_release()) == []
    untagged = [image_from_layers([BOTTOM, NEW_TOP])]
    assert plan_patches(untagged, _site_with_old_release()) == []


def test_a_patch_is_made_and_rebuilds_the_layer_exactly(tmp_path: Path) -> None:
    bases = _bases(OLD_TOP, root=tmp_path)
    entries = _new_release()
    with BundlePatcher(_site_with_old_release(), _finder(bases), level=1) as patcher:
        made = patcher.make(entries)
        (patch,) = made.values()
        assert patch.layer.diff_id == sha256_of(NEW_TOP)
        assert patch.layer.base == sha256_of(OLD_TOP)
        assert patch.layer.patch_size == patch.path.stat().st_size < len(NEW_TOP) // 100
        assert patch.layer.member == f"patches/{sha256_of(NEW_TOP).hex}.patch"
        with patch.path.open("rb") as stream:
            check_patch(stream, patch.layer, "update.tar")
            stream.seek(0)
            out = io.BytesIO()
            rebuild_layer(stream, bases[patch.layer.base], patch.layer, out, "update.tar")
    assert out.getvalue() == NEW_TOP


def test_no_patch_when_this_side_lacks_the_base_or_it_does_not_pay(tmp_path: Path) -> None:
    entries = _new_release()
    with BundlePatcher(_site_with_old_release(), _finder({}), level=1) as patcher:
        assert patcher.make(entries) == {}
    unrelated_site = _inventory(("edge:1", [BOTTOM, UNRELATED]))
    bases = _bases(UNRELATED, root=tmp_path)
    with BundlePatcher(unrelated_site, _finder(bases), level=1) as patcher:
        assert patcher.make(entries) == {}


def _one_patch(tmp_path: Path) -> tuple[PatchedLayer, bytes]:
    bases = _bases(OLD_TOP, root=tmp_path)
    with BundlePatcher(_site_with_old_release(), _finder(bases), level=1) as patcher:
        (patch,) = patcher.make(_new_release()).values()
        return patch.layer, patch.path.read_bytes()


def test_a_damaged_patch_is_refused_naming_the_layer(tmp_path: Path) -> None:
    described, data = _one_patch(tmp_path)
    damaged = bytearray(data)
    damaged[-10] ^= 0xFF
    with pytest.raises(DigestMismatchError, match=described.diff_id.encoded):
        check_patch(io.BytesIO(bytes(damaged)), described, "update.tar")
    with pytest.raises(PatchError, match=described.diff_id.encoded):
        base = _bases(OLD_TOP, root=tmp_path)[described.base]
        rebuild_layer(io.BytesIO(bytes(damaged)), base, described, io.BytesIO(), "update.tar")


def test_a_missing_or_wrong_base_is_refused_naming_the_layer(tmp_path: Path) -> None:
    described, data = _one_patch(tmp_path)
    with pytest.raises(NotFoundError, match=described.diff_id.encoded):
        rebuild_layer(io.BytesIO(data), None, described, io.BytesIO(), "update.tar")
    wrong = tmp_path / "wrong"
    wrong.write_bytes(OLD_TOP[:5000] + bytes([OLD_TOP[5000] ^ 1]) + OLD_TOP[5001:])
    with pytest.raises(WrongBaseError, match=described.diff_id.encoded):
        rebuild_layer(io.BytesIO(data), wrong, described, io.BytesIO(), "update.tar")


def test_update_json_describes_patches_in_a_format_older_versions_refuse(tmp_path: Path) -> None:
    described, _ = _one_patch(tmp_path)
    held = {sha256_of(BOTTOM): sha256_of(BOTTOM)}
    plain = Omitted("2026-12-01", "site", held)
    assert f'"{FORMAT}"' in plain.to_json().decode()
    assert Omitted.parse(plain.to_json(), "update.json") == plain
    with_patches = Omitted("2026-12-01", "site", held, {described.digest: described})
    assert f'"{PATCHED_FORMAT}"' in with_patches.to_json().decode()
    assert Omitted.parse(with_patches.to_json(), "update.json") == with_patches


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text.replace('"base_diff_id": "sha256:', '"base_diff_id": "sha256:zz'),
        lambda text: text.replace('"size": ', '"size": -', 1),
        lambda text: text.replace('"media_type"', '"kind"'),
    ],
)
def test_a_damaged_patch_description_is_refused(
    tmp_path: Path, damage: Callable[[str], str]
) -> None:
    described, _ = _one_patch(tmp_path)
    text = Omitted("2026-12-01", "site", {}, {described.digest: described}).to_json().decode()
    with pytest.raises(InvalidArchiveError, match="damaged"):
        Omitted.parse(damage(text).encode(), "update.json")


def test_a_patch_is_stored_under_its_layers_diff_id() -> None:
    assert patch_member(sha256_of(b"x")) == f"patches/{sha256_of(b'x').hex}.patch"


def _bundle(tmp_path: Path, *, delta: bool = True) -> Path:
    bundle = tmp_path / "update.tar"
    bases = _bases(OLD_TOP, root=tmp_path)
    inventory = _site_with_old_release()
    copy(
        MemorySource(_new_release()),
        UpdateSink(str(bundle), inventory, delta=delta, find_base=_finder(bases)),
    )
    return bundle


def _members(bundle: Path) -> set[str]:
    with tarfile.open(bundle) as tar:
        return set(tar.getnames())


def test_an_update_stores_the_patch_and_leaves_the_layer_out(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    with ArchiveSource(bundle) as source:
        source.entries()
        omitted = left_out(source)
        assert omitted is not None
        (patched,) = omitted.patched.values()
        assert patched.diff_id == sha256_of(NEW_TOP) and patched.base == sha256_of(OLD_TOP)
        # the manifest names the uncompressed tar, which the site rebuilds exactly
        (entry,) = source.entries()
        (image,) = entry.images()
        assert image.manifest is not None
        assert image.manifest.layers[-1].digest == patched.digest == patched.diff_id
        assert (patched.size, patched.media_type) == (len(NEW_TOP), media.OCI_LAYER)
        assert f"sealift/{patched.member}" in _members(bundle)
        assert f"blobs/sha256/{patched.digest.encoded}" not in _members(bundle)
        report = verify(source)
        assert (report.patched, report.left_out, report.layers) == (1, 1, 0)


def test_a_patch_bundle_is_refused_by_anything_but_an_engine(tmp_path: Path) -> None:
    with ArchiveSource(_bundle(tmp_path)) as source:
        source.entries()
        omitted = left_out(source)
        assert omitted is not None
        holds_the_rest = MemorySink(blobs={str(digest): b"" for digest in omitted.layers})
        with pytest.raises(UsageError, match=r"1 layers as patches.*`sealift load`"):
            copy(source, holds_the_rest)


def test_without_delta_the_update_carries_the_layer(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, delta=False)
    with ArchiveSource(bundle) as source:
        source.entries()
        omitted = left_out(source)
        assert omitted is not None and omitted.patched == {}
    assert not any(name.startswith("sealift/patches/") for name in _members(bundle))


def test_a_site_on_the_containerd_image_store_gets_patches_too(tmp_path: Path) -> None:
    site = _site_with_old_release()
    containerd_site = Inventory(site.created, site.source, True, site.images)
    bases = _bases(OLD_TOP, root=tmp_path)
    with BundlePatcher(containerd_site, _finder(bases), level=1) as patcher:
        (patch,) = patcher.make(_new_release()).values()
    assert patch.layer.base == sha256_of(OLD_TOP)


def _big_release(tmp_path: Path) -> tuple[Path, Inventory, bytes]:
    """A bundle whose one patch is far larger than the memory its save and load may use."""
    rng = random.Random(14)
    base = rng.randbytes(BIG_PATCH + 1024 * 1024)
    old = _tar({"app/base.bin": base})
    new = _tar({"app/base.bin": base, "app/new.bin": rng.randbytes(BIG_PATCH)})
    site = _inventory(("big:1", [old]))
    bundle = tmp_path / "update.tar"
    sink = UpdateSink(str(bundle), site, find_base=_finder(_bases(old, root=tmp_path)))
    release = [image_from_layers([new], ("big:2",))]
    with _traced_peak() as peak:  # the sink's own part of a save: patch, then archive
        sink.write(release)
    assert peak() < MEMORY_CAP, f"the save used {peak()} bytes"
    return bundle, site, old


BIG_PATCH = 20 * 1024 * 1024
MEMORY_CAP = 8 * 1024 * 1024


@contextlib.contextmanager
def _traced_peak() -> Iterator[Callable[[], int]]:
    """The peak of Python's own allocations inside the block, above what it started with."""
    measured: list[int] = []
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        yield lambda: measured[0] - start
        measured.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def test_patches_cross_a_bundle_streamed_never_held_in_memory(tmp_path: Path) -> None:
    bundle, _, old = _big_release(tmp_path)
    base = _bases(old, root=tmp_path)
    with ArchiveSource(bundle) as source:
        source.entries()
        omitted = left_out(source)
        assert omitted is not None
        (patched,) = omitted.patched.values()
        assert patched.patch_size > BIG_PATCH > MEMORY_CAP
        rebuilt = tmp_path / "rebuilt"
        with _traced_peak() as peak:
            assert verify(source).patched == 1
            patch = source.open_extra(patched.member)
            assert patch is not None
            with patch, rebuilt.open("wb") as out:
                rebuild_layer(patch, base[patched.base], patched, out, "update.tar")
        assert peak() < MEMORY_CAP, f"the load used {peak()} bytes"
    assert sha256_of(rebuilt.read_bytes()) == patched.diff_id


def test_a_dry_run_measures_each_patch_and_writes_nothing(tmp_path: Path) -> None:
    bundle = tmp_path / "update.tar"
    bases = _finder(_bases(OLD_TOP, root=tmp_path))
    release = [image_from_layers([BOTTOM, NEW_TOP, UNRELATED], ("edge:2",))]
    sink = UpdateSink(str(bundle), _site_with_old_release(), find_base=bases, dry_run=True)
    result = copy(MemorySource(release), sink)
    assert not bundle.exists()
    layers = result.details["layers"]
    assert isinstance(layers, list)
    patch, whole = cast(list[dict[str, Any]], layers)
    assert patch["diff_id"] == str(sha256_of(NEW_TOP))
    assert (patch["sent"], patch["base"]) == ("patch", str(sha256_of(OLD_TOP)))
    assert 0 < patch["patch_bytes"] < patch["layer_bytes"] // 10
    assert whole["diff_id"] == str(sha256_of(UNRELATED)) and whole["sent"] == "whole"
    assert whole["patch_bytes"] is None and "no older version" in whole["reason"]
    assert result.layers_skipped == 1
    written = UpdateSink(str(bundle), _site_with_old_release(), find_base=bases)
    copy(MemorySource(release), written)
    assert result.bytes_sent == bundle.stat().st_size


class _EngineWithoutImages:
    def inspect(self, ref: str) -> dict[str, Any]:
        raise NotFoundError(f"no such image {ref}")


def test_the_build_box_reads_a_base_from_its_layer_cache_before_its_engine(
    tmp_path: Path,
) -> None:
    cache = LayerCache(tmp_path / "cache")
    for layer, stored in ((OLD_TOP, OLD_TOP), (UNRELATED, OLD_TOP)):  # the second is damaged
        blob = tmp_path / "blob.gz"
        blob.write_bytes(gzip.compress(stored, mtime=0))
        cache.put(sha256_of(layer), "gzip", 6, blob, sha256_of(blob.read_bytes()), len(layer))
    holders = [HeldImage("sha256:" + "0" * 64, ("edge:1",), (sha256_of(OLD_TOP),))]
    with cache, EngineBases(cast(Engine, _EngineWithoutImages()), cache) as bases:
        found = bases(sha256_of(OLD_TOP), holders)
        assert found is not None and found.read_bytes() == OLD_TOP
        assert bases(sha256_of(UNRELATED), holders) is None, "neither the cache nor the engine"
