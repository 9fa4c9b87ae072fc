"""Digests and image references parse strictly and normalise like Docker."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealift.digest import Digest
from sealift.errors import InvalidArchiveError, UsageError
from sealift.reference import Reference


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("myorg/api:1.2.3", "docker.io/myorg/api:1.2.3", "myorg/api:1.2.3"),
        ("index.docker.io/library/nginx:1", "docker.io/library/nginx:1", "nginx:1"),
        ("localhost:5000/app:dev", "localhost:5000/app:dev", "localhost:5000/app:dev"),
        ("localhost/fixture/app:1", "localhost/fixture/app:1", "localhost/fixture/app:1"),
        ("ghcr.io/o/r/x:v1", "ghcr.io/o/r/x:v1", "ghcr.io/o/r/x:v1"),
    ],
)
def test_references_normalise_like_docker(text: str, full: str, familiar: str) -> None:
    reference = Reference.parse(text)
    assert str(reference) == full
    assert reference.familiar == familiar
    assert Reference.parse(full) == reference


@pytest.mark.parametrize(
    "text",
    ["", "upper/CASE", "a:b:c", "app:", "app@sha256:short", "../etc/passwd", "a b", "app:1;rm -rf"],
)
def test_invalid_references_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        Reference.parse(text)


def test_digest_reference_keeps_its_digest() -> None:
    digest = "sha256:" + "a" * 64
    reference = Reference.parse(f"app@{digest}")
    assert reference.digest == Digest.parse(digest)
    assert reference.tag is None


@given(st.binary(min_size=32, max_size=32))
def test_sha256_digests_round_trip(raw: bytes) -> None:
    text = "sha256:" + raw.hex()
    assert str(Digest.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha256:../../etc/passwd",
        "md5",
        "sha256:",
        ":abc",
        "sha256+foo+-b:abc",
        None,
        42,
    ],
)
def test_malformed_digests_are_refused(text: object) -> None:
    with pytest.raises(InvalidArchiveError):
        Digest.parse(text)


def test_unknown_algorithms_parse_but_cannot_be_computed() -> None:
    digest = Digest.parse("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564")
    assert not digest.is_computable()
    with pytest.raises(InvalidArchiveError, match="unsupported digest algorithm"):
        digest.new_hasher()
