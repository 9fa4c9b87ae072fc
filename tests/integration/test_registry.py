"""Pushing to and pulling from a real registry: Debian's docker-registry (distribution 2.8).

Three registries, as users meet them: plain HTTP on loopback; HTTPS with a CA the tests make
and htpasswd basic auth; and ``auth: token`` with a token issuer the tests run, so the bearer
flow passes distribution's own token validation. Blobs and manifests must arrive byte-exact
(digests equal the archive's), a repeat push sends no blob bytes, a cut upload resumes, and
the other tools (skopeo, podman, Docker 20.10, Docker 26 over TLS) read what sealift pushed and
the reverse.
"""

from __future__ import annotations

import base64
import io
import json
import random
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sealift.ends.archive import ArchiveSink, ArchiveSource
from sealift.ends.base import Source, WriteResult
from sealift.ends.layout import LayoutSource
from sealift.ends.memory import MemorySource, image_from_layers
from sealift.ends.registry import RegistryOptions, RegistrySink, RegistrySource
from sealift.formats.write import target_descriptor
from sealift.model import Entry
from sealift.reference import Reference
from sealift.registry.errors import (
    AccessDeniedError,
    BadCredentialsError,
    CertificateError,
    ManifestUnknownError,
    NoCredentialsError,
)
from sealift.transfer import CopyOptions, Selection, copy
from tests.support.cli import run_sealift, sealift_env
from tests.support.docker26 import Docker26Daemon
from tests.support.dockerd import DockerDaemon
from tests.support.engines import EnginePair
from tests.support.fixtures import OCI_APP_ID, OCI_BASE_ID
from tests.support.peers import Podman, Registry, Skopeo
from tests.support.registry import CuttingProxy, SlowRelay
from tests.support.require import require_tools
from tests.support.service import running

pytestmark = pytest.mark.registry

TOOLS = Path(__file__).resolve().parents[2].parent / "shared/fixtures/tools"
KEEP = CopyOptions(compression=None)
MiB = 1024 * 1024
PROVENANCE_INDEX = "sha256:b26fa8b8d20a574584f4319214da467281cf7df4827148356434207feeb4429b"
PROVENANCE_IDS = {
    "sha256:3f339950253b04fd8d891b48d76567991702a4f91d46a9ef4d72b846b6767371",
    "sha256:6efe21eb3322c8cbcad21ed03d3f416fca767aeae35460a2850a1ee3bb67026c",
}


def fixture(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        pytest.skip(f"shared fixture {path} not found")
    return path


def digests(source: Source, options: CopyOptions = KEEP) -> dict[str, str]:
    """Each tag's (or ref name's) manifest or index digest as the source holds it."""
    found = {}
    for entry in options.selection.apply(source.entries()):
        names = [t.familiar for t in entry.tags] or list(entry.ref_names)
        for name in names:
            found[name] = str(target_descriptor(entry.target).digest)
    return found


def push(source: Source, destination: str, **options: object) -> WriteResult:
    return copy(source, RegistrySink(destination, RegistryOptions(**options)), KEEP)  # type: ignore[arg-type]


def pushed_digests(result: WriteResult) -> dict[str, str]:
    images = result.details["images"]
    assert isinstance(images, list)
    return {item["name"]: item["digest"] for item in images}


def skopeo_inspect(skopeo: Skopeo, ref: str, *extra: str) -> dict[str, Any]:
    """``skopeo inspect`` of a plain-HTTP loopback registry."""
    result: dict[str, Any] = json.loads(
        skopeo.run("inspect", "--tls-verify=false", *extra, ref).stdout
    )
    return result


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require_tools("docker-registry")
    yield from running(Registry(tmp_path_factory.mktemp("registry-tls"), "basic-tls"))


@pytest.fixture(scope="module")
def open_tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """HTTPS with the tests' CA and no login: what an engine can pull from without one."""
    require_tools("docker-registry")
    yield from running(Registry(tmp_path_factory.mktemp("registry-open-tls"), "tls"))


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require_tools("docker-registry")
    registry = Registry(tmp_path_factory.mktemp("registry-token"), "token", denied=["locked/app"])
    yield from running(registry)


@pytest.fixture
def docker_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty docker config dir and containers auth file for this test, nothing else."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    (tmp_path / "docker").mkdir()
    return tmp_path / "docker" / "config.json"


def write_auths(path: Path, host: str, user: str, password: str) -> None:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))


# ------------------------------------------------------------------------------- plain HTTP
def test_push_keeps_every_manifest_digest_and_pull_gets_them_back(
    registry: Registry, tmp_path: Path
) -> None:
    archive = fixture("docker26-save-multi.tar")
    expected = digests(ArchiveSource(archive))
    result = push(ArchiveSource(archive), f"docker://{registry.address}/")
    assert pushed_digests(result) == {
        f"{registry.address}/{name}": digest for name, digest in expected.items()
    }
    pulled = tmp_path / "pulled.tar"
    copy(RegistrySource(f"docker://{registry.address}/fixture/app:1"), ArchiveSink(pulled), KEEP)
    assert digests(ArchiveSource(pulled)) == {
        f"{registry.address}/fixture/app:1": expected["fixture/app:1"]
    }


@pytest.mark.interop
def test_an_attestation_travels_with_its_index(registry: Registry, skopeo: Skopeo) -> None:
    """BuildKit's provenance manifest (a non-tar in-toto layer) is pulled and pushed as it is."""
    archive = fixture("docker26-buildx-provenance.tar")
    ref = f"{registry.address}/att/by-skopeo:1"
    skopeo.copy(f"oci-archive:{archive}", f"docker://{ref}", "--all", "--dest-tls-verify=false")
    result = copy(
        RegistrySource(f"docker://{ref}"),
        RegistrySink(f"docker://{registry.address}/att/by-sealift:1"),
        KEEP,
    )
    assert pushed_digests(result) == {f"{registry.address}/att/by-sealift:1": PROVENANCE_INDEX}
    (entry,) = RegistrySource(f"docker://{registry.address}/att/by-sealift:1").entries()
    assert {str(image.id) for image in entry.images()} == PROVENANCE_IDS


def test_repeat_push_sends_no_blob_bytes(registry: Registry) -> None:
    archive = fixture("skopeo-oci-archive-gzip.tar")
    first = push(ArchiveSource(archive), f"docker://{registry.address}/repeat/app:1")
    again = push(ArchiveSource(archive), f"docker://{registry.address}/repeat/app:1")
    assert first.bytes_sent > 0
    assert again.bytes_sent == 0
    assert again.details["blobs_sent"] == 0
    assert again.details["blobs_skipped"] == first.details["blobs_sent"]


def test_second_repository_mounts_blobs_instead_of_uploading(registry: Registry) -> None:
    (entry,) = ArchiveSource(fixture("skopeo-oci-archive-zstd.tar")).entries()
    names = (Reference.parse("mount/one:1"), Reference.parse("mount/two:1"))
    result = push(MemorySource([Entry(entry.target, names)]), f"docker://{registry.address}/")
    assert result.details["blobs_sent"] == 4  # 3 layers and the config, once
    assert result.details["blobs_mounted"] == 4
    assert len(pushed_digests(result)) == 2


@pytest.mark.interop
def test_zstd_layers_stay_zstd_and_skopeo_reads_them(registry: Registry, skopeo: Skopeo) -> None:
    archive = fixture("skopeo-oci-archive-zstd.tar")
    (expected,) = digests(ArchiveSource(archive)).values()
    push(ArchiveSource(archive), f"docker://{registry.address}/zstd/app:1")
    ref = f"docker://{registry.address}/zstd/app:1"
    raw = skopeo_inspect(skopeo, ref, "--raw")
    assert {layer["mediaType"] for layer in raw["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    }
    assert skopeo_inspect(skopeo, ref)["Digest"] == expected
    assert skopeo.copy_config_digest(ref, "--src-tls-verify=false") == OCI_APP_ID


@pytest.mark.interop
def test_podman_pulls_what_sealift_pushed(registry: Registry, podman: Podman) -> None:
    archive = fixture("skopeo-oci-archive-zstd.tar")
    push(ArchiveSource(archive), f"docker://{registry.address}/for-podman/app:1")
    podman.run("pull", "--tls-verify=false", f"{registry.address}/for-podman/app:1")
    assert podman.image_id(f"{registry.address}/for-podman/app:1") == OCI_APP_ID


@pytest.mark.interop
def test_sealift_pulls_what_skopeo_pushed(
    registry: Registry, skopeo: Skopeo, tmp_path: Path
) -> None:
    archive = fixture("skopeo-oci-archive-gzip.tar")
    ref = f"{registry.address}/by-skopeo/app:1"
    skopeo.copy(f"oci-archive:{archive}", f"docker://{ref}", "--dest-tls-verify=false")
    pushed = skopeo_inspect(skopeo, f"docker://{ref}")["Digest"]
    pulled = tmp_path / "pulled.tar"
    copy(RegistrySource(f"docker://{ref}"), ArchiveSink(pulled), KEEP)
    assert digests(ArchiveSource(pulled)) == {ref: pushed}
    (image,) = [i for e in ArchiveSource(pulled).entries() for i in e.images()]
    assert str(image.id) == OCI_APP_ID


def test_pull_picks_a_platform_from_an_index(registry: Registry, tmp_path: Path) -> None:
    layout = fixture("podman-multiplatform-oci-layout")
    push(LayoutSource(layout), f"docker://{registry.address}/multi/app:1")
    pulled = tmp_path / "arm64.tar"
    options = CopyOptions(compression=None, selection=Selection(platform="linux/arm64"))
    copy(RegistrySource(f"docker://{registry.address}/multi/app:1"), ArchiveSink(pulled), options)
    (image,) = [i for e in ArchiveSource(pulled).entries() for i in e.images()]
    assert str(image.id) == OCI_BASE_ID


def test_unknown_tag_is_one_clear_error(registry: Registry) -> None:
    with pytest.raises(ManifestUnknownError, match=r"nothing/here:1 not found on registry"):
        RegistrySource(f"docker://{registry.address}/nothing/here:1").entries()


@pytest.mark.engine
def test_docker_20_pulls_a_gzip_image_sealift_pushed(
    registry: Registry, empty_dest_engine: DockerDaemon
) -> None:
    archive = fixture("docker20-save-multi.tar")
    gzip = CopyOptions(compression="gzip", selection=Selection(tags=("fixture/app:1",)))
    sink = RegistrySink(f"docker://{registry.address}/gzip/app:1")
    copy(ArchiveSource(archive), sink, gzip)
    empty_dest_engine.docker("pull", f"{registry.address}/gzip/app:1")
    image = empty_dest_engine.inspect(f"{registry.address}/gzip/app:1")
    assert image["Id"] == "sha256:8abab36f1a39cc694e1d7d1a64f83d3afa533724c2312bbd483d16956bca7b5c"


@pytest.mark.engine
@pytest.mark.docker26
def test_docker_26_pulls_zstd_blobs_sealift_pushed_and_sealift_pulls_them_into_it(
    open_tls_registry: Registry, engine26: EnginePair, tmp_path: Path
) -> None:
    """Docker 26's containerd store ignores insecure-registries for plain HTTP, so the round
    trip is over TLS with the test CA in the engine's certs.d. Both ways the image keeps the
    archive's manifest digest: its zstd blobs arrive as they are."""
    engine, ca = engine26.dest, open_tls_registry.ca_file
    assert isinstance(engine, Docker26Daemon) and ca is not None
    engine.remove_all_images()
    archive = tmp_path / "app-zstd.tar"
    source = fixture("docker20-save-app.tar.zst")
    run_sealift("convert", source, archive, "--compression", "zstd").assert_ok()
    report = run_sealift("inspect", "--json", archive).assert_ok().json()
    (manifest_digest,) = {row["manifest_digest"] for row in report["images"]}
    trusted = engine.root / "etc" / "docker" / "certs.d" / open_tls_registry.address
    trusted.mkdir(parents=True, exist_ok=True)
    (trusted / "ca.crt").write_bytes(ca.read_bytes())
    ref = f"{open_tls_registry.address}/d26/app:1"

    pushed = run_sealift("copy", archive, f"docker://{ref}", "--ca-cert", ca, "--json")
    assert pushed.assert_ok().json()["details"]["images"] == [
        {"name": ref, "digest": manifest_digest}
    ]
    engine.docker("pull", ref)
    assert engine.inspect(ref)["Id"] == manifest_digest
    assert engine.run(ref) == "app v1\ndemo\n"

    engine.remove_all_images()
    into_engine = ("--ca-cert", ca, "--dest-daemon-host", engine.host)
    run_sealift("copy", f"docker://{ref}", "docker-daemon:", *into_engine).assert_ok()
    assert engine.inspect(ref)["Id"] == manifest_digest
    assert engine.run(ref) == "app v1\ndemo\n"


# ----------------------------------------------------------------------------- cut uploads
def big_image(size: int, tag: str) -> MemorySource:
    """One image with a layer of ``size`` random (incompressible) bytes."""
    payload = random.Random(size).randbytes(size)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("payload.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return MemorySource([image_from_layers([out.getvalue()], (tag,))])


def layer_size(source: MemorySource) -> int:
    return source.stored[0].target.layers[0].size  # type: ignore[union-attr]


def test_cut_upload_resumes_where_the_registry_stands(registry: Registry) -> None:
    source = big_image(6 * MiB, "cut/resume:1")
    size = layer_size(source)
    with CuttingProxy(registry.port, cut_at=int(3.5 * MiB), swallow=True) as proxy:
        result = push(
            source,
            f"docker://{proxy.address}/cut/resume:1",
            chunk_size=MiB,
            monolithic_limit=MiB,
            backoff=0.01,
        )
    assert proxy.cuts == 1
    assert result.details["uploads_resumed"] == 1
    assert result.details["uploads_restarted"] == 0
    # the swallowed fourth MiB went twice; a restart would have sent all six again
    assert proxy.received == size + MiB
    assert proxy.forwarded == size
    (digest,) = digests(source).values()
    pulled = RegistrySource(f"docker://{registry.address}/cut/resume:1").entries()
    assert str(target_descriptor(pulled[0].target).digest) == digest


def test_cut_upload_restarts_where_the_registry_gave_the_session_up(registry: Registry) -> None:
    source = big_image(5 * MiB, "cut/restart:1")
    size = layer_size(source)
    with CuttingProxy(registry.port, cut_at=2 * MiB, swallow=False) as proxy:
        result = push(source, f"docker://{proxy.address}/cut/restart:1", backoff=0.01)
    assert proxy.cuts == 1
    assert result.details["uploads_restarted"] == 1
    assert proxy.received == 2 * MiB + size
    layer = RegistrySource(f"docker://{registry.address}/cut/restart:1").entries()[0]
    for image in layer.images():
        for blob in image.layers:
            with blob.open() as stream:
                assert len(stream.read()) == size


# ------------------------------------------------------------------------ basic auth + TLS
def test_basic_auth_over_tls_with_the_ca_named(tls_registry: Registry, docker_login: Path) -> None:
    assert tls_registry.ca_file is not None
    write_auths(docker_login, tls_registry.address, tls_registry.user, tls_registry.password)
    archive = fixture("skopeo-oci-archive-gzip.tar")
    (expected,) = digests(ArchiveSource(archive)).values()
    result = push(
        ArchiveSource(archive),
        f"docker://{tls_registry.address}/tls/app:1",
        ca_cert=tls_registry.ca_file,
    )
    assert pushed_digests(result) == {f"{tls_registry.address}/tls/app:1": expected}


def test_certs_d_directory_is_trusted(
    tls_registry: Registry, docker_login: Path, tmp_path: Path
) -> None:
    assert tls_registry.ca_file is not None
    write_auths(docker_login, tls_registry.address, tls_registry.user, tls_registry.password)
    host_dir = tmp_path / "certs.d" / tls_registry.address
    host_dir.mkdir(parents=True)
    (host_dir / "ca.crt").write_bytes(tls_registry.ca_file.read_bytes())
    target = f"docker://{tls_registry.address}/tls/certs-d:1"
    push(
        ArchiveSource(fixture("skopeo-oci-archive-gzip.tar")), target, ca_cert=tls_registry.ca_file
    )
    source = RegistrySource(target, RegistryOptions(certs_dirs=(tmp_path / "certs.d",)))
    assert len(source.entries()) == 1


def test_insecure_skips_the_certificate_check(tls_registry: Registry, docker_login: Path) -> None:
    write_auths(docker_login, tls_registry.address, tls_registry.user, tls_registry.password)
    target = f"docker://{tls_registry.address}/tls/insecure:1"
    push(ArchiveSource(fixture("skopeo-oci-archive-gzip.tar")), target, insecure=True)
    assert len(RegistrySource(target, RegistryOptions(insecure=True)).entries()) == 1


def test_untrusted_certificate_is_one_clear_error(
    tls_registry: Registry, docker_login: Path
) -> None:
    write_auths(docker_login, tls_registry.address, tls_registry.user, tls_registry.password)
    with pytest.raises(CertificateError, match=r"not trusted.*--ca-cert"):
        RegistrySource(f"docker://{tls_registry.address}/tls/app:1").entries()


def test_missing_and_wrong_logins_are_told_apart(
    tls_registry: Registry, docker_login: Path
) -> None:
    options = RegistryOptions(ca_cert=tls_registry.ca_file)
    target = f"docker://{tls_registry.address}/tls/app:1"
    with pytest.raises(NoCredentialsError, match="wants a login"):
        RegistrySource(target, options).entries()
    write_auths(docker_login, tls_registry.address, tls_registry.user, "wrong")
    with pytest.raises(BadCredentialsError, match="refused the login of user 'sealift'"):
        RegistrySource(target, options).entries()


# ---------------------------------------------------------------------------- bearer tokens
def test_token_flow_pushes_and_mounts_with_scoped_tokens(
    token_registry: Registry, tmp_path: Path, docker_login: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth_file = tmp_path / "auth.json"
    write_auths(auth_file, token_registry.address, token_registry.user, token_registry.password)
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    (entry,) = ArchiveSource(fixture("skopeo-oci-archive-gzip.tar")).entries()
    expected = str(target_descriptor(entry.target).digest)
    names = (Reference.parse("team/one:1"), Reference.parse("team/two:1"))
    result = push(MemorySource([Entry(entry.target, names)]), f"docker://{token_registry.address}/")
    assert pushed_digests(result) == {
        f"{token_registry.address}/team/one:1": expected,
        f"{token_registry.address}/team/two:1": expected,
    }
    assert result.details["blobs_mounted"] == 4
    granted = [access for _, grants in token_registry.issuer.issued for access in grants]
    assert {"type": "repository", "name": "team/two", "actions": ["pull", "push"]} in granted
    assert {"type": "repository", "name": "team/one", "actions": ["pull"]} in granted


def test_expired_token_is_refreshed(token_registry: Registry, docker_login: Path) -> None:
    write_auths(docker_login, token_registry.address, token_registry.user, token_registry.password)
    push(
        ArchiveSource(fixture("skopeo-oci-archive-gzip.tar")),
        f"docker://{token_registry.address}/team/refresh:1",
    )
    token_registry.issuer.expire_next = 1
    entries = RegistrySource(f"docker://{token_registry.address}/team/refresh:1").entries()
    assert len(entries) == 1


def test_denied_scope_and_missing_login_are_one_clear_error_each(
    token_registry: Registry, docker_login: Path
) -> None:
    archive = fixture("skopeo-oci-archive-gzip.tar")
    with pytest.raises(NoCredentialsError, match="wants a login"):
        push(ArchiveSource(archive), f"docker://{token_registry.address}/team/anon:1")
    write_auths(docker_login, token_registry.address, token_registry.user, token_registry.password)
    with pytest.raises(AccessDeniedError, match="denied repository:locked/app:pull,push"):
        push(ArchiveSource(archive), f"docker://{token_registry.address}/locked/app:1")
    write_auths(docker_login, token_registry.address, token_registry.user, "wrong")
    with pytest.raises(BadCredentialsError):
        push(ArchiveSource(archive), f"docker://{token_registry.address}/team/bad:1")


# ------------------------------------------------------------------------------------ the CLI
def test_cli_copy_to_a_registry_and_back_prints_digests(registry: Registry, tmp_path: Path) -> None:
    archive = fixture("skopeo-oci-archive-zstd.tar")
    (expected,) = digests(ArchiveSource(archive)).values()
    target = f"docker://{registry.address}/cli/app:1"
    first = run_sealift("copy", archive, target, "--json", "--chunk-size", "256KiB").assert_ok()
    (image,) = first.json()["details"]["images"]
    assert image == {"name": f"{registry.address}/cli/app:1", "digest": expected}
    again = run_sealift("copy", archive, target, "--json").assert_ok().json()
    assert again["bytes_sent"] == 0 and again["details"]["blobs_skipped"] == 4
    pulled = tmp_path / "pulled.tar"
    run_sealift("copy", target, pulled).assert_ok()
    assert digests(ArchiveSource(pulled)) == {f"{registry.address}/cli/app:1": expected}


def test_cli_registry_errors_are_one_line(
    registry: Registry, tls_registry: Registry, tmp_path: Path
) -> None:
    unknown = run_sealift("copy", f"docker://{registry.address}/nothing/here:1", tmp_path / "x")
    assert "not found on registry" in unknown.assert_one_line_error()
    untrusted = run_sealift("copy", f"docker://{tls_registry.address}/tls/app:1", tmp_path / "y")
    assert "--ca-cert" in untrusted.assert_one_line_error()
    no_host = run_sealift("copy", "docker://team/api:1", tmp_path / "z")
    assert "not a registry host" in no_host.assert_one_line_error(code=2)


def test_bootstrap_a_registry_from_sealift_serve(registry: Registry, tmp_path: Path) -> None:
    """The air-gapped recipe: serve the bundle, copy everything it serves into the registry."""
    from tests.integration.test_serve import sealift_serve

    archive = fixture("docker26-save-multi.tar")
    expected = digests(ArchiveSource(archive))
    with sealift_serve(archive, log=tmp_path / "serve.log") as served:
        source, target = f"docker://{served.address}/", f"docker://{registry.address}/"
        result = run_sealift("copy", source, target, "--json").assert_ok().json()
    assert {item["name"]: item["digest"] for item in result["details"]["images"]} == {
        f"{registry.address}/{name}": digest for name, digest in expected.items()
    }


# --------------------------------------------------------------------------- parallel pulls
def wide_image(tag: str, *sizes: int) -> MemorySource:
    """One image whose layers hold ``sizes`` random (incompressible) bytes each, its own."""
    layers = []
    for seed, size in enumerate(sizes):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
            info = tarfile.TarInfo(f"payload-{seed}.bin")
            info.size = size
            tar.addfile(info, io.BytesIO(random.Random(f"{tag} {seed}").randbytes(size)))
        layers.append(out.getvalue())
    return MemorySource([image_from_layers(layers, (tag,))])


def blob_path(registry: Registry, digest: str) -> Path:
    """Where distribution's filesystem storage keeps a blob's bytes."""
    hex_digest = digest.removeprefix("sha256:")
    return (
        registry.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    )


def layer_blobs(source: MemorySource) -> dict[str, bytes]:
    found = {}
    for entry in source.stored:
        for image in entry.images():
            for layer in image.layers:
                with layer.open() as stream:
                    found[str(layer.digest)] = stream.read()
    return found


def test_a_parallel_pull_fills_a_layout_and_an_archive_byte_exact(
    registry: Registry, tmp_path: Path, spool: Path
) -> None:
    source = wide_image("wide/app:1", 3 * MiB, 2 * MiB, MiB, 512 * 1024, 64 * 1024)
    (expected,) = digests(source).values()
    push(source, f"docker://{registry.address}/wide/app:1")
    ref = f"docker://{registry.address}/wide/app:1"
    layout, archive = tmp_path / "layout", tmp_path / "pulled.tar"
    run_sealift("copy", ref, f"oci:{layout}", "--parallel", "4", "-q").assert_ok()
    run_sealift("copy", ref, archive, "--parallel", "3", "-q").assert_ok()
    wanted = layer_blobs(source)
    for digest, data in wanted.items():
        assert (layout / "blobs" / digest.replace(":", "/")).read_bytes() == data
    assert digests(LayoutSource(layout)) == {f"{registry.address}/wide/app:1": expected}
    assert digests(ArchiveSource(archive)) == {f"{registry.address}/wide/app:1": expected}
    assert ArchiveSource(archive).entries()  # and it reads back whole
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize("destination", ["layout", "archive"])
def test_a_blob_the_registry_corrupted_is_refused_with_nothing_left_behind(
    registry: Registry, tmp_path: Path, spool: Path, destination: str
) -> None:
    tag = f"rot/{destination}:1"
    source = wide_image(tag, 2 * MiB, MiB, 256 * 1024)
    push(source, f"docker://{registry.address}/{tag}")
    bad = sorted(layer_blobs(source))[0]
    stored = blob_path(registry, bad)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    target = f"oci:{out / 'layout'}" if destination == "layout" else str(out / "pulled.tar")
    result = run_sealift("copy", f"docker://{registry.address}/{tag}", target, "--parallel", "4")
    assert f"expected {bad}" in result.assert_one_line_error()
    assert list(out.iterdir()) == []
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize(
    ("stop", "destination"),
    [(signal.SIGINT, "layout"), (signal.SIGTERM, "archive")],
    ids=["SIGINT-layout", "SIGTERM-archive"],
)
def test_a_pull_stopped_midway_leaves_no_half_files(
    registry: Registry, tmp_path: Path, spool: Path, stop: signal.Signals, destination: str
) -> None:
    tag = f"stop/{destination}:1"
    source = wide_image(tag, 3 * MiB, 3 * MiB, 2 * MiB)
    push(source, f"docker://{registry.address}/{tag}")
    out = tmp_path / "out"
    out.mkdir()
    target = f"oci:{out / 'layout'}" if destination == "layout" else str(out / "pulled.tar")
    with SlowRelay(registry.port, rate=2 * MiB) as relay:
        process = subprocess.Popen(
            [sys.executable, "-m", "sealift", "copy", f"docker://{relay.address}/{tag}", target],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**sealift_env(None), "SEALIFT_TMPDIR": str(spool)},
        )
        try:
            deadline = time.monotonic() + 60
            while relay.relayed < 2 * MiB:  # layers are arriving
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            process.send_signal(stop)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 128 + stop, stderr.decode()
    assert b"Traceback" not in stderr
    assert list(out.iterdir()) == []
    assert list(spool.iterdir()) == []
