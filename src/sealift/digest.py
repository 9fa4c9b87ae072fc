"""Content digests: parsing, formatting and hashing.

Digests follow the OCI grammar (``algorithm ":" encoded``). Only sha256 and sha512 can be computed
and so used to name blobs; other well-formed algorithms parse but are refused when content must be
checked against them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from sealift.errors import InvalidArchiveError

_ALGORITHM = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*")
_ENCODED = re.compile(r"[a-zA-Z0-9=_-]+")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_LOWER_HEX = re.compile(r"[0-9a-f]+")
_MAX_LENGTH = 1024


@dataclass(frozen=True, order=True)
class Digest:
    """An algorithm-qualified content digest such as ``sha256:9f86d0...``."""

    algorithm: str
    encoded: str

    @classmethod
    def parse(cls, text: Any) -> Digest:
        """Parse and validate a digest string; raise InvalidArchiveError if malformed."""
        if not isinstance(text, str) or len(text) > _MAX_LENGTH or ":" not in text:
            raise InvalidArchiveError(f"not a digest: {_show(text)}")
        algorithm, _, encoded = text.partition(":")
        if not _ALGORITHM.fullmatch(algorithm) or not _ENCODED.fullmatch(encoded):
            raise InvalidArchiveError(f"not a digest: {_show(text)}")
        expected_length = _HEX_LENGTH.get(algorithm)
        if expected_length is not None and (
            len(encoded) != expected_length or not _LOWER_HEX.fullmatch(encoded)
        ):
            raise InvalidArchiveError(
                f"not a {algorithm} digest ({expected_length} lowercase hex digits): {_show(text)}"
            )
        return cls(algorithm, encoded)

    @classmethod
    def from_hex(cls, hex_text: str, algorithm: str = "sha256") -> Digest:
        return cls.parse(f"{algorithm}:{hex_text}")

    @property
    def hex(self) -> str:
        return self.encoded

    @property
    def short(self) -> str:
        """The 12-character form docker prints."""
        return self.encoded[:12]

    def is_computable(self) -> bool:
        return self.algorithm in _HEX_LENGTH

    def new_hasher(self) -> Hasher:
        if not self.is_computable():
            raise InvalidArchiveError(f"unsupported digest algorithm {self.algorithm!r} in {self}")
        return Hasher(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"


class Hasher:
    """An incremental hasher that yields a :class:`Digest`."""

    def __init__(self, algorithm: str = "sha256") -> None:
        self.algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._hash.hexdigest())


def sha256_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
