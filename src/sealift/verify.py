"""Readers and writers that hash what passes through them.

Every byte sealift reads from an untrusted place goes through :class:`VerifyingReader`: it hashes
as it streams, refuses to read past the expected size, and fails at end of stream when the content
does not match. Nothing is trusted before that check passes.
"""

from __future__ import annotations

import io
from typing import IO

from sealift.digest import Digest, Hasher
from sealift.errors import DigestMismatchError, InvalidArchiveError

CHUNK = 1024 * 1024


class VerifyingReader(io.RawIOBase):
    """Reads ``raw`` while hashing it; raises DigestMismatchError at EOF if it does not match."""

    def __init__(
        self, raw: IO[bytes], expected: Digest | None, size: int | None, what: str
    ) -> None:
        self._raw = raw
        self._expected = expected
        self._size = size
        self._what = what
        self.hasher = expected.new_hasher() if expected else Hasher()
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = len(buffer)
        if self._size is not None:
            want = min(want, self._size - self.hasher.size + 1)
        data = self._raw.read(want) if want > 0 else b""
        n = len(data)
        if n:
            buffer[:n] = data
            self.hasher.update(data)
            if self._size is not None and self.hasher.size > self._size:
                raise DigestMismatchError(
                    f"{self._what}: more than the declared {self._size} bytes"
                )
        else:
            self._finish()
        return n

    def _finish(self) -> None:
        if self._checked:
            return
        self._checked = True
        if self._size is not None and self.hasher.size != self._size:
            raise DigestMismatchError(
                f"{self._what}: size is {self.hasher.size} bytes, expected {self._size}"
            )
        actual = self.hasher.digest()
        if self._expected is not None and actual != self._expected:
            raise DigestMismatchError(
                f"{self._what}: digest is {actual}, expected {self._expected}"
            )

    @property
    def digest(self) -> Digest:
        return self.hasher.digest()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class HashingWriter(io.RawIOBase):
    """Writes through to ``out`` (never closing it) while hashing and counting."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.hasher = Hasher()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._out.write(data)
        self.hasher.update(data)
        return len(data)

    def fileno(self) -> int:
        """The file written to, so that free space on its disk can be checked."""
        return self._out.fileno()

    @property
    def digest(self) -> Digest:
        return self.hasher.digest()

    @property
    def size(self) -> int:
        return self.hasher.size


def read_small(stream: IO[bytes], limit: int, what: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise InvalidArchiveError(f"{what} is larger than {limit} bytes")
    return data
