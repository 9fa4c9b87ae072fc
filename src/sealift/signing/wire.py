"""The SSH wire encoding (RFC 4251 section 5) that signatures, keys and the agent speak."""

from __future__ import annotations

import struct

from sealift.errors import SealiftError


class SignatureError(SealiftError):
    """A signature, key, agent or allowed-signers file is wrong, unusable or does not match."""


def uint32(value: int) -> bytes:
    return struct.pack(">I", value)


def string(data: bytes) -> bytes:
    return uint32(len(data)) + data


def mpint(value: int) -> bytes:
    """A non-negative integer as an SSH mpint: big-endian, minimal, a 0 byte before a high bit."""
    if value < 0:
        raise ValueError("negative mpint")
    data = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return string(data)


class WireReader:
    """Reads SSH wire fields from ``data``; anything short or malformed is one SignatureError
    naming ``what``."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(data)
        self._offset = 0
        self.what = what

    def take(self, size: int) -> bytes:
        if size < 0 or self._offset + size > len(self._data):
            raise SignatureError(f"{self.what} is truncated or malformed")
        chunk = bytes(self._data[self._offset : self._offset + size])
        self._offset += size
        return chunk

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def byte(self) -> int:
        return self.take(1)[0]

    def string(self) -> bytes:
        return self.take(self.uint32())

    def text(self) -> str:
        try:
            return self.string().decode()
        except UnicodeDecodeError as exc:
            raise SignatureError(f"{self.what} is malformed (a name is not UTF-8)") from exc

    def mpint(self) -> int:
        data = self.string()
        if data and data[0] & 0x80:
            raise SignatureError(f"{self.what} holds a negative number")
        return int.from_bytes(data, "big")

    def end(self) -> None:
        if self._offset != len(self._data):
            raise SignatureError(f"{self.what} has trailing data")
