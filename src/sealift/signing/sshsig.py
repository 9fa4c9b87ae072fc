"""OpenSSH's detached signature format, SSHSIG (PROTOCOL.sshsig in OpenSSH).

The signature covers a hash of the message, not the message, so any size is signed in one pass::

    signed data: "SSHSIG" string(namespace) string(reserved) string(hash_algorithm) string(H(msg))
    blob:        "SSHSIG" uint32(1) string(publickey) string(namespace) string(reserved)
                 string(hash_algorithm) string(signature)

and the file is the blob in base64 between ``-----BEGIN SSH SIGNATURE-----`` lines, wrapped at 70
columns as ssh-keygen writes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from sealift.signing.keys import PublicKey
from sealift.signing.wire import SignatureError, WireReader, string, uint32

MAGIC = b"SSHSIG"
VERSION = 1
HASH_ALGORITHMS = ("sha512", "sha256")
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"
_WIDTH = 70


def signed_data(namespace: str, hash_algorithm: str, message_hash: bytes) -> bytes:
    """What the key actually signs."""
    return (
        MAGIC
        + string(namespace.encode())
        + string(b"")
        + string(hash_algorithm.encode())
        + string(message_hash)
    )


def new_hash(algorithm: str) -> hashlib._Hash:
    if algorithm not in HASH_ALGORITHMS:
        raise SignatureError(f"unsupported signature hash {algorithm!r} (sha512 or sha256)")
    return hashlib.new(algorithm)


@dataclass(frozen=True)
class Signature:
    public_key: PublicKey
    namespace: str
    hash_algorithm: str
    signature: bytes
    """The SSH signature blob: string(algorithm) string(raw signature)."""

    def blob(self) -> bytes:
        return (
            MAGIC
            + uint32(VERSION)
            + string(self.public_key.blob)
            + string(self.namespace.encode())
            + string(b"")
            + string(self.hash_algorithm.encode())
            + string(self.signature)
        )

    def armored(self) -> bytes:
        encoded = base64.b64encode(self.blob()).decode()
        lines = [encoded[i : i + _WIDTH] for i in range(0, len(encoded), _WIDTH)]
        return "\n".join([_BEGIN, *lines, _END, ""]).encode()

    @classmethod
    def parse(cls, armored: bytes, where: str) -> Signature:
        text = armored.decode(errors="replace").strip()
        if not (text.startswith(_BEGIN) and text.endswith(_END)):
            raise SignatureError(f"{where} is not an SSH signature (ssh-keygen -Y sign format)")
        body = "".join(text[len(_BEGIN) : -len(_END)].split())
        try:
            blob = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SignatureError(f"{where} is not valid base64") from exc
        fields = WireReader(blob, where)
        if fields.take(len(MAGIC)) != MAGIC:
            raise SignatureError(f"{where} is not an SSH signature")
        version = fields.uint32()
        if version != VERSION:
            raise SignatureError(f"{where} has signature version {version}; sealift reads 1")
        key = PublicKey(fields.string())
        namespace = fields.text()
        fields.string()  # reserved
        algorithm = fields.text()
        signature = fields.string()
        fields.end()
        return cls(key, namespace, algorithm, signature)

    def verifies(self, namespace: str, message_hash: bytes) -> bool:
        data = signed_data(namespace, self.hash_algorithm, message_hash)
        return self.public_key.verify(self.signature, data)
