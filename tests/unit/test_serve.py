"""`sealift serve` in process: the distribution read API over archives and layouts made in code.

A real server on 127.0.0.1 (port 0) in a thread, asked with http.client: status codes, headers,
exact bytes, Range, HEAD, error bodies, pagination, 405 for writes, and what happens when the
archive changes under a running server. Real clients (docker, skopeo, ctr, podman) are in
tests/integration/test_serve.py.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealift.digest import sha256_of
from sealift.ends.archive import ArchiveSink, ArchiveSource
from sealift.ends.base import Source
from sealift.ends.layout import LayoutSink
from sealift.errors import DigestMismatchError, UsageError
from sealift.samples import SampleImage, SampleLayer, binary_blob, demo_images, write_docker_save
from sealift.serving import (
    Content,
    ListenAddress,
    RegistryServer,
    ServedBlob,
    exposure_warning,
    is_loopback,
    open_served_source,
    verify_blobs,
)
from sealift.serving.api import RangeNotSatisfiableError, parse_range
from sealift.transfer import CopyOptions, copy
from tests.support.cli import run_sealift, sealift_env
from tests.support.tls import make_ca_and_server_cert

pytestmark = pytest.mark.timeout(120)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def error_code(self) -> str:
        return str(json.loads(self.body)["errors"][0]["code"])


@contextmanager
def serving(
    content: Content, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> Iterator[RegistryServer]:
    server = RegistryServer(ListenAddress(host, 0), content, tls=tls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def ask(
    server: RegistryServer, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> Response:
    connection = http.client.HTTPConnection(server.bound.host, server.bound.port, timeout=20)
    try:
        connection.request(method, path, headers=headers or {})
        reply = connection.getresponse()
        return Response(reply.status, dict(reply.getheaders()), reply.read())
    finally:
        connection.close()


_OPENED: list[Source] = []


@pytest.fixture(autouse=True, scope="module")
def _close_sources() -> Iterator[None]:
    yield
    while _OPENED:
        _OPENED.pop().close()


def content_of(spec: str | Path, repository: str | None = None, *, verify: bool = True) -> Content:
    """What ``sealift serve SPEC`` serves; its source stays open until the module ends."""
    source = open_served_source(str(spec))
    _OPENED.append(source)
    content = Content.from_entries(source.entries(), repository)
    if verify:
        verify_blobs(content.blobs_to_verify(), lambda _: None)
    return content


def tar_member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


@pytest.fixture(scope="module")
def docker_save(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Legacy docker save (no manifests stored) of the demo stack, plus Docker Hub names."""
    images = [
        *demo_images(),
        SampleImage(("nginx:1.27", "docker.io/library/nginx:latest"), (demo_layer(),)),
    ]
    path = tmp_path_factory.mktemp("serve") / "docker-save.tar"
    with path.open("wb") as out:
        write_docker_save(images, out)
    return path


def demo_layer() -> SampleLayer:
    return SampleLayer({"usr/sbin/nginx": binary_blob(7, 300_000)})


@pytest.fixture(scope="module")
def oci_archive(docker_save: Path) -> Path:
    """sealift's own archive (OCI layout + manifest.json) with gzip layers."""
    path = docker_save.with_name("gzip.tar")
    copy(ArchiveSource(docker_save), ArchiveSink(path), CopyOptions("gzip"))
    return path


@pytest.fixture(scope="module")
def oci_server(oci_archive: Path) -> Iterator[RegistryServer]:
    with serving(content_of(oci_archive)) as server:
        yield server


def manifest_digest(archive: Path, tag: str) -> str:
    index = json.loads(tar_member(archive, "index.json"))
    for descriptor in index["manifests"]:
        if descriptor["annotations"]["io.containerd.image.name"] == tag:
            return str(descriptor["digest"])
    raise AssertionError(f"{tag} not in {archive}")


def layer_digests(raw_manifest: bytes) -> list[str]:
    return [layer["digest"] for layer in json.loads(raw_manifest)["layers"]]


# ----------------------------------------------------------------------------------- base


def test_base_endpoint_answers_with_the_api_version(oci_server: RegistryServer) -> None:
    reply = ask(oci_server, "/v2/")
    assert reply.status == 200
    assert reply.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert json.loads(reply.body) == {}


# ------------------------------------------------------------------------------ manifests


def test_manifest_by_tag_is_the_archives_bytes_with_its_media_type_and_digest(
    oci_server: RegistryServer, oci_archive: Path
) -> None:
    digest = manifest_digest(oci_archive, "docker.io/sample/app:1.0")
    stored = tar_member(oci_archive, f"blobs/sha256/{digest.removeprefix('sha256:')}")
    reply = ask(oci_server, "/v2/sample/app/manifests/1.0")
    assert reply.status == 200
    assert reply.body == stored
    assert reply.headers["Content-Type"] == OCI_MANIFEST
    assert reply.headers["Docker-Content-Digest"] == digest
    assert reply.headers["Content-Length"] == str(len(stored))


def test_head_of_a_manifest_gives_the_headers_of_get_and_no_body(
    oci_server: RegistryServer,
) -> None:
    got = ask(oci_server, "/v2/sample/base/manifests/1")
    head = ask(oci_server, "/v2/sample/base/manifests/1", "HEAD")
    assert head.status == 200
    assert head.body == b""
    for name in ("Content-Type", "Content-Length", "Docker-Content-Digest"):
        assert head.headers[name] == got.headers[name]


def test_manifest_by_digest_is_found_under_any_repository_name(
    oci_server: RegistryServer, oci_archive: Path
) -> None:
    digest = manifest_digest(oci_archive, "docker.io/sample/base:1")
    by_tag = ask(oci_server, "/v2/sample/base/manifests/1")
    assert ask(oci_server, f"/v2/sample/base/manifests/{digest}").body == by_tag.body
    assert ask(oci_server, f"/v2/other/name/manifests/{digest}").body == by_tag.body


def test_docker_hub_official_images_are_served_with_and_without_library(
    oci_server: RegistryServer,
) -> None:
    short = ask(oci_server, "/v2/nginx/manifests/1.27")
    full = ask(oci_server, "/v2/library/nginx/manifests/latest")
    assert short.status == full.status == 200
    assert short.body == full.body


def test_unknown_tag_unknown_repository_and_bad_references_get_spec_errors(
    oci_server: RegistryServer,
) -> None:
    unknown_tag = ask(oci_server, "/v2/sample/app/manifests/9.9")
    assert (unknown_tag.status, unknown_tag.error_code()) == (404, "MANIFEST_UNKNOWN")
    unknown_name = ask(oci_server, "/v2/no/such/manifests/1")
    assert (unknown_name.status, unknown_name.error_code()) == (404, "NAME_UNKNOWN")
    unknown_digest = ask(oci_server, f"/v2/sample/app/manifests/sha256:{'0' * 64}")
    assert (unknown_digest.status, unknown_digest.error_code()) == (404, "MANIFEST_UNKNOWN")
    bad_digest = ask(oci_server, "/v2/sample/app/manifests/sha256:xyz")
    assert (bad_digest.status, bad_digest.error_code()) == (400, "DIGEST_INVALID")
    assert unknown_tag.headers["Content-Type"] == "application/json"


def test_legacy_docker_save_images_get_the_manifest_sealift_convert_writes(
    docker_save: Path, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    copy(ArchiveSource(docker_save), LayoutSink(layout), CopyOptions(None))
    index = json.loads((layout / "index.json").read_text())
    expected = next(
        d["digest"]
        for d in index["manifests"]
        if d["annotations"]["io.containerd.image.name"] == "docker.io/sample/app:1.1"
    )
    with serving(content_of(docker_save)) as server:
        reply = ask(server, "/v2/sample/app/manifests/1.1")
    assert reply.headers["Docker-Content-Digest"] == expected
    assert sha256_of(reply.body) == sha256_of((layout / "blobs/sha256" / expected[7:]).read_bytes())


# ---------------------------------------------------------------------------------- blobs


def test_every_blob_a_manifest_names_is_served_whole_and_exact(
    oci_server: RegistryServer, oci_archive: Path
) -> None:
    manifest = ask(oci_server, "/v2/sample/app/manifests/1.1").body
    document = json.loads(manifest)
    for descriptor in [document["config"], *document["layers"]]:
        reply = ask(oci_server, f"/v2/sample/app/blobs/{descriptor['digest']}")
        assert reply.status == 200
        assert str(sha256_of(reply.body)) == descriptor["digest"]
        assert len(reply.body) == descriptor["size"]
        assert reply.headers["Docker-Content-Digest"] == descriptor["digest"]
        stored = tar_member(oci_archive, f"blobs/sha256/{descriptor['digest'][7:]}")
        assert reply.body == stored


def test_head_of_a_blob_gives_its_length_and_digest_and_no_body(
    oci_server: RegistryServer,
) -> None:
    layer = layer_digests(ask(oci_server, "/v2/sample/base/manifests/1").body)[0]
    whole = ask(oci_server, f"/v2/sample/base/blobs/{layer}")
    head = ask(oci_server, f"/v2/sample/base/blobs/{layer}", "HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["Content-Length"] == str(len(whole.body))
    assert head.headers["Docker-Content-Digest"] == layer
    assert head.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [("bytes=10-19", 10, 20), ("bytes=1000-", 1000, None), ("bytes=-7", -7, None)],
)
def test_a_range_request_gets_206_with_exactly_those_bytes(
    oci_server: RegistryServer, header: str, start: int, stop: int | None
) -> None:
    layer = layer_digests(ask(oci_server, "/v2/sample/base/manifests/1").body)[0]
    whole = ask(oci_server, f"/v2/sample/base/blobs/{layer}").body
    reply = ask(oci_server, f"/v2/sample/base/blobs/{layer}", headers={"Range": header})
    expected = whole[start:stop]
    first = start if start >= 0 else len(whole) + start
    assert reply.status == 206
    assert reply.body == expected
    assert reply.headers["Content-Range"] == (
        f"bytes {first}-{first + len(expected) - 1}/{len(whole)}"
    )


def test_a_range_past_the_end_gets_416_with_the_size(oci_server: RegistryServer) -> None:
    layer = layer_digests(ask(oci_server, "/v2/sample/base/manifests/1").body)[0]
    size = len(ask(oci_server, f"/v2/sample/base/blobs/{layer}").body)
    reply = ask(oci_server, f"/v2/sample/base/blobs/{layer}", headers={"Range": f"bytes={size}-"})
    assert reply.status == 416
    assert reply.headers["Content-Range"] == f"bytes */{size}"


def test_a_range_of_an_uncompressed_legacy_layer_is_read_from_the_middle_of_the_archive(
    docker_save: Path,
) -> None:
    with serving(content_of(docker_save)) as server:
        layer = layer_digests(ask(server, "/v2/sample/base/manifests/1").body)[0]
        whole = ask(server, f"/v2/x/blobs/{layer}").body
        part = ask(server, f"/v2/x/blobs/{layer}", headers={"Range": "bytes=500000-500099"})
    assert part.body == whole[500_000:500_100]


def test_many_clients_at_once_each_get_exactly_their_bytes(docker_save: Path) -> None:
    with serving(content_of(docker_save)) as server:
        blobs = {str(blob.digest): read_all(blob) for blob in server.content.blobs.values()}
        jobs = [(digest, 1000 * i) for i in range(4) for digest in blobs]

        def fetch(job: tuple[str, int]) -> bool:
            digest, offset = job
            expected = blobs[digest]
            whole = ask(server, f"/v2/x/blobs/{digest}")
            part = ask(server, f"/v2/x/blobs/{digest}", headers={"Range": f"bytes={offset}-"})
            if offset >= len(expected):
                return whole.body == expected and part.status == 416
            return whole.body == expected and part.body == expected[offset:]

        with ThreadPoolExecutor(max_workers=12) as pool:
            assert all(pool.map(fetch, jobs))


def read_all(blob: ServedBlob) -> bytes:
    with blob.open() as stream:
        return stream.read()


def test_unknown_and_malformed_blob_digests_get_spec_errors(oci_server: RegistryServer) -> None:
    unknown = ask(oci_server, f"/v2/sample/app/blobs/sha256:{'1' * 64}")
    assert (unknown.status, unknown.error_code()) == (404, "BLOB_UNKNOWN")
    malformed = ask(oci_server, "/v2/sample/app/blobs/latest")
    assert (malformed.status, malformed.error_code()) == (400, "DIGEST_INVALID")


@given(size=st.integers(1, 10_000), first=st.integers(0, 12_000), span=st.integers(0, 12_000))
def test_parsed_ranges_stay_inside_the_blob(size: int, first: int, span: int) -> None:
    try:
        parsed = parse_range(f"bytes={first}-{first + span}", size)
    except RangeNotSatisfiableError:
        assert first >= size
        return
    assert parsed == (first, min(first + span, size - 1))


def test_ranges_the_server_may_ignore_mean_the_whole_blob() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-1,4-5", 10) is None
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=-", 10) is None
    with pytest.raises(RangeNotSatisfiableError):
        parse_range("bytes=-0", 10)


# ------------------------------------------------------------------------- tags, catalog


def test_tags_list_is_sorted_and_pages_with_n_last_and_a_link(oci_server: RegistryServer) -> None:
    everything = json.loads(ask(oci_server, "/v2/sample/app/tags/list").body)
    assert everything == {"name": "sample/app", "tags": ["1.0", "1.1"]}
    first = ask(oci_server, "/v2/sample/app/tags/list?n=1")
    assert json.loads(first.body)["tags"] == ["1.0"]
    assert first.headers["Link"] == '</v2/sample/app/tags/list?n=1&last=1.0>; rel="next"'
    second = ask(oci_server, "/v2/sample/app/tags/list?n=1&last=1.0")
    assert json.loads(second.body)["tags"] == ["1.1"]
    assert "Link" not in second.headers
    missing = ask(oci_server, "/v2/nobody/tags/list")
    assert (missing.status, missing.error_code()) == (404, "NAME_UNKNOWN")
    invalid = ask(oci_server, "/v2/sample/app/tags/list?n=two")
    assert (invalid.status, invalid.error_code()) == (400, "PAGINATION_NUMBER_INVALID")


def test_catalog_lists_every_repository_name_served(oci_server: RegistryServer) -> None:
    catalog = json.loads(ask(oci_server, "/v2/_catalog").body)
    assert catalog == {"repositories": ["library/nginx", "nginx", "sample/app", "sample/base"]}
    page = ask(oci_server, "/v2/_catalog?n=2&last=nginx")
    assert json.loads(page.body) == {"repositories": ["sample/app", "sample/base"]}


# -------------------------------------------------------------------------------- writes


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_write_methods_get_405_unsupported(oci_server: RegistryServer, method: str) -> None:
    reply = ask(oci_server, "/v2/sample/app/blobs/uploads/", method)
    assert reply.status == 405
    assert reply.error_code() == "UNSUPPORTED"
    assert reply.headers["Allow"] == "GET, HEAD"


# ---------------------------------------------------------------------- what is served


def test_multi_platform_index_and_attestation_are_served_as_the_archive_holds_them(
    tool_fixtures: Path,
) -> None:
    archive = tool_fixtures / "docker26-buildx-provenance.tar"
    with serving(content_of(archive)) as server:
        index = ask(server, "/v2/att/app/manifests/1")
        assert index.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
        assert index.body == tar_member(
            archive, f"blobs/sha256/{index.headers['Docker-Content-Digest'][7:]}"
        )
        for child in json.loads(index.body)["manifests"]:
            reply = ask(server, f"/v2/att/app/manifests/{child['digest']}")
            assert reply.status == 200
            assert reply.headers["Content-Type"] == child["mediaType"]
            for layer in layer_digests(reply.body):
                assert str(sha256_of(ask(server, f"/v2/att/app/blobs/{layer}").body)) == layer


def test_untagged_images_are_served_by_digest_and_ref_names_under_repository(
    tool_fixtures: Path,
) -> None:
    layout = tool_fixtures / "skopeo-oci-layout"
    untagged = content_of(f"oci:{layout}")
    assert untagged.repositories == {}
    assert len(untagged.untagged) == 2
    with serving(untagged) as server:
        assert ask(server, f"/v2/any/manifests/{untagged.untagged[0]}").status == 200
    named = content_of(f"oci:{layout}", repository="fixture/app")
    assert sorted(named.repositories["fixture/app"]) == ["app-1", "base-1"]
    one = content_of(f"oci:{layout}:base-1", repository="fixture/app")
    assert list(one.repositories["fixture/app"]) == ["base-1"]


def test_a_tampered_archive_is_refused_before_anything_is_served(
    docker_save: Path, tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered.tar"
    tampered.write_bytes(docker_save.read_bytes())
    overwrite_inside_largest_layer(tampered)
    content = content_of(tampered, verify=False)
    with pytest.raises(DigestMismatchError):
        verify_blobs(content.blobs_to_verify(), lambda _: None)
    result = run_sealift("serve", tampered, "--listen", "127.0.0.1:0", timeout=60)
    assert "blob digest is" in result.assert_one_line_error()


def overwrite_inside_largest_layer(archive: Path) -> None:
    with tarfile.open(archive) as tar:
        largest = max(tar.getmembers(), key=lambda member: member.size)
    with archive.open("r+b") as file:
        file.seek(largest.offset_data + largest.size // 2)
        file.write(b"tampered")


def test_a_blob_changed_in_place_after_verification_is_cut_not_served(
    docker_save: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "served.tar"
    archive.write_bytes(docker_save.read_bytes())
    with serving(content_of(archive)) as server:
        layer = max(server.content.blobs.values(), key=lambda blob: blob.size).digest
        overwrite_inside_largest_layer(archive)
        with pytest.raises(http.client.IncompleteRead):
            ask(server, f"/v2/x/blobs/{layer}")


def test_an_archive_replaced_by_rename_while_served_keeps_serving_the_verified_one(
    docker_save: Path, oci_archive: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "served.tar"
    archive.write_bytes(docker_save.read_bytes())
    with serving(content_of(archive)) as server:
        layer = max(server.content.blobs.values(), key=lambda blob: blob.size).digest
        replacement = tmp_path / "new.tar"
        replacement.write_bytes(oci_archive.read_bytes())
        replacement.replace(archive)
        reply = ask(server, f"/v2/x/blobs/{layer}")
    assert sha256_of(reply.body) == layer


# -------------------------------------------------------------------------------- TLS


def test_tls_serves_to_a_client_that_trusts_the_ca(oci_archive: Path, tmp_path: Path) -> None:
    from sealift.serving import tls_context

    ca, cert, key = make_ca_and_server_cert(tmp_path, "127.0.0.1")
    with serving(content_of(oci_archive), tls=tls_context(cert, key)) as server:
        client = ssl.create_default_context(cafile=str(ca))
        connection = http.client.HTTPSConnection(
            "127.0.0.1", server.bound.port, context=client, timeout=20
        )
        connection.request("GET", "/v2/sample/base/tags/list")
        reply = connection.getresponse()
        assert json.loads(reply.read())["tags"] == ["1", "latest"]
        connection.close()
        assert server.url.startswith("https://")


# ---------------------------------------------------------------------- listen, the CLI


def test_listen_addresses_parse_like_docker_registry_addresses() -> None:
    assert ListenAddress.parse("127.0.0.1:5000") == ListenAddress("127.0.0.1", 5000)
    assert ListenAddress.parse("[::1]:5001") == ListenAddress("::1", 5001)
    assert ListenAddress.parse("5002") == ListenAddress("127.0.0.1", 5002)
    assert ListenAddress.parse("localhost") == ListenAddress("localhost", 5000)
    assert str(ListenAddress("::1", 5001)) == "[::1]:5001"
    for bad in ("127.0.0.1:http", "::1:5000", "host:99999"):
        with pytest.raises(UsageError):
            ListenAddress.parse(bad)


def test_only_loopback_addresses_count_as_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.1") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    assert not is_loopback("::")


def test_listening_beyond_loopback_without_tls_is_warned_about() -> None:
    warning = exposure_warning(ListenAddress("0.0.0.0", 5000), tls=False)
    assert warning is not None and "without TLS" in warning and "0.0.0.0:5000" in warning
    assert exposure_warning(ListenAddress("0.0.0.0", 5000), tls=True) is None
    assert exposure_warning(ListenAddress("127.0.0.1", 5000), tls=False) is None


def test_an_ipv6_loopback_address_serves(oci_archive: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with serving(content_of(oci_archive), host="::1") as server:
        assert json.loads(ask(server, "/v2/sample/base/tags/list").body)["tags"] == ["1", "latest"]
        assert server.url == f"http://[::1]:{server.bound.port}"


def test_usage_errors_exit_2_with_one_line(oci_archive: Path) -> None:
    assert "--tls-key needs --tls-cert" in run_sealift(
        "serve", oci_archive, "--tls-key", oci_archive
    ).assert_one_line_error(2)
    run_sealift("serve", oci_archive, "--listen", "1.2.3.4:x").assert_one_line_error(2)
    run_sealift("serve", oci_archive, "--repository", "Bad Name").assert_one_line_error(2)
    engine = run_sealift("serve", "docker-daemon:app:1").assert_one_line_error(2)
    assert "reads an archive or an OCI layout" in engine


def test_a_busy_port_is_one_error_line(oci_archive: Path) -> None:
    with serving(Content()) as server:
        result = run_sealift("serve", oci_archive, "--listen", str(server.bound))
    assert "cannot listen on" in result.assert_one_line_error()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_the_command_announces_logs_and_stops_cleanly_on_a_signal(
    oci_archive: Path, stop: signal.Signals
) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sealift",
            "serve",
            oci_archive,
            "--listen",
            "127.0.0.1:0",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=sealift_env(),
    )
    try:
        assert process.stdout is not None
        startup = json.loads(process.stdout.readline())
        assert startup["repositories"]["sample/app"] == ["1.0", "1.1"]
        port = startup["port"]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        connection.request("GET", "/v2/")
        assert connection.getresponse().status == 200
        connection.close()
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, stderr
    text = stderr.decode()
    assert '"GET /v2/ HTTP/1.1" 200' in text
    assert "stopped by" in text
    assert "Traceback" not in text
