"""``docker://`` references: which registry, and which repository, tag or digest on it.

``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` names one image (the tag defaults to ``latest``);
``docker://HOST[:PORT]/`` names the whole registry (as a destination: every image keeps its
repository path under it). The host is always spelled out: ``docker://team/api`` is refused
rather than guessed to mean Docker Hub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sealift.errors import UsageError
from sealift.reference import DEFAULT_DOMAIN, Reference

SCHEME = "docker://"
DOCKER_HUB_API = "registry-1.docker.io"
_HOST = re.compile(
    r"(?:localhost|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?"
)


@dataclass(frozen=True)
class RegistryTarget:
    """A registry (``host``, with its port if any) and optionally one image reference on it."""

    host: str
    reference: Reference | None = None

    @property
    def repository(self) -> str | None:
        return self.reference.path if self.reference is not None else None

    def __str__(self) -> str:
        if self.reference is None:
            return f"{SCHEME}{self.host}/"
        return f"{SCHEME}{self.reference}"


def parse_docker_reference(text: str) -> RegistryTarget:
    """Parse ``docker://HOST[:PORT]/[REPO[:TAG|@DIGEST]]``; raise UsageError when malformed."""
    if not text.startswith(SCHEME):
        raise UsageError(f"{text!r} is not a docker:// reference")
    rest = text[len(SCHEME) :]
    host, slash, name = rest.partition("/")
    if not slash:
        raise UsageError(
            f"{text!r}: end the registry with a slash ({SCHEME}{rest}/) or name an image "
            f"({SCHEME}{rest}/REPO:TAG)"
        )
    if not _HOST.fullmatch(host) or not _looks_like_host(host):
        raise UsageError(
            f"{text!r}: {host!r} is not a registry host; name it first, "
            f"e.g. {SCHEME}registry.example:5000/{host}/{name}"
        )
    host = DEFAULT_DOMAIN if host in ("index.docker.io", DOCKER_HUB_API) else host
    if not name:
        return RegistryTarget(host)
    try:
        reference = Reference.parse(f"{host}/{name}")
    except UsageError as exc:
        raise UsageError(f"{text!r} is not a valid image reference") from exc
    if reference.domain != host:
        raise UsageError(f"{text!r} is not a valid image reference")
    return RegistryTarget(host, reference)


def _looks_like_host(host: str) -> bool:
    return "." in host or ":" in host or host == "localhost" or host.startswith("[")


def api_host(domain: str) -> str:
    """Where a registry's API is served: Docker Hub's name differs from its API host."""
    return DOCKER_HUB_API if domain == DEFAULT_DOMAIN else domain


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``[::1]`` (with or without a port)."""
    name = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
    return name in ("localhost", "::1") or re.fullmatch(r"127(?:\.\d{1,3}){3}", name) is not None
