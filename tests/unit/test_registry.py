"""The registry client on its own: reference parsing, logins, challenges, retries, uploads,
downloads and the sink's placement, against an in-process fake registry
(tests/support/registry_fake.py). The real distribution is in tests/integration."""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import random
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealift.digest import Digest, sha256_of
from sealift.ends.archive import ArchiveSink
from sealift.ends.layout import LayoutSink
from sealift.ends.memory import MemorySource, image_from_layers
from sealift.ends.registry import RegistryOptions, RegistrySink, RegistrySource
from sealift.errors import DigestMismatchError, SealiftError, UsageError
from sealift.model import Entry, Image
from sealift.registry.auth import parse_challenge
from sealift.registry.credentials import Credentials, find_credentials
from sealift.registry.errors import MediaTypeRefusedError, RegistryError
from sealift.registry.names import is_loopback, parse_docker_reference
from sealift.registry.options import PushTotals, parse_size
from sealift.registry.prefetch import PrefetchBlob, Prefetcher
from sealift.registry.tls import TlsOptions, allows_plain_http
from sealift.registry.transport import _parse_retry_after
from sealift.transfer import CopyOptions, copy
from tests.support.registry_fake import FakeRegistry

KEEP = CopyOptions(compression=None)
FAST = {"backoff": 0.001, "monolithic_limit": 1024}


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    with FakeRegistry() as server:
        yield server


def layer_tar(size: int, seed: int = 0) -> bytes:
    payload = bytes((seed + i * 7) % 251 for i in range(size))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(f"file-{seed}")
        info.size = size
        tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


def image(tag: str, *sizes: int) -> Entry:
    return image_from_layers([layer_tar(size, seed) for seed, size in enumerate(sizes)], (tag,))


def push(
    fake: FakeRegistry, entries: list[Entry], target: str = "", **options: object
) -> dict[str, object]:
    chosen = RegistryOptions(**{**FAST, **options})  # type: ignore[arg-type]
    sink = RegistrySink(f"docker://{fake.address}/{target}", chosen)
    return copy(MemorySource(entries), sink, KEEP).details


# ------------------------------------------------------------------------------- references
@pytest.mark.parametrize(
    ("text", "host", "repository", "tag", "digest"),
    [
        ("docker://registry.site:5000/team/api:1.2", "registry.site:5000", "team/api", "1.2", None),
        ("docker://localhost/app", "localhost", "app", "latest", None),
        ("docker://127.0.0.1:5000/", "127.0.0.1:5000", None, None, None),
        (
            "docker://[::1]:5000/a/b@sha256:" + "a" * 64,
            "[::1]:5000",
            "a/b",
            None,
            "sha256:" + "a" * 64,
        ),
        ("docker://index.docker.io/library/busybox:1", "docker.io", "library/busybox", "1", None),
    ],
)
def test_docker_references_parse(
    text: str, host: str, repository: str | None, tag: str | None, digest: str | None
) -> None:
    target = parse_docker_reference(text)
    assert target.host == host
    assert target.repository == repository
    if target.reference is not None:
        assert target.reference.tag == tag
        assert (str(target.reference.digest) if target.reference.digest else None) == digest


@pytest.mark.parametrize(
    "text",
    [
        "docker://team/api:1",  # no host: not guessed to be Docker Hub
        "docker://registry.site:5000",  # neither a slash nor an image
        "docker://registry.site:5000/Team/api",
        "docker://registry.site:5000/team/api:",
        "docker://registry.site:5000/team/api@sha256:abc",
        "docker://reg istry/x",
        "oci:/tmp/x",
    ],
)
def test_malformed_docker_references_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_docker_reference(text)


def test_plain_http_only_for_loopback_or_when_asked() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:80")
    assert not is_loopback("registry.site:5000") and not is_loopback("128.0.0.1")
    assert allows_plain_http("127.0.0.9:5000", TlsOptions())
    assert not allows_plain_http("registry.site", TlsOptions())
    assert allows_plain_http("registry.site", TlsOptions(insecure=True))


@pytest.mark.parametrize(
    ("text", "size"),
    [("5MiB", 5 * 1024**2), ("512k", 512 * 1024), ("1G", 1024**3), ("65536", 65536)],
)
def test_chunk_sizes_read_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "5 parsecs", "-1M", "1k"])
def test_bad_chunk_sizes_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


# ----------------------------------------------------------------------------------- logins
@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    (tmp_path / ".docker").mkdir()
    return {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")}


def write_json(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_docker_auths_match_hosts_written_as_urls(home: dict[str, str]) -> None:
    write_json(
        Path(home["HOME"]) / ".docker/config.json",
        {"auths": {"https://reg.site:5000/v1/": {"auth": basic("ann", "pw:with:colons")}}},
    )
    found = find_credentials("reg.site:5000", env=home)
    assert found is not None and (found.username, found.password) == ("ann", "pw:with:colons")
    assert find_credentials("other.site", env=home) is None


def test_docker_hub_logins_are_found_under_the_index_url(home: dict[str, str]) -> None:
    write_json(
        Path(home["HOME"]) / ".docker/config.json",
        {"auths": {"https://index.docker.io/v1/": {"auth": basic("hub", "pw")}}},
    )
    found = find_credentials("docker.io", env=home)
    assert found is not None and found.username == "hub"


def fake_helper(directory: Path, name: str, answers: dict[str, tuple[str, str]]) -> None:
    script = directory / f"docker-credential-{name}"
    lines = ["#!/bin/sh", "read -r server", 'case "$server" in']
    for server, (user, secret) in answers.items():
        reply = json.dumps({"ServerURL": server, "Username": user, "Secret": secret})
        lines.append(f"  '{server}') echo '{reply}' ;;")
    lines += ["  *) echo 'credentials not found in native keychain'; exit 1 ;;", "esac"]
    script.write_text("\n".join(lines) + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_credential_helpers_per_host_then_the_store(home: dict[str, str], tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_helper(bin_dir, "special", {"special.site": ("helper-user", "helper-secret")})
    fake_helper(bin_dir, "store", {"stored.site": ("<token>", "refresh-token")})
    env = {**home, "PATH": f"{bin_dir}:{home['PATH']}"}
    write_json(
        Path(home["HOME"]) / ".docker/config.json",
        {"credsStore": "store", "credHelpers": {"special.site": "special"}},
    )
    special = find_credentials("special.site", env=env)
    assert special is not None and (special.username, special.password) == (
        "helper-user",
        "helper-secret",
    )
    stored = find_credentials("stored.site", env=env)
    assert stored is not None and stored.identity_token == "refresh-token"
    assert find_credentials("unknown.site", env=env) is None


def test_missing_helper_is_one_clear_error(home: dict[str, str]) -> None:
    write_json(Path(home["HOME"]) / ".docker/config.json", {"credsStore": "nonexistent"})
    with pytest.raises(RegistryError, match=r"docker-credential-nonexistent .* not installed"):
        find_credentials("reg.site", env=home)


def test_containers_auth_files_in_order_with_namespaces(
    home: dict[str, str], tmp_path: Path
) -> None:
    runtime = tmp_path / "run"
    write_json(
        runtime / "containers/auth.json",
        {
            "auths": {
                "reg.site/team": {"auth": basic("team", "1")},
                "reg.site": {"auth": basic("all", "2")},
            }
        },
    )
    env = {**home, "XDG_RUNTIME_DIR": str(runtime)}
    team = find_credentials("reg.site", "team/api", env=env)
    other = find_credentials("reg.site", "other/api", env=env)
    assert team is not None and team.username == "team"
    assert other is not None and other.username == "all"
    override = write_json(
        tmp_path / "override.json", {"auths": {"reg.site": {"auth": basic("env", "3")}}}
    )
    first = find_credentials(
        "reg.site", "team/api", env={**env, "REGISTRY_AUTH_FILE": str(override)}
    )
    assert first is not None and first.username == "env"


# ------------------------------------------------------------------------------- challenges
def test_challenges_parse_quoted_parameters() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.site/token",service="reg.site",'
        'scope="repository:a/b:pull,push",error="insufficient_scope"'
    )
    assert challenge is not None and challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.site/token",
        "service": "reg.site",
        "scope": "repository:a/b:pull,push",
        "error": "insufficient_scope",
    }
    basic_challenge = parse_challenge('Basic realm="Registry Realm"')
    assert basic_challenge is not None and basic_challenge.scheme == "basic"


def test_retry_after_takes_seconds_or_a_date() -> None:
    assert _parse_retry_after("3") == 3.0
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert _parse_retry_after(None) is None and _parse_retry_after("soon") is None


# ---------------------------------------------------------------------- push, pull, retries
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=40_000), min_size=1, max_size=3),
    chunk=st.one_of(st.none(), st.integers(min_value=1000, max_value=20_000)),
)
def test_pushed_blobs_arrive_byte_exact_whatever_the_chunking(
    fake: FakeRegistry, sizes: list[int], chunk: int | None
) -> None:
    entry = image("sizes/app:1", *sizes)
    push(fake, [entry], "sizes/app:1", chunk_size=chunk)
    assert isinstance(entry.target, Image)
    for layer in entry.target.layers:
        with layer.open() as stream:
            assert fake.blobs[str(layer.digest)] == stream.read()
    pulled = RegistrySource(f"docker://{fake.address}/sizes/app:1").entries()
    assert isinstance(pulled[0].target, Image) and pulled[0].target.manifest is not None
    assert entry.target.manifest is not None
    assert pulled[0].target.manifest.raw == entry.target.manifest.raw


def test_429_and_5xx_are_retried_honouring_retry_after(fake: FakeRegistry) -> None:
    push(fake, [image("retry/app:1", 3000)], "retry/app:1")
    fake.fail_next(429, 503, retry_after="0")
    fake.fail_next(502)
    entries = RegistrySource(
        f"docker://{fake.address}/retry/app:1", RegistryOptions(backoff=0.001)
    ).entries()
    assert len(entries) == 1
    assert not fake.failures


def test_retries_give_up_with_the_registrys_answer(fake: FakeRegistry) -> None:
    fake.fail_next(*[503] * 10)
    with pytest.raises(RegistryError, match="503"):
        RegistrySource(
            f"docker://{fake.address}/x/y:1", RegistryOptions(backoff=0.001, retries=2)
        ).entries()


def test_a_corrupt_layer_is_never_committed(fake: FakeRegistry) -> None:
    for size in (100, 50_000):  # monolithic and chunked
        entry = image(f"bad/app{size}:1", size)
        assert isinstance(entry.target, Image)
        good = entry.target.layers[0]
        data = bytearray(good.open().read())
        data[-1] ^= 1
        bad = replace(good, open=lambda data=bytes(data): io.BytesIO(data))  # type: ignore[misc]
        corrupt = Entry(replace(entry.target, layers=(bad,)), entry.tags)
        with pytest.raises(DigestMismatchError):
            push(fake, [corrupt], f"bad/app{size}:1", chunk_size=10_000)
        assert str(good.digest) not in fake.blobs
        assert fake.count("PUT", "/manifests/") == 0


def test_a_corrupt_layer_stops_the_other_uploads(fake: FakeRegistry) -> None:
    entry = image("stop/app:1", 2_000_000, 200_000)
    assert isinstance(entry.target, Image)
    big, small = entry.target.layers
    data = bytearray(small.open().read())
    data[-1] ^= 1
    bad = replace(small, open=lambda: io.BytesIO(bytes(data)))
    corrupt = Entry(replace(entry.target, layers=(big, bad)), entry.tags)
    with pytest.raises(DigestMismatchError):
        push(fake, [corrupt], "stop/app:1", chunk_size=64 * 1024, parallel=2)
    assert str(small.digest) not in fake.blobs
    assert fake.count("PUT", "/manifests/") == 0


def test_a_refused_media_type_names_the_registry_the_type_and_the_way_out(
    fake: FakeRegistry,
) -> None:
    fake.refused_types = ("application/vnd.oci.image.layer.v1.tar",)
    with pytest.raises(MediaTypeRefusedError) as caught:
        push(fake, [image("old/app:1", 100)], "old/app:1")
    message = str(caught.value)
    assert fake.address in message
    assert "application/vnd.oci.image.layer.v1.tar" in message
    assert "--compression gzip" in message
    assert "\n" not in message


def test_a_cut_download_resumes_with_a_range_request(fake: FakeRegistry) -> None:
    entry = image("cut/app:1", 200_000)
    push(fake, [entry], "cut/app:1")
    (pulled,) = RegistrySource(f"docker://{fake.address}/cut/app:1").entries()
    assert isinstance(pulled.target, Image)
    layer = pulled.target.layers[0]
    fake.cut_downloads = 1
    fake.requests.clear()
    with layer.open() as stream:
        data = stream.read()
    assert sha256_of(data) == layer.digest
    downloads = [
        headers for m, path, headers, _ in fake.requests if m == "GET" and "/blobs/" in path
    ]
    assert ["Range" in headers for headers in downloads] == [False, True]


def test_a_blob_the_registry_corrupted_is_refused_before_the_archive_exists(
    fake: FakeRegistry, tmp_path: Path
) -> None:
    """The archive writer copies a verified layer's declared size and never reads its end, so
    the registry's stream itself must refuse the last bytes of a blob that does not match."""
    entry = image("rot/app:1", 300_000)
    push(fake, [entry], "rot/app:1")
    assert isinstance(entry.target, Image)
    digest = str(entry.target.layers[0].digest)
    rotten = bytearray(fake.blobs[digest])
    rotten[-1] ^= 1
    fake.blobs[digest] = bytes(rotten)
    archive = tmp_path / "pulled.tar"
    with pytest.raises(DigestMismatchError, match=f"expected {digest}"):
        copy(RegistrySource(f"docker://{fake.address}/rot/app:1"), ArchiveSink(archive), KEEP)
    assert not archive.exists()


class Recorder:
    def __init__(self) -> None:
        self.started: dict[Digest, int] = {}
        self.sent: dict[Digest, int] = {}
        self.skipped: list[tuple[Digest, bool]] = []

    def blob_started(self, digest: Digest, size: int) -> None:
        self.started[digest] = size

    def blob_bytes(self, digest: Digest, count: int) -> None:
        self.sent[digest] = self.sent.get(digest, 0) + count

    def blob_skipped(self, digest: Digest, size: int, *, mounted: bool) -> None:
        self.skipped.append((digest, mounted))


def test_progress_counts_bytes_per_blob_and_skips_apart(fake: FakeRegistry) -> None:
    entry = image("progress/app:1", 30_000, 500)
    first, second = Recorder(), Recorder()
    push(fake, [entry], "progress/app:1", progress=first, chunk_size=8000)
    assert first.sent == first.started and len(first.started) == 3  # two layers and the config
    details = push(fake, [entry], "progress/app:1", progress=second)
    assert second.sent == {} and len(second.skipped) == 3
    assert details["bytes_sent"] == 0 and details["blobs_skipped"] == 3


def test_push_totals_add_up_for_a_progress_bar(fake: FakeRegistry) -> None:
    totals = PushTotals()
    push(fake, [image("totals/app:1", 30_000, 500)], "totals/app:1", progress=totals)
    assert totals.bytes_sent == totals.bytes_started > 30_000
    again = PushTotals()
    push(fake, [image("totals/app:1", 30_000, 500)], "totals/app:1", progress=again)
    assert (again.bytes_sent, again.skipped, again.mounted) == (0, 3, 0)


def test_missing_layers_are_those_some_repository_lacks(fake: FakeRegistry) -> None:
    first = image("missing/app:1", 100, 200)
    push(fake, [first], "missing/app:1")
    assert isinstance(first.target, Image)
    shared = first.target.layers[0]
    second = image_from_layers([layer_tar(100, 0), layer_tar(300, 9)], ("missing/app:2",))
    assert isinstance(second.target, Image)
    sink = RegistrySink(f"docker://{fake.address}/missing/app:2", RegistryOptions(**FAST))  # type: ignore[arg-type]
    assert sink.missing_layers([first]) == set()
    assert sink.missing_layers([second]) == {second.target.layers[1].digest}
    assert shared.digest == second.target.layers[0].digest


def test_a_repeat_push_puts_no_manifest_either(fake: FakeRegistry) -> None:
    entry = image("again/app:1", 100)
    push(fake, [entry], "again/app:1")
    before = fake.count("PUT")
    push(fake, [entry], "again/app:1")
    assert fake.count("PUT") == before


def test_a_whole_registry_source_lists_every_tag_of_every_repository(fake: FakeRegistry) -> None:
    push(fake, [image("team/one:1", 10), image("team/one:2", 20), image("team/two:1", 30)])
    entries = RegistrySource(f"docker://{fake.address}/").entries()
    assert [str(tag) for entry in entries for tag in entry.tags] == [
        f"{fake.address}/team/one:1",
        f"{fake.address}/team/one:2",
        f"{fake.address}/team/two:1",
    ]


# -------------------------------------------------------------------------------- placement
def test_one_image_target_refuses_several_images(fake: FakeRegistry) -> None:
    with pytest.raises(UsageError, match="takes one image and the source has 2"):
        push(fake, [image("a/b:1", 10), image("a/c:1", 20)], "x/y:1")


def test_whole_registry_target_keeps_repository_paths(fake: FakeRegistry) -> None:
    details = push(fake, [image("team/one:1", 10), image("team/two:2", 20)])
    assert [item["name"] for item in details["images"]] == [  # type: ignore[attr-defined]
        f"{fake.address}/team/one:1",
        f"{fake.address}/team/two:2",
    ]


def test_whole_registry_target_refuses_untagged_images(fake: FakeRegistry) -> None:
    entry = Entry(image("a/b:1", 10).target, (), ("app-1",))
    with pytest.raises(UsageError, match="app-1 has no repository name"):
        push(fake, [entry])


def test_a_digest_target_must_match_the_image(fake: FakeRegistry) -> None:
    with pytest.raises(UsageError, match="the image's digest is"):
        push(fake, [image("a/b:1", 10)], "a/b@sha256:" + "0" * 64)


def test_explicit_credentials_are_sent_on_a_basic_challenge() -> None:
    credentials = Credentials("u", "p", origin="test")
    options = RegistryOptions(credentials=credentials)
    assert options.transport().credentials is credentials


def test_docker_ends_open_as_registry_source_and_sink(fake: FakeRegistry) -> None:
    from sealift.ends import open as ends

    assert ends.parse_end(f"docker://{fake.address}/a/b:1").kind == ends.REGISTRY
    with pytest.raises(UsageError, match="not a registry host"):
        ends.parse_end("docker://a/b:1")
    options = ends.EndOptions(registry=RegistryOptions(parallel=2))
    sink = ends.open_sink(f"docker://{fake.address}/", options)
    source = ends.open_source(f"docker://{fake.address}/a/b:1", options)
    assert isinstance(sink, RegistrySink) and sink.options.parallel == 2
    assert isinstance(source, RegistrySource)


# ---------------------------------------------------------------------------- parallel pulls
def layer_digests(entry: Entry) -> list[str]:
    return [str(layer.digest) for image in entry.images() for layer in image.layers]


def stored_layers(layout: Path, entry: Entry) -> dict[str, bytes]:
    return {
        digest: (layout / "blobs" / digest.replace(":", "/")).read_bytes()
        for digest in layer_digests(entry)
    }


@pytest.mark.parametrize("sink", ["layout", "archive"])
def test_a_pull_downloads_its_layers_at_once_ahead_of_the_sink(
    fake: FakeRegistry, tmp_path: Path, spool: Path, sink: str
) -> None:
    entry = image("wide/app:1", 40_000, 30_000, 20_000, 10_000)
    push(fake, [entry], "wide/app:1")
    # each layer's body is sent only once all four are being downloaded at the same time
    fake.gathered_downloads = (frozenset(layer_digests(entry)), threading.Barrier(4, timeout=10))
    source = RegistrySource(f"docker://{fake.address}/wide/app:1", RegistryOptions(parallel=4))
    target = tmp_path / ("layout" if sink == "layout" else "pulled.tar")
    copy(source, LayoutSink(target) if sink == "layout" else ArchiveSink(target), KEEP)
    layout = target
    if sink == "archive":
        layout = tmp_path / "unpacked"
        with tarfile.open(target) as tar:
            tar.extractall(layout, filter="data")
    assert isinstance(entry.target, Image)
    originals = {str(layer.digest): layer.open().read() for layer in entry.target.layers}
    assert stored_layers(layout, entry) == originals
    assert list(spool.iterdir()) == []  # every spooled blob was read, and the spool removed
    source.close()


def test_a_pull_fetches_only_the_layers_the_destination_lacks(
    fake: FakeRegistry, tmp_path: Path, spool: Path
) -> None:
    old, new = image("grow/app:1", 5_000, 6_000), image("grow/app:2", 5_000, 6_000, 7_000)
    push(fake, [old], "grow/app:1")
    push(fake, [new], "grow/app:2")
    layout = tmp_path / "layout"
    copy(RegistrySource(f"docker://{fake.address}/grow/app:1"), LayoutSink(layout), KEEP)
    fake.requests.clear()
    copy(RegistrySource(f"docker://{fake.address}/grow/app:2"), LayoutSink(layout), KEEP)
    fetched = {path.rpartition("/")[2] for m, path, _, _ in fake.requests if "/blobs/" in path}
    assert set(layer_digests(new)) & fetched == {layer_digests(new)[2]}


def test_a_download_cut_ahead_of_the_sink_resumes_with_a_range_request(
    fake: FakeRegistry, tmp_path: Path, spool: Path
) -> None:
    entry = image("cut/ahead:1", 300_000, 200_000)
    push(fake, [entry], "cut/ahead:1")
    fake.cut_downloads = 2
    fake.requests.clear()
    layout = tmp_path / "layout"
    copy(RegistrySource(f"docker://{fake.address}/cut/ahead:1"), LayoutSink(layout), KEEP)
    assert isinstance(entry.target, Image)
    assert stored_layers(layout, entry) == {
        str(layer.digest): layer.open().read() for layer in entry.target.layers
    }
    ranged = [h for m, path, h, _ in fake.requests if m == "GET" and "Range" in h]
    assert len(ranged) == 2


def test_a_corrupt_blob_stops_the_pull_and_leaves_nothing(
    fake: FakeRegistry, tmp_path: Path, spool: Path
) -> None:
    entry = image("rot/many:1", 200_000, 150_000, 100_000)
    push(fake, [entry], "rot/many:1")
    digest = layer_digests(entry)[2]
    rotten = bytearray(fake.blobs[digest])
    rotten[len(rotten) // 2] ^= 1
    fake.blobs[digest] = bytes(rotten)
    layout = tmp_path / "layout"
    source = RegistrySource(f"docker://{fake.address}/rot/many:1", RegistryOptions(parallel=3))
    with pytest.raises(DigestMismatchError, match=f"expected {digest}"):
        copy(source, LayoutSink(layout), KEEP)
    source.close()
    assert not layout.exists()
    assert list(tmp_path.iterdir()) == [spool]
    assert list(spool.iterdir()) == []


# ------------------------------------------------------------------------------- prefetcher
class SmallReads(io.RawIOBase):
    """``data`` at most ``step`` bytes per read, as a network gives it."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data = memoryview(data)
        self.step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.step, len(self.data))
        buffer[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


class Blobs:
    """In-memory blobs for a Prefetcher, recording which downloads have started."""

    def __init__(self, sizes: list[int], step: int = 700) -> None:
        self.data = [bytes([i % 251]) * size + bytes([i]) for i, size in enumerate(sizes)]
        self.step = step
        self.started: list[int] = []
        self.lock = threading.Lock()

    def blobs(self) -> list[PrefetchBlob]:
        return [
            PrefetchBlob(sha256_of(data), len(data), functools.partial(self._open, i), f"blob {i}")
            for i, data in enumerate(self.data)
        ]

    def _open(self, i: int) -> IO[bytes]:
        with self.lock:
            self.started.append(i)
        return cast(IO[bytes], SmallReads(self.data[i], self.step))


def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "condition not met in 10 s"
        time.sleep(0.01)


def read_blob(prefetcher: Prefetcher, blob: PrefetchBlob) -> bytes:
    stream = prefetcher.open(blob.digest)
    assert stream is not None
    with stream:
        return stream.read()


def test_prefetch_stays_within_its_budget_until_blobs_are_read(spool: Path) -> None:
    data = Blobs([100, 100, 100, 100])
    blobs = data.blobs()
    prefetcher = Prefetcher(blobs, parallel=4, budget=250)
    try:
        eventually(lambda: data.started == [0, 1])
        time.sleep(0.1)
        assert data.started == [0, 1]  # a third would pass the budget
        assert read_blob(prefetcher, blobs[0]) == data.data[0]
        eventually(lambda: data.started == [0, 1, 2])
        assert read_blob(prefetcher, blobs[3]) == data.data[3]  # asked for: goes first
        assert data.started == [0, 1, 2, 3]
    finally:
        prefetcher.close()
    assert list(spool.iterdir()) == []


def test_a_blob_larger_than_the_budget_still_moves(spool: Path) -> None:
    data = Blobs([1000, 10])
    blobs = data.blobs()
    prefetcher = Prefetcher(blobs, parallel=2, budget=100)
    assert [read_blob(prefetcher, blob) for blob in blobs] == data.data
    assert list(spool.iterdir()) == []  # all read: the spool is gone without a close


def test_a_blob_is_spooled_for_one_reader_and_streamed_for_the_next(spool: Path) -> None:
    data = Blobs([10])
    (blob,) = data.blobs()
    prefetcher = Prefetcher([blob], parallel=1)
    assert read_blob(prefetcher, blob) == data.data[0]
    assert prefetcher.open(blob.digest) is None
    assert prefetcher.open(sha256_of(b"unknown")) is None
    prefetcher.close()


class Stalling(io.RawIOBase):
    """Gives ``head`` bytes, then blocks until ``release`` is set, then gives nothing."""

    def __init__(self, head: bytes, release: threading.Event) -> None:
        self.head = head
        self.release = release

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        self.release.wait(10)
        return 0


def stalling(head: bytes, release: threading.Event) -> Callable[[], IO[bytes]]:
    return lambda: cast(IO[bytes], Stalling(head, release))


def test_a_failed_download_is_raised_to_the_reader_of_another_blob(spool: Path) -> None:
    release = threading.Event()
    stalled = PrefetchBlob(sha256_of(b"x" * 100), 100, stalling(b"x" * 10, release), "stalled")
    broken = PrefetchBlob(sha256_of(b"y"), 1, lambda: io.BytesIO(b""), "broken blob")
    prefetcher = Prefetcher([stalled, broken], parallel=2)
    stream = prefetcher.open(stalled.digest)
    assert stream is not None
    with pytest.raises(DigestMismatchError, match="broken blob: ended after 0 bytes"):
        stream.read()
    release.set()
    prefetcher.close()
    assert list(spool.iterdir()) == []


def test_closing_mid_download_stops_the_workers_and_removes_the_spool(spool: Path) -> None:
    release = threading.Event()
    blob = PrefetchBlob(sha256_of(b"z" * 100), 100, stalling(b"z" * 10, release), "z")
    prefetcher = Prefetcher([blob], parallel=1, memory=0)  # every byte to the spool file
    eventually(lambda: any(f.stat().st_size == 10 for f in spool.glob("*/*")))
    stream = prefetcher.open(blob.digest)
    assert stream is not None
    assert stream.read(100) == b"z" * 10
    prefetcher.close()
    assert list(spool.iterdir()) == []
    with pytest.raises(SealiftError, match="z: the download was stopped"):
        stream.read(100)
    release.set()


def test_bytes_past_the_memory_budget_go_to_the_spool_and_read_back_in_order(
    spool: Path,
) -> None:
    data = Blobs([5000, 3000], step=1000)
    blobs = data.blobs()
    prefetcher = Prefetcher(blobs, parallel=2, memory=2500)
    eventually(lambda: sum(f.stat().st_size for f in spool.glob("*/*")) == 8002 - 2000)
    assert [read_blob(prefetcher, blob) for blob in blobs] == data.data
    assert list(spool.iterdir()) == []


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=6),
    parallel=st.integers(1, 4),
    budget=st.integers(1, 5000),
    memory=st.integers(0, 5000),
    order=st.randoms(use_true_random=False),
)
def test_every_blob_reads_back_whatever_the_order_budgets_and_parallelism(
    spool: Path,
    sizes: list[int],
    parallel: int,
    budget: int,
    memory: int,
    order: random.Random,
) -> None:
    data = Blobs(sizes)
    blobs = data.blobs()
    reads = list(range(len(blobs)))
    order.shuffle(reads)
    prefetcher = Prefetcher(blobs, parallel=parallel, budget=budget, memory=memory)
    try:
        for i in reads:
            assert read_blob(prefetcher, blobs[i]) == data.data[i]
    finally:
        prefetcher.close()
    assert list(spool.iterdir()) == []
