"""Real clients pull from ``sealift serve``: Docker 20.10, skopeo, containerd's ctr and podman.

The served sources are the archives real tools wrote (``../shared/fixtures/tools``): legacy
``docker save`` (no manifests stored: sealift gives each image the manifest ``convert`` writes),
Docker 26's save (Docker v2 manifests with uncompressed layers), skopeo's gzip and zstd OCI
archives, podman's multi-platform layout and a BuildKit image with its provenance attestation.
Each pull must end with the image ID the archive holds; skopeo must get byte-identical manifests.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run_sealift, sealift_env
from tests.support.docker26 import Docker26Daemon
from tests.support.dockerd import DockerDaemon
from tests.support.engines import EnginePair
from tests.support.fixtures import DOCKER_APP_ID, DOCKER_BASE_ID, OCI_APP_ID
from tests.support.peers import Containerd, Podman, Skopeo
from tests.support.tls import make_ca_and_server_cert

pytestmark = pytest.mark.timeout(300)

PROVENANCE_INDEX = "sha256:b26fa8b8d20a574584f4319214da467281cf7df4827148356434207feeb4429b"
PROVENANCE_IMAGE_ID = "sha256:3f339950253b04fd8d891b48d76567991702a4f91d46a9ef4d72b846b6767371"
NO_TLS = "--src-tls-verify=false"


@dataclass(frozen=True)
class Served:
    info: dict[str, Any]

    @property
    def address(self) -> str:
        return str(self.info["listen"])

    def ref(self, name: str) -> str:
        return f"{self.address}/{name}"


@contextmanager
def sealift_serve(source: Path | str, *args: str, log: Path) -> Iterator[Served]:
    """``sealift serve SOURCE --listen 127.0.0.1:0 --json ARGS``; stopped with SIGTERM after,
    and it must then exit 0."""
    with log.open("wb") as stderr:
        command = [sys.executable, "-m", "sealift", "serve", source, "--listen", "127.0.0.1:0"]
        process = subprocess.Popen(
            [*command, "--json", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=sealift_env(),
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, f"sealift serve did not start:\n{log.read_text()}"
        yield Served(json.loads(line))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
    assert process.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def archive_blob(archive: Path, digest: str) -> bytes:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
        assert member is not None
        return member.read()


def layout_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


# ------------------------------------------------------------------------------- docker


@pytest.mark.engine
@pytest.mark.parametrize(
    ("fixture", "extra", "name", "image_id"),
    [
        ("docker20-save-multi.tar", (), "fixture/app:1", DOCKER_APP_ID),
        ("docker26-save-multi.tar", (), "fixture/base:latest", DOCKER_BASE_ID),
        (
            "skopeo-oci-archive-gzip.tar",
            ("--repository", "fixture/app"),
            "fixture/app:app-1",
            OCI_APP_ID,
        ),
        ("docker26-buildx-provenance.tar", (), "att/app:1", PROVENANCE_IMAGE_ID),
    ],
)
def test_docker_20_pulls_the_archives_image_id(
    empty_dest_engine: DockerDaemon,
    tool_fixtures: Path,
    tmp_path: Path,
    fixture: str,
    extra: tuple[str, ...],
    name: str,
    image_id: str,
) -> None:
    with sealift_serve(tool_fixtures / fixture, *extra, log=tmp_path / "serve.log") as served:
        empty_dest_engine.docker("pull", served.ref(name))
    assert empty_dest_engine.inspect(served.ref(name))["Id"] == image_id
    assert '"GET /v2/' in (tmp_path / "serve.log").read_text()


@pytest.mark.engine
def test_a_pulled_image_runs(
    empty_dest_engine: DockerDaemon, tool_fixtures: Path, tmp_path: Path
) -> None:
    with sealift_serve(
        tool_fixtures / "docker20-save-app.tar.zst", log=tmp_path / "serve.log"
    ) as served:
        empty_dest_engine.docker("pull", served.ref("fixture/app:1"))
    assert empty_dest_engine.run(served.ref("fixture/app:1")) == "app v1\ndemo\n"


# ------------------------------------------------------------------------------- skopeo


@pytest.mark.interop
@pytest.mark.parametrize(
    "fixture", ["skopeo-oci-archive-zstd.tar", "docker26-save-multi.tar", "docker20-save-multi.tar"]
)
def test_skopeo_copies_byte_identical_manifests_and_blobs(
    skopeo: Skopeo, tool_fixtures: Path, tmp_path: Path, fixture: str
) -> None:
    archive = tool_fixtures / fixture
    copy = tmp_path / "copy"  # skopeo's dir: keeps the manifest and blobs exactly as pulled
    with sealift_serve(archive, "--repository", "fixture/app", log=tmp_path / "s.log") as served:
        name = next(iter(served.info["repositories"]))
        tag = served.info["repositories"][name][0]
        source = f"docker://{served.ref(f'{name}:{tag}')}"
        raw = skopeo.run("inspect", "--raw", "--tls-verify=false", source).stdout
        skopeo.copy(source, f"dir:{copy}", NO_TLS)
    manifest = (copy / "manifest.json").read_bytes()
    assert manifest == raw.encode()
    digest = f"sha256:{hashlib.sha256(manifest).hexdigest()}"
    if fixture != "docker20-save-multi.tar":  # legacy docker save stores no manifest
        assert manifest == archive_blob(archive, digest)
    for layer in json.loads(manifest)["layers"]:
        pulled = (copy / layer["digest"].removeprefix("sha256:")).read_bytes()
        assert pulled == archive_blob_or_layer(archive, layer)


def archive_blob_or_layer(archive: Path, layer: dict[str, Any]) -> bytes:
    """The layer bytes as the archive stores them (legacy archives keep ``<id>/layer.tar``)."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.size != layer["size"] or not member.isfile():
                continue
            data = tar.extractfile(member)
            assert data is not None
            content = data.read()
            if f"sha256:{hashlib.sha256(content).hexdigest()}" == layer["digest"]:
                return content
    raise AssertionError(f"layer {layer['digest']} not in {archive}")


@pytest.mark.interop
def test_skopeo_copies_a_multi_platform_index_with_its_attestation_as_it_is(
    skopeo: Skopeo, tool_fixtures: Path, tmp_path: Path
) -> None:
    archive = tool_fixtures / "docker26-buildx-provenance.tar"
    layout = tmp_path / "copy"
    with sealift_serve(archive, log=tmp_path / "s.log") as served:
        skopeo.copy(f"docker://{served.ref('att/app:1')}", f"oci:{layout}:all", NO_TLS, "--all")
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == PROVENANCE_INDEX
    served_index = layout_blob(layout, PROVENANCE_INDEX)
    assert served_index == archive_blob(archive, PROVENANCE_INDEX)
    for child in json.loads(served_index)["manifests"]:
        assert layout_blob(layout, child["digest"]) == archive_blob(archive, child["digest"])


@pytest.mark.interop
def test_skopeo_pulls_every_platform_of_a_layout(
    skopeo: Skopeo, tool_fixtures: Path, tmp_path: Path
) -> None:
    layout = tool_fixtures / "podman-multiplatform-oci-layout"
    copy = tmp_path / "copy"
    with sealift_serve(
        f"oci:{layout}", "--repository", "fixture/multi", log=tmp_path / "s.log"
    ) as served:
        skopeo.copy(
            f"docker://{served.ref('fixture/multi:multi-1')}", f"oci:{copy}:m", NO_TLS, "--all"
        )
    source_index = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    assert json.loads((copy / "index.json").read_text())["manifests"][0]["digest"] == source_index
    assert layout_blob(copy, source_index) == layout_blob(layout, source_index)


@pytest.mark.interop
def test_skopeo_trusts_the_tls_server_only_with_the_ca(
    skopeo: Skopeo, tool_fixtures: Path, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = make_ca_and_server_cert(certs, "127.0.0.1")
    client_certs = tmp_path / "client-certs"
    client_certs.mkdir()
    (client_certs / "ca.crt").write_bytes(ca.read_bytes())
    archive = tool_fixtures / "docker26-save-multi.tar"
    args = ("--tls-cert", str(cert), "--tls-key", str(key))
    with sealift_serve(archive, *args, log=tmp_path / "s.log") as served:
        assert served.info["url"].startswith("https://")
        source = f"docker://{served.ref('fixture/app:1')}"
        untrusted = skopeo.copy(source, f"dir:{tmp_path / 'refused'}", check=False)
        skopeo.copy(source, f"dir:{tmp_path / 'copy'}", "--src-cert-dir", client_certs)
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr
    manifest = (tmp_path / "copy" / "manifest.json").read_bytes()
    assert manifest == archive_blob(archive, f"sha256:{hashlib.sha256(manifest).hexdigest()}")


# ---------------------------------------------------------------------- containerd, podman


@pytest.mark.interop
def test_ctr_pulls_over_plain_http(
    containerd: Containerd, tool_fixtures: Path, tmp_path: Path
) -> None:
    with sealift_serve(tool_fixtures / "docker20-save-multi.tar", log=tmp_path / "s.log") as served:
        ref = served.ref("fixture/app:1")
        containerd.ctr("images", "pull", "--plain-http", "--snapshotter", "native", ref)
    assert containerd.config_digest(ref) == DOCKER_APP_ID


@pytest.mark.interop
def test_podman_pulls_without_tls_verification(
    podman: Podman, tool_fixtures: Path, tmp_path: Path
) -> None:
    with sealift_serve(tool_fixtures / "podman-oci-archive.tar", log=tmp_path / "s.log") as served:
        ref = served.ref("fixture/app:1")
        podman.run("pull", "--tls-verify=false", ref)
    assert podman.image_id(ref) == OCI_APP_ID


@pytest.mark.engine
@pytest.mark.docker26
def test_docker_26_pulls_over_tls_keeping_the_archives_manifest_digest(
    engine26: EnginePair, tool_fixtures: Path, tmp_path: Path
) -> None:
    """Docker 26 with the containerd store pulls from `sealift serve` (over TLS: its containerd
    resolver ignores insecure-registries, so plain HTTP is refused even on loopback); the image is
    named by the archive's manifest digest, because its blobs arrive as they are, and it runs."""
    engine = engine26.dest
    assert isinstance(engine, Docker26Daemon)
    engine.remove_all_images()
    archive = tmp_path / "app-zstd.tar"
    source = tool_fixtures / "docker20-save-app.tar.zst"
    run_sealift("convert", source, archive, "--compression", "zstd").assert_ok()
    report = run_sealift("inspect", "--json", archive).assert_ok().json()
    (manifest_digest,) = {row["manifest_digest"] for row in report["images"]}
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = make_ca_and_server_cert(certs, "127.0.0.1")
    args = ("--tls-cert", str(cert), "--tls-key", str(key))
    with sealift_serve(archive, *args, log=tmp_path / "serve.log") as served:
        trusted = engine.root / "etc" / "docker" / "certs.d" / served.address
        trusted.mkdir(parents=True)
        (trusted / "ca.crt").write_bytes(ca.read_bytes())
        engine.docker("pull", served.ref("fixture/app:1"))
    assert engine.inspect(served.ref("fixture/app:1"))["Id"] == manifest_digest
    assert engine.run(served.ref("fixture/app:1")) == "app v1\ndemo\n"
