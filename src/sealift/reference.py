"""Image references (``[domain/]path[:tag][@digest]``), normalised the way Docker does.

``busybox`` means ``docker.io/library/busybox:latest``; the familiar form drops the defaults again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sealift.digest import Digest
from sealift.errors import InvalidArchiveError, UsageError

DEFAULT_DOMAIN = "docker.io"
_LEGACY_DOMAINS = {"index.docker.io": DEFAULT_DOMAIN, "registry-1.docker.io": DEFAULT_DOMAIN}
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:localhost|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_MAX_NAME = 255


@dataclass(frozen=True, order=True)
class Reference:
    """A normalised image reference. ``tag`` or ``digest`` (or both) may be set."""

    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: bool = True) -> Reference:
        """Parse ``text``; raise UsageError if it is not a valid reference."""
        if not isinstance(text, str) or not text or len(text) > 512 or text != text.strip():
            raise UsageError(f"invalid image reference {text!r}")
        rest, digest = text, None
        if "@" in rest:
            rest, _, digest_text = rest.partition("@")
            try:
                digest = Digest.parse(digest_text)
            except InvalidArchiveError as exc:
                raise UsageError(f"invalid image reference {text!r}: {exc}") from exc
        tag = None
        last_slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > last_slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise UsageError(f"invalid tag in image reference {text!r}")
        domain, path = _split_domain(rest, text)
        if tag is None and digest is None and default_tag:
            tag = "latest"
        return cls(domain, path, tag, digest)

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def familiar_repository(self) -> str:
        if self.domain != DEFAULT_DOMAIN:
            return self.repository
        return self.path.removeprefix("library/")

    def __str__(self) -> str:
        return self._format(self.repository)

    @property
    def familiar(self) -> str:
        """The short form docker prints: ``busybox:latest``, ``myorg/app:1``."""
        return self._format(self.familiar_repository)

    def _format(self, repository: str) -> str:
        text = repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _split_domain(name: str, original: str) -> tuple[str, str]:
    first, slash, remainder = name.partition("/")
    if slash and (("." in first or ":" in first or first == "localhost") or first != first.lower()):
        if not _DOMAIN.fullmatch(first):
            raise UsageError(f"invalid registry domain in image reference {original!r}")
        domain, path = _LEGACY_DOMAINS.get(first, first), remainder
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if len(domain) + 1 + len(path) > _MAX_NAME or not all(
        _COMPONENT.fullmatch(part) for part in path.split("/")
    ):
        raise UsageError(f"invalid image reference {original!r}")
    return domain, path


def normalize_tag(text: str) -> str:
    """``foo`` -> ``docker.io/library/foo:latest`` (a tagged, fully qualified name)."""
    return str(Reference.parse(text))


def is_reference(text: str) -> bool:
    try:
        Reference.parse(text)
    except UsageError:
        return False
    return True
