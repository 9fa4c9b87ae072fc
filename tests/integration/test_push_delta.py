"""``sealift push`` with binary deltas over a real sshd into real engines, bytes counted on the
wire: an update whose top layer changed by one small file crosses as a patch against the version
the host holds, and falls back to the whole layer where the host no longer holds it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sealift.digest import Digest
from tests.integration.test_push import (  # helpers of the push tests
    Host,
    Wire,
    _bin_dir,
    layer_sizes,
    push,
)
from tests.support.cli import REPO_ROOT, SealiftResult, run_sealift
from tests.support.dockerd import DockerDaemon, image_id
from tests.support.engines import both_engine_kinds
from tests.support.images import BuiltImage, ImageSet, build_edge_images
from tests.support.peers import Sshd

pytestmark = [pytest.mark.ssh, pytest.mark.engine]

UPDATE_BUDGET = 64 * 1024
"""Everything an update by patch may cost on the wire, ssh handshake included."""


@pytest.fixture(scope="module")
def edge_images(source_engine: DockerDaemon, test_images: ImageSet) -> tuple[BuiltImage, ...]:
    return build_edge_images(source_engine)


@pytest.fixture
def connect(sshd_factory: Callable[..., Sshd], tmp_path: Path) -> Callable[..., tuple[Host, Wire]]:
    """``host, wire = connect(engine)``: a host with sealift and docker, and the wire to it.

    Its sessions get ``PYTHONPATH`` too: the login shell's ~/.bashrc puts pyenv's shims first
    on the PATH, whose ``sealift`` is the installed one, not the tree under test.
    """

    def connect_one(engine: DockerDaemon, *, protocol_1_only: bool = False) -> tuple[Host, Wire]:
        root = tmp_path / "host0"
        bin_dir = _bin_dir(root / "bin", ("sealift", "docker"), engine)
        python_path = [str(REPO_ROOT / "src")]
        if protocol_1_only:  # an older sealift on the host: its agent speaks protocol 1 only
            python_path.append(str(_older_agent(root / "older")))
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "PYTHONPATH": ":".join(python_path),
            "XDG_CACHE_HOME": str(root / "cache"),
            "DOCKER_HOST": engine.host,
            "DOCKER_CONFIG": str(engine.client_config_dir),
        }
        host = Host(sshd_factory(env, alias="host0"), "host0", root / "cache")
        return host, Wire(tmp_path / "wire", [host])

    return connect_one


def _older_agent(directory: Path) -> Path:
    """A sitecustomize that makes the sealift under test speak protocol 1 only."""
    directory.mkdir(parents=True)
    (directory / "sitecustomize.py").write_text(
        "import sealift.remote.protocol as protocol\nprotocol.PROTOCOLS = (1,)\n"
    )
    return directory


@dataclass(frozen=True)
class EdgeHost:
    """A host over sshd whose engine holds edge:1, and the wire to it."""

    host: Host
    wire: Wire
    dest: DockerDaemon
    source: DockerDaemon
    old: BuiltImage
    new: BuiltImage

    def push(self, *args: str) -> SealiftResult:
        """``sealift push ARGS... ssh://host0`` from the source engine, through the wire."""
        return push(self.wire, self.source, *args, self.host.url)

    def assert_whole_layer_crossed(self, tmp_path: Path) -> None:
        """edge:2 arrived right, its top layer whole on the wire."""
        assert self.wire.bytes >= layer_sizes(self.source, self.new.ref, tmp_path)[-1]
        assert image_id(self.dest, self.new.ref) == self.new.id
        assert self.dest.run(self.new.ref) == self.new.expected_output


@pytest.fixture
def edge_host(
    edge_images: tuple[BuiltImage, BuiltImage],
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
) -> Callable[..., EdgeHost]:
    """``edge_host(protocol_1_only=False)``: an empty host, connected, sent edge:1 by push."""

    def holding_edge_1(*, protocol_1_only: bool = False) -> EdgeHost:
        old, new = edge_images
        host, wire = connect(empty_dest_engine, protocol_1_only=protocol_1_only)
        push(wire, source_engine, old.ref, host.url).assert_ok()
        return EdgeHost(host, wire, empty_dest_engine, source_engine, old, new)

    return holding_edge_1


# On the containerd store an agent push keeps the manifest digest (protocol 3): the layers are
# gzip blobs there, which cross as they are instead of as patches.


def _host_summary(result: Any) -> dict[str, Any]:
    summary: dict[str, Any] = result.json()["hosts"][0]
    assert summary["ok"] and summary["mode"] == "agent", summary
    return summary


@both_engine_kinds
def test_update_crosses_as_a_patch_and_falls_back_where_the_base_is_gone(
    edge_host: Callable[..., EdgeHost], source_engine: DockerDaemon, tmp_path: Path
) -> None:
    edge = edge_host()
    old, new, dest, host, wire = edge.old, edge.new, edge.dest, edge.host, edge.wire
    top = layer_sizes(source_engine, new.ref, tmp_path)[-1]
    assert top > 10 * UPDATE_BUDGET, "the changed layer must be large for the test to mean much"

    if source_engine.kind == "docker20":
        _update_crosses_as_a_patch(old, new, source_engine, dest, host, wire)
    else:
        _update_keeps_its_compressed_blob(new, source_engine, dest, host, wire)
    assert dest.run(new.ref) == new.expected_output
    left = list(host.cache.glob("sealift/staging/*"))
    assert not left, f"staging is cleaned after success: {left}"

    # --no-delta: the whole layer, as before
    dest.docker("rmi", new.ref)
    result = push(wire, source_engine, new.ref, host.url, "--json", "--no-delta").assert_ok()
    assert _host_summary(result)["deltas"] == []
    assert wire.bytes >= top, (wire.bytes, top)
    assert image_id(dest, new.ref) == new.id

    # the host lost the base (edge:1 removed): no patch, the whole layer, still the right image
    dest.docker("rmi", new.ref, old.ref)
    result = push(wire, source_engine, new.ref, host.url, "--json").assert_ok()
    summary = _host_summary(result)
    assert all(item["sent"] == "whole" for item in summary["deltas"]), summary["deltas"]
    assert wire.bytes >= top, (wire.bytes, top)
    assert image_id(dest, new.ref) == new.id
    assert dest.run(new.ref) == new.expected_output


def _update_crosses_as_a_patch(
    old: BuiltImage,
    new: BuiltImage,
    source: DockerDaemon,
    dest: DockerDaemon,
    host: Host,
    wire: Wire,
) -> None:
    """Docker 20.10 saves layers uncompressed: the changed top layer crosses as a patch."""
    # --dry-run: the base chosen, the patch and layer sizes; nothing crosses, nothing changes
    dry = push(wire, source, new.ref, host.url, "--dry-run").assert_ok()
    assert "patch of" in dry.stdout and "layer 2 of sealift-test/edge:1" in dry.stdout, dry.stdout
    assert not dest.has_image(new.ref)

    # the update: the top layer crosses as a patch against edge:1's
    result = push(wire, source, new.ref, host.url, "--json").assert_ok()
    deltas = {item["diff_id"]: item for item in _host_summary(result)["deltas"]}
    delta = deltas[new.diff_ids[-1]]
    assert delta["sent"] == "patch" and delta["fallback"] is None, delta
    assert delta["base"] == old.diff_ids[-1] and delta["diff_id"] == new.diff_ids[-1], delta
    assert delta["base_image"] == old.ref and delta["patch_bytes"] < 4096, delta
    assert wire.bytes <= UPDATE_BUDGET, wire.bytes
    assert image_id(dest, new.ref) == new.id


def _update_keeps_its_compressed_blob(
    new: BuiltImage, source: DockerDaemon, dest: DockerDaemon, host: Host, wire: Wire
) -> None:
    """Docker 26's containerd store holds the layers as gzip blobs: a patch would rebuild the
    content but not the blob, so the blob crosses as it is and the manifest digest survives."""
    dry = push(wire, source, new.ref, host.url, "--dry-run").assert_ok()
    assert "crosses as its compressed blob" in dry.stdout, dry.stdout
    assert not dest.has_image(new.ref)

    result = push(wire, source, new.ref, host.url, "--json").assert_ok()
    deltas = {item["diff_id"]: item for item in _host_summary(result)["deltas"]}
    delta = deltas[new.diff_ids[-1]]
    assert delta["sent"] == "whole" and "compressed blob" in delta["reason"], delta
    assert dest.inspect(new.ref)["RootFS"]["Layers"] == list(new.diff_ids)
    assert dest.inspect(new.ref)["Id"] == new.engine_id, "the manifest digest survived"
    assert image_id(dest, new.ref) == new.id


def test_an_agent_speaking_protocol_1_gets_whole_layers(
    edge_host: Callable[..., EdgeHost], tmp_path: Path
) -> None:
    edge = edge_host(protocol_1_only=True)
    result = edge.push(edge.new.ref, "--json").assert_ok()
    assert _host_summary(result)["deltas"] == [], "no protocol 2 frame to an older agent"
    edge.assert_whole_layer_crossed(tmp_path)


def test_a_base_that_does_not_match_falls_back_to_the_whole_layer(
    edge_host: Callable[..., EdgeHost], tmp_path: Path
) -> None:
    edge = edge_host()
    # the host's staging holds a damaged copy of the base, which the agent prefers to its engine
    staged = edge.host.cache / "sealift" / "staging" / Digest.parse(edge.old.diff_ids[-1]).hex
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(b"not the layer")
    result = edge.push(edge.new.ref, "--json").assert_ok()
    (delta,) = _host_summary(result)["deltas"]
    assert delta["sent"] == "whole" and "did not rebuild" in delta["fallback"], delta
    edge.assert_whole_layer_crossed(tmp_path)


def test_a_base_the_source_engine_lost_is_read_from_the_layer_cache(
    edge_host: Callable[..., EdgeHost], tmp_path: Path
) -> None:
    edge = edge_host()
    saved = tmp_path / "edge1.tar"  # the save compresses edge:1's layers into the layer cache
    run_sealift("save", edge.old.ref, "-o", saved, env=edge.source.env()).assert_ok()
    edge.source.docker("rmi", edge.old.ref)  # no engine export of the base is possible now
    try:
        result = edge.push(edge.new.ref, "--json").assert_ok()
    finally:
        run_sealift("load", saved, env=edge.source.env()).assert_ok()
    deltas = {item["diff_id"]: item for item in _host_summary(result)["deltas"]}
    delta = deltas[edge.new.diff_ids[-1]]
    assert delta["sent"] == "patch" and delta["base"] == edge.old.diff_ids[-1], delta
    assert edge.wire.bytes <= UPDATE_BUDGET, edge.wire.bytes
    assert image_id(edge.dest, edge.new.ref) == edge.new.id


@pytest.mark.parametrize("engine_kind", ["docker26"], indirect=True)
def test_a_blob_sealift_compressed_crosses_as_a_patch_and_keeps_the_manifest_digest(
    edge_images: tuple[BuiltImage, BuiltImage],
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    second_dest_engine: DockerDaemon,
    connect: Callable[..., tuple[Host, Wire]],
    tmp_path: Path,
) -> None:
    """An engine on the containerd store holding edge:1 and edge:2 as sealift's zstd blobs (a
    sealift archive loaded there): the update crosses as a patch, the host recompresses the
    rebuilt layer into the very blob, and the manifest digest survives."""
    old, new = edge_images
    archive = tmp_path / "edge-zstd.tar"
    env = source_engine.env()
    run_sealift(
        "save", old.ref, new.ref, "-o", archive, "--compression", "zstd", env=env
    ).assert_ok()
    report = run_sealift("inspect", "--json", archive).assert_ok().json()
    manifests = {row["id"]: row["manifest_digest"] for row in report["images"]}
    builder = second_dest_engine  # holds the zstd blobs: the source of the push
    builder.remove_all_images()
    run_sealift("load", archive, env=builder.env()).assert_ok()
    assert builder.inspect(new.ref)["Id"] == manifests[new.id]

    dest = empty_dest_engine
    host, wire = connect(dest)
    push(wire, builder, old.ref, host.url).assert_ok()
    result = push(wire, builder, new.ref, host.url, "--json").assert_ok()
    deltas = {item["diff_id"]: item for item in _host_summary(result)["deltas"]}
    delta = deltas[new.diff_ids[-1]]
    assert delta["sent"] == "patch" and delta["fallback"] is None, delta
    assert delta["base"] == old.diff_ids[-1] and delta["patch_bytes"] < 4096, delta
    assert wire.bytes <= UPDATE_BUDGET, wire.bytes
    assert dest.inspect(new.ref)["Id"] == manifests[new.id], "the manifest digest survived"
    assert image_id(dest, new.ref) == new.id
    assert dest.run(new.ref) == new.expected_output
    assert not list(host.cache.glob("sealift/staging/*")), "staging is cleaned after success"
