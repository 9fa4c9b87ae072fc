"""How a registry end is used: parallelism, chunking, TLS, login, retries, progress.

Kept apart from the HTTP code, so that naming a registry's options does not import an HTTP
library (the CLI builds them for every ``copy``).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sealift.digest import Digest
from sealift.errors import UsageError
from sealift.registry.credentials import Credentials
from sealift.registry.tls import CERTS_DIRS, TlsOptions

if TYPE_CHECKING:
    from sealift.registry.transport import TransportOptions

MONOLITHIC_LIMIT = 4 * 1024 * 1024
"""Blobs up to this size go up in one request; larger ones stream in PATCH requests."""
MIN_CHUNK_SIZE = 64 * 1024
_SIZE = re.compile(r"(\d+)\s*([KMG]i?B?|B)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class BlobProgress(Protocol):
    """What a push reports as it goes; every method may be called from several threads."""

    def blob_started(self, digest: Digest, size: int) -> None: ...

    def blob_bytes(self, digest: Digest, count: int) -> None: ...

    def blob_skipped(self, digest: Digest, size: int, *, mounted: bool) -> None: ...


@dataclass(frozen=True)
class RegistryOptions:
    parallel: int = 4
    """Blobs checked, uploaded or downloaded at once."""
    chunk_size: int | None = None
    """The largest request body (for proxies that cap them); None sends a blob in one PATCH."""
    monolithic_limit: int = MONOLITHIC_LIMIT
    insecure: bool = False
    """Plain HTTP and unchecked certificates for any registry (loopback ones allow HTTP anyway)."""
    ca_cert: Path | None = None
    certs_dirs: tuple[Path, ...] = CERTS_DIRS
    credentials: Credentials | None = None
    """A login to use instead of looking one up in docker's and podman's files."""
    retries: int = 5
    backoff: float = 0.5
    progress: BlobProgress | None = None

    def transport(self) -> TransportOptions:
        from sealift.registry.transport import TransportOptions

        tls = TlsOptions(self.ca_cert, self.insecure, self.certs_dirs)
        return TransportOptions(
            tls, max(self.parallel, 1), self.retries, self.backoff, self.credentials
        )


def parse_size(text: str) -> int:
    """``5MiB``, ``512k``, ``1048576`` -> bytes (binary units); UsageError when malformed."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise UsageError(f"invalid size {text!r}: expected a number of bytes, e.g. 5MiB or 512KiB")
    size = int(match.group(1)) * _UNITS[(match.group(2) or "")[:1].lower()]
    if size < MIN_CHUNK_SIZE:
        raise UsageError(f"chunk size {text!r} is below the {MIN_CHUNK_SIZE // 1024} KiB minimum")
    return size


class PushTotals:
    """A :class:`BlobProgress` that keeps counts a progress bar can poll: bytes sent of the
    bytes to send, per blob and in all, and blobs skipped (already there or mounted) apart."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sizes: dict[Digest, int] = {}
        self.sent: dict[Digest, int] = {}
        self.skipped = 0
        self.mounted = 0

    def blob_started(self, digest: Digest, size: int) -> None:
        with self._lock:
            self.sizes[digest] = size
            self.sent.setdefault(digest, 0)

    def blob_bytes(self, digest: Digest, count: int) -> None:
        with self._lock:
            self.sent[digest] = self.sent.get(digest, 0) + count

    def blob_skipped(self, digest: Digest, size: int, *, mounted: bool) -> None:
        with self._lock:
            self.skipped += not mounted
            self.mounted += mounted

    @property
    def bytes_sent(self) -> int:
        with self._lock:
            return sum(self.sent.values())

    @property
    def bytes_started(self) -> int:
        """The sizes of the blobs whose upload has begun (a resumed one counts once)."""
        with self._lock:
            return sum(self.sizes.values())
