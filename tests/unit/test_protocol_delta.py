"""Protocol 2 without ssh or engines: layers as patches, and every way a patch is not used."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from sealift import compression, media
from sealift.cache import LayerCache
from sealift.delta import BadPatchError, make_patch
from sealift.digest import Digest
from sealift.ends.engine import Engine
from sealift.model import Descriptor, Entry, Image, ImageConfig, Layer
from sealift.reference import Reference
from sealift.remote import agent, protocol
from sealift.remote.deltas import (
    LayerDelta,
    PatchMaker,
    PlannedPatch,
    ReceiverBases,
    receive_patch,
    send_layers_or_patches,
    send_patch,
)
from sealift.remote.protocol import Channel, HeldImage, Need, OfferedImage, OfferedLayer
from sealift.remote.receiver import Receiver
from sealift.remote.staging import Staging

RNG = random.Random(14)
BASE = RNG.randbytes(512 * 1024) + b"config line\n" * 20_000
TARGET = BASE[:1000] + b"one small change" + BASE[1000:]
BOTTOM = b"bottom layer " * 100


def _digest(data: bytes) -> Digest:
    return Digest.from_hex(hashlib.sha256(data).hexdigest())


def _layer(data: bytes) -> Layer:
    diff_id = _digest(data)
    return Layer(
        Descriptor(media.OCI_LAYER, diff_id, len(data)),
        diff_id,
        compression.NONE,
        lambda: io.BytesIO(data),
        verified=True,
    )


def _entry(tag: str, layers: list[bytes]) -> Entry:
    diff_ids = [str(_digest(data)) for data in layers]
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    parsed = ImageConfig.parse(json.dumps(config).encode(), tag)
    image = Image(parsed, tuple(_layer(data) for data in layers))
    return Entry(image, (Reference.parse(tag),))


def _offered(entry: Entry) -> OfferedImage:
    (image,) = entry.images()
    layers = tuple(
        OfferedLayer(layer.diff_id, layer.digest, layer.size, media.OCI_LAYER)
        for layer in image.layers
    )
    tags = tuple(str(tag) for tag in entry.tags)
    return OfferedImage(image.id, image.config.diff_ids, layers, tags)


def _held(entry: Entry) -> HeldImage:
    offered = _offered(entry)
    return HeldImage(str(offered.id), offered.tags, offered.diff_ids, "2026-01-01T00:00:00Z")


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[Staging]:
    with Staging(tmp_path / "staging") as held:
        yield held.ensure()


@pytest.fixture
def patch_file(tmp_path: Path) -> PlannedPatch:
    path = tmp_path / "patch"
    with path.open("wb") as out:
        info = make_patch(io.BytesIO(BASE), io.BytesIO(TARGET), out)
    assert info is not None
    return PlannedPatch(_digest(TARGET), _digest(BASE), path, info.size)


def _sent(planned: PlannedPatch, answer: str = '{"t":"patched","ok":true}') -> bytes:
    out = io.BytesIO()
    channel = Channel(io.BytesIO(answer.encode() + b"\n"), out)
    report = LayerDelta(str(planned.diff_id), len(TARGET))
    assert send_patch(channel, planned, report) is ('"ok":true' in answer)
    return out.getvalue()


def _bases(staging: Staging, held: list[HeldImage] | None = None) -> ReceiverBases:
    return ReceiverBases(cast(Engine, object()), staging, held or [])


def _received(staging: Staging, wire: bytes, bases: ReceiverBases) -> str | None:
    channel = Channel(io.BytesIO(wire), io.BytesIO(), "the client")
    return receive_patch(staging, bases, channel, channel.expect("patch"))


# ------------------------------------------------------------------------------ negotiation
def test_the_newest_common_protocol_is_chosen_down_to_1_with_an_older_peer() -> None:
    assert protocol.choose_protocol(protocol.hello()) == protocol.EXACT_PROTOCOL
    deltas_only = {"t": "hello", "protocols": [1, 2], "sealift": "0.1.0"}
    assert protocol.choose_protocol(deltas_only) == protocol.DELTA_PROTOCOL
    older = {"t": "hello", "protocols": [1], "sealift": "0.1.0"}
    assert protocol.choose_protocol(older) == 1


def test_need_lists_held_images_only_when_asked() -> None:
    held = _held(_entry("app:1", [BOTTOM, BASE]))
    plain = Need({_digest(TARGET): 0})
    assert "held" not in plain.to_json() and Need.parse(plain.to_json()).held is None
    with_held = Need({_digest(TARGET): 0}, held=(held,))
    assert Need.parse(with_held.to_json()) == with_held
    assert "deltas" not in protocol.offer_message([])
    assert protocol.offer_message([], deltas=True)["deltas"] is True


@pytest.mark.parametrize(
    "item",
    [
        "not an object",
        {"id": "sha256:zz", "tags": [], "diff_ids": []},
        {"id": "sha256:" + "a" * 64, "tags": ["$(id)"], "diff_ids": []},
        {"id": "sha256:" + "a" * 64, "tags": []},
    ],
)
def test_held_images_are_validated(item: Any) -> None:
    with pytest.raises(protocol.ProtocolError):
        Need.parse({"t": "need", "layers": [], "held": [item]})


# ------------------------------------------------------------------------------ patch planning
def test_a_changed_layer_is_planned_as_a_patch_against_its_older_version() -> None:
    old, new = _entry("app:1", [BOTTOM, BASE]), _entry("app:2", [BOTTOM, TARGET])
    need = Need({_digest(TARGET): 0}, configs=(str(_offered(new).id),), held=(_held(old),))
    maker = PatchMaker(None, compression.ZSTD, None)
    try:
        plan = maker.plan([old, new], [_offered(old), _offered(new)], need)
    finally:
        maker.close()
    report = plan.reports[_digest(TARGET)]
    assert report.sent == "patch" and report.base == str(_digest(BASE)), report
    assert report.base_image == "app:1" and "layer 1 of" in report.reason
    assert report.patch_bytes is not None and report.patch_bytes < 2048 < report.layer_bytes


def _cached_gzip(cache: LayerCache, data: bytes, stored: bytes, tmp_path: Path) -> None:
    """Cache ``stored``, gzipped, as the layer ``data`` (a damaged entry when they differ)."""
    blob = tmp_path / f"blob-{_digest(stored).hex}"
    blob.write_bytes(gzip.compress(stored, mtime=0))
    cache.put(_digest(data), compression.GZIP, 6, blob, _digest(blob.read_bytes()), len(data))


def test_a_base_absent_from_the_images_sent_is_read_from_the_layer_cache(tmp_path: Path) -> None:
    old, new = _entry("app:1", [BOTTOM, BASE]), _entry("app:2", [BOTTOM, TARGET])
    need = Need({_digest(TARGET): 0}, configs=(str(_offered(new).id),), held=(_held(old),))
    cache = LayerCache(tmp_path / "cache")
    _cached_gzip(cache, BASE, BASE, tmp_path)
    maker = PatchMaker(None, compression.ZSTD, None, cache)  # no engine to export the base from
    try:
        plan = maker.plan([new], [_offered(new)], need)
    finally:
        maker.close()
    report = plan.reports[_digest(TARGET)]
    assert report.sent == "patch" and report.base == str(_digest(BASE)), report
    assert report.patch_bytes is not None and report.patch_bytes < 2048


def test_a_cached_base_that_is_not_the_layer_is_not_patched_against(tmp_path: Path) -> None:
    old, new = _entry("app:1", [BOTTOM, BASE]), _entry("app:2", [BOTTOM, TARGET])
    need = Need({_digest(TARGET): 0}, configs=(str(_offered(new).id),), held=(_held(old),))
    cache = LayerCache(tmp_path / "cache")
    _cached_gzip(cache, BASE, BASE[::-1], tmp_path)  # its blob digest checks, its content not
    maker = PatchMaker(None, compression.ZSTD, None, cache)
    try:
        plan = maker.plan([new], [_offered(new)], need)
    finally:
        maker.close()
    report = plan.reports[_digest(TARGET)]
    assert report.sent == "whole" and "does not hold the base" in report.reason, report


def test_small_resumed_or_baseless_layers_go_whole() -> None:
    old, new = _entry("app:1", [BOTTOM]), _entry("app:2", [BOTTOM + b"x"])
    small = _digest(BOTTOM + b"x")
    need = Need({small: 0}, configs=(str(_offered(new).id),), held=(_held(old),))
    maker = PatchMaker(None, compression.ZSTD, None)
    try:
        plan = maker.plan([old, new], [_offered(old), _offered(new)], need)
        assert not plan.patches and "too small" in plan.reports[small].reason
        resumed = Need({small: 10}, configs=need.configs, held=need.held)
        assert not maker.plan([old, new], [_offered(old), _offered(new)], resumed).reports
        other, lone = _entry("other:1", [BASE]), _entry("app:2", [TARGET])
        need = Need({_digest(TARGET): 0}, configs=(str(_offered(lone).id),), held=(_held(other),))
        plan = maker.plan([lone], [_offered(lone)], need)
        assert plan.reports[_digest(TARGET)].base is None, "another repository, paths unknown"
    finally:
        maker.close()


# -------------------------------------------------------------------------- receiving patches
def test_a_patch_rebuilds_the_layer_into_staging(
    staging: Staging, patch_file: PlannedPatch
) -> None:
    staging.complete_path(patch_file.base).write_bytes(BASE)
    wire = _sent(patch_file)
    assert len(wire) < len(TARGET) // 100
    assert _received(staging, wire, _bases(staging)) is None
    assert staging.complete_path(patch_file.diff_id).read_bytes() == TARGET


def test_a_corrupt_patch_is_refused_and_nothing_is_staged(
    staging: Staging, patch_file: PlannedPatch
) -> None:
    staging.complete_path(patch_file.base).write_bytes(BASE)
    data = bytearray(patch_file.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    patch_file.path.write_bytes(bytes(data))
    with pytest.raises(BadPatchError, match="patch is refused"):
        _received(staging, _sent(patch_file), _bases(staging))
    assert not staging.complete_path(patch_file.diff_id).exists()
    assert staging.offset(patch_file.diff_id) == 0


def test_a_wrong_base_asks_for_the_whole_layer(staging: Staging, patch_file: PlannedPatch) -> None:
    staging.complete_path(patch_file.base).write_bytes(BASE[:-1] + b"?")
    reason = _received(staging, _sent(patch_file), _bases(staging))
    assert reason is not None and "did not rebuild" in reason
    assert not staging.complete_path(patch_file.diff_id).exists()
    assert staging.offset(patch_file.diff_id) == 0, "the whole layer will start from 0"


def test_a_base_the_engine_no_longer_has_asks_for_the_whole_layer(
    staging: Staging, patch_file: PlannedPatch
) -> None:
    reason = _received(staging, _sent(patch_file), _bases(staging))
    assert reason is not None and "no longer holds the base" in reason


def test_a_patch_longer_than_announced_is_a_protocol_error(
    staging: Staging, patch_file: PlannedPatch
) -> None:
    wire = _sent(patch_file).replace(f'"size":{patch_file.size}}}'.encode(), b'"size":10}', 1)
    with pytest.raises(protocol.ProtocolError, match="longer than"):
        _received(staging, wire, _bases(staging))


def test_a_refused_patch_is_followed_by_the_whole_layer(patch_file: PlannedPatch) -> None:
    old, new = _entry("app:1", [BASE]), _entry("app:2", [TARGET])
    need = Need({patch_file.diff_id: 0}, configs=(str(_offered(new).id),))
    report = LayerDelta(str(patch_file.diff_id), len(TARGET), sent="patch")
    from sealift.remote.deltas import DeltaPlan

    plan = DeltaPlan({patch_file.diff_id: patch_file}, {patch_file.diff_id: report})
    out = io.BytesIO()
    answer = b'{"t":"patched","ok":false,"reason":"the engine no longer holds it"}\n'
    channel = Channel(io.BytesIO(answer), out)
    send_layers_or_patches(channel, [old, new], need, plan, compression.ZSTD)
    assert _kinds(out.getvalue()) == ["patch", "c", "end", "layer", "c", "end"]
    assert report.sent == "whole" and report.fallback == "the engine no longer holds it"


def _kinds(wire: bytes) -> list[str]:
    channel = Channel(io.BytesIO(wire), io.BytesIO())
    kinds = []
    with pytest.raises(protocol.ProtocolError, match="closed"):
        while True:
            kinds.append(str(channel.recv()[0]["t"]))
    return kinds


# ---------------------------------------------------------------------------------- the agent
class _FakeEngine:
    """What a receiver asks of an engine while planning, for one held image."""

    containerd_store = False

    def __init__(self, held: HeldImage) -> None:
        self._held = held
        self.api = self

    def images(self) -> list[dict[str, Any]]:
        tags = [Reference.parse(tag).familiar for tag in self._held.tags]
        return [{"Id": self._held.id, "RepoTags": tags}]

    def call(self, method: Any, *args: Any) -> Any:
        return method(*args)

    def image_ids(self) -> list[str]:
        return [self._held.id]

    def chain_holders(self) -> dict[Digest, str]:
        from sealift.ends.engine import chain_ids

        return dict.fromkeys(chain_ids(list(self._held.diff_ids)), self._held.id)

    def inspect(self, ref: str) -> dict[str, Any]:
        layers = [str(d) for d in self._held.diff_ids]
        return {"Id": self._held.id, "RootFS": {"Layers": layers}, "Created": "2026"}


def test_the_agent_refuses_a_corrupt_patch_and_never_commits(
    staging: Staging, patch_file: PlannedPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = _entry("app:1", [BOTTOM, BASE]), _entry("app:2", [BOTTOM, TARGET])
    staging.complete_path(patch_file.base).write_bytes(BASE)
    receiver = Receiver(cast(Engine, _FakeEngine(_held(old))), staging)
    committed: list[object] = []
    monkeypatch.setattr(receiver, "commit", lambda *args: committed.append(args))
    data = bytearray(patch_file.path.read_bytes())
    data[-100] ^= 0xFF
    patch_file.path.write_bytes(bytes(data))
    wire = _sent(patch_file) + b'{"t":"commit","configs":{}}\n'
    out = io.BytesIO()
    channel = Channel(io.BytesIO(wire), out, "the client")
    with pytest.raises(BadPatchError):
        agent._receive_into(channel, receiver, [_offered(new)], deltas=True)
    need = json.loads(out.getvalue().splitlines()[0])
    assert [h["tags"] for h in need["held"]] == [["docker.io/library/app:1"]]
    assert not committed and not staging.complete_path(patch_file.diff_id).exists()


def test_bases_hint_is_validated() -> None:
    base = _digest(BASE)
    assert protocol.parse_bases({"t": "bases", "diff_ids": [str(base)]}) == [base]
    for bad in ({"t": "bases"}, {"t": "bases", "diff_ids": ["sha256:zz"]}):
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_bases(bad)


def test_prefetched_bases_are_ready_when_the_patch_comes(
    staging: Staging, patch_file: PlannedPatch
) -> None:
    staging.complete_path(patch_file.base).write_bytes(BASE)
    held = _held(_entry("app:1", [BOTTOM, BASE]))
    bases = _bases(staging, [held])
    bases.prefetch([patch_file.base, _digest(b"not held")])
    try:
        assert _received(staging, _sent(patch_file), bases) is None
        assert staging.complete_path(patch_file.diff_id).read_bytes() == TARGET
    finally:
        bases.close()
