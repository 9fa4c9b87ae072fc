"""Protocol 3 without ssh or engines: compressed blobs cross as they are, staged by digest,
resumed inside the blob, and the images are rebuilt around their exact manifest bytes."""

from __future__ import annotations

import gzip
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealift import compression, media
from sealift.digest import Digest, sha256_of
from sealift.model import Descriptor, Layer, Manifest
from sealift.remote import protocol
from sealift.remote.protocol import Channel, Need, OfferedImage, OfferedLayer, ProtocolError
from sealift.remote.receiver import Received, StagingReceiver, receive_layer, staged_entry
from sealift.remote.sender import send_needed_layer
from sealift.remote.staging import Staging


def _content() -> bytes:
    return random.Random(3).randbytes(2 * 1024 * 1024) + b"text " * 200_000


def _gzip_layer(content: bytes) -> Layer:
    blob = gzip.compress(content, mtime=0)
    return Layer(
        Descriptor(media.OCI_LAYER_GZIP, sha256_of(blob), len(blob)),
        sha256_of(content),
        compression.GZIP,
        lambda: io.BytesIO(blob),
        verified=True,
    )


def _sent(layer: Layer, offset: int, *, blobs: bool) -> bytes:
    out = io.BytesIO()
    send_needed_layer(Channel(io.BytesIO(), out, "agent"), layer, offset, blobs, compression.ZSTD)
    return out.getvalue()


def _stage(staging: Staging, wire: bytes, keys: dict[Digest, Digest]) -> Received:
    received = Received()
    channel = Channel(io.BytesIO(wire), io.BytesIO(), "the client")
    receive_layer(staging, received, channel, channel.expect("layer"), keys)
    return received


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[Staging]:
    with Staging(tmp_path) as held:
        yield held


def test_a_compressed_blob_crosses_as_it_is_and_is_staged_by_its_digest(
    staging: Staging,
) -> None:
    layer = _gzip_layer(_content())
    wire = _sent(layer, 0, blobs=True)
    received = _stage(staging, wire, {layer.diff_id: layer.digest})
    assert received.wire_bytes == layer.size, "no second compression, nothing added"
    assert staging.hold(layer.digest) and not staging.hold(layer.diff_id)
    with layer.open() as blob:
        assert staging.complete_path(layer.digest).read_bytes() == blob.read()


def test_without_blobs_the_content_crosses_as_before(staging: Staging) -> None:
    layer = _gzip_layer(_content())
    _stage(staging, _sent(layer, 0, blobs=False), {})
    assert staging.hold(layer.diff_id) and not staging.hold(layer.digest)


def test_a_cut_blob_resumes_inside_the_blob(staging: Staging) -> None:
    layer = _gzip_layer(_content())
    keys = {layer.diff_id: layer.digest}
    full = _sent(layer, 0, blobs=True)
    with pytest.raises(ProtocolError):
        _stage(staging, full[: len(full) // 2], keys)
    offset = staging.offset(layer.digest)
    assert 0 < offset < layer.size
    received = _stage(staging, _sent(layer, offset, blobs=True), keys)
    assert received.wire_bytes == layer.size - offset
    assert sha256_of(staging.complete_path(layer.digest).read_bytes()) == layer.digest


def test_a_blob_not_offered_as_such_is_refused(staging: Staging) -> None:
    layer = _gzip_layer(_content())
    with pytest.raises(ProtocolError, match="offered as"):
        _stage(staging, _sent(layer, 0, blobs=True), {})


def _config(diff_ids: list[Digest]) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [str(d) for d in diff_ids]},
        }
    ).encode()


def _manifest(config: bytes, layer: Layer) -> Manifest:
    # not canonical JSON (as engines write it): the bytes must survive, not be re-serialized
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media.OCI_MANIFEST,
            "config": Descriptor(media.OCI_CONFIG, sha256_of(config), len(config)).to_json(),
            "layers": [layer.descriptor.to_json()],
        },
        indent=3,
    ).encode()
    return Manifest.parse(raw)


def _offered(config: bytes, layer: Layer) -> OfferedImage:
    offered = OfferedLayer(layer.diff_id, layer.digest, layer.size, layer.descriptor.media_type)
    tags = ("docker.io/library/app:1",)
    return OfferedImage(sha256_of(config), (layer.diff_id,), (offered,), tags)


def test_the_image_keeps_its_exact_manifest_when_its_blobs_are_staged(staging: Staging) -> None:
    layer = _gzip_layer(_content())
    config = _config([layer.diff_id])
    manifest = _manifest(config, layer)
    _stage(staging, _sent(layer, 0, blobs=True), {layer.diff_id: layer.digest})
    entry = staged_entry(staging, _offered(config, layer), config, manifest)
    (image,) = entry.images()
    assert image.manifest is not None and image.manifest.raw == manifest.raw
    with image.layers[0].open() as staged, layer.open() as blob:
        assert staged.read() == blob.read()


def test_a_pull_into_staging_asks_for_blobs_and_keeps_the_remotes_manifest(
    staging: Staging,
) -> None:
    layer = _gzip_layer(_content())
    config = _config([layer.diff_id])
    manifest = _manifest(config, layer)
    receiver = StagingReceiver(staging)
    receiver.exact = True  # the agent agreed on protocol 3
    need = receiver.plan([_offered(config, layer)])
    assert need.blobs and need.layers == {layer.diff_id: 0}
    channel = Channel(io.BytesIO(_sent(layer, 0, blobs=need.blobs)), io.BytesIO(), "the agent")
    receiver.receive(channel, channel.expect("layer"))
    assert staging.hold(layer.digest), "staged as the blob, by its digest"
    entry = staged_entry(staging, _offered(config, layer), config, manifest)
    (image,) = entry.images()
    assert image.manifest is not None and image.manifest.raw == manifest.raw
    assert not receiver.plan([_offered(config, layer)]).layers, "a staged blob is not asked again"


def test_a_pull_into_staging_from_an_older_agent_asks_for_content(staging: Staging) -> None:
    layer = _gzip_layer(_content())
    receiver = StagingReceiver(staging)
    need = receiver.plan([_offered(_config([layer.diff_id]), layer)])
    assert not need.blobs and need.layers == {layer.diff_id: 0}


def test_a_layer_staged_only_as_content_gets_a_rebuilt_manifest(staging: Staging) -> None:
    layer = _gzip_layer(_content())
    config = _config([layer.diff_id])
    manifest = _manifest(config, layer)
    _stage(staging, _sent(layer, 0, blobs=False), {})  # as a patch rebuilds it
    (image,) = staged_entry(staging, _offered(config, layer), config, manifest).images()
    assert image.manifest is not None and image.manifest.digest != manifest.digest
    assert image.layers[0].codec == compression.NONE and image.id == sha256_of(config)


def test_manifests_are_checked_against_their_images() -> None:
    layer = _gzip_layer(b"x")
    config = _config([layer.diff_id])
    manifest = _manifest(config, layer)
    image_id = str(sha256_of(config))
    message = {"manifests": protocol.manifests_json({sha256_of(config): manifest.raw})}
    parsed = protocol.parse_manifests(message, [image_id])
    assert parsed[sha256_of(config)].raw == manifest.raw
    other = "sha256:" + "e" * 64
    forged = {"manifests": {other: message["manifests"][image_id]}}
    with pytest.raises(ProtocolError, match="names config"):
        protocol.parse_manifests(forged, [other])
    assert protocol.parse_manifests({}, [image_id]) == {}


def test_need_and_offer_carry_the_exact_blob_fields() -> None:
    need = Need({sha256_of(b"a"): 5}, blobs=True)
    assert Need.parse(need.to_json()) == need
    assert "blobs" not in Need({}).to_json()
    layer = _gzip_layer(b"x")
    config = _config([layer.diff_id])
    offered = _offered(config, layer)
    with_manifest = OfferedImage(
        offered.id, offered.diff_ids, offered.layers, offered.tags, sha256_of(b"manifest")
    )
    message = protocol.offer_message([with_manifest, offered])
    assert protocol.parse_offer(message) == [with_manifest, offered]


def test_a_bare_docker_archive_is_gzipped_only_when_a_layer_in_it_is_uncompressed() -> None:
    from sealift.model import Entry, Image, ImageConfig
    from sealift.reference import Reference
    from sealift.remote.hosts import RemoteOptions, _archive_codec

    blob = _gzip_layer(_content())
    plain = Layer(
        Descriptor(media.OCI_LAYER, sha256_of(b"plain"), 5),
        sha256_of(b"plain"),
        compression.NONE,
        lambda: io.BytesIO(b"plain"),
        verified=True,
    )
    config = ImageConfig.parse(_config([blob.diff_id, plain.diff_id]), "config")
    entries = [Entry(Image(config, (blob, plain)), (Reference.parse("app:1"),))]
    assert _archive_codec(entries, set(), RemoteOptions()) == compression.GZIP
    assert _archive_codec(entries, {plain.digest}, RemoteOptions()) == compression.NONE
    no_gzip = RemoteOptions(compression=compression.NONE)
    assert _archive_codec(entries, set(), no_gzip) == compression.NONE
