"""SSH keys: public key blobs, signing with a private key file, checking a signature.

Key types: ssh-ed25519, ecdsa-sha2-nistp256/384/521 and ssh-rsa (signing with rsa-sha2-512, as
ssh-keygen does; rsa-sha2-256 is accepted when verifying, SHA-1 ``ssh-rsa`` signatures are not).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from sealift.signing.wire import SignatureError, WireReader, mpint, string

ED25519 = "ssh-ed25519"
RSA = "ssh-rsa"
RSA_SIGNATURE = "rsa-sha2-512"
_RSA_VERIFY = {"rsa-sha2-512": hashes.SHA512, "rsa-sha2-256": hashes.SHA256}
_ECDSA = {
    "ecdsa-sha2-nistp256": (ec.SECP256R1, hashes.SHA256),
    "ecdsa-sha2-nistp384": (ec.SECP384R1, hashes.SHA384),
    "ecdsa-sha2-nistp521": (ec.SECP521R1, hashes.SHA512),
}
_CURVE_NAMES = {
    "secp256r1": "ecdsa-sha2-nistp256",
    "secp384r1": "ecdsa-sha2-nistp384",
    "secp521r1": "ecdsa-sha2-nistp521",
}
_LABELS = {ED25519: "ED25519", RSA: "RSA", **dict.fromkeys(_ECDSA, "ECDSA")}
_OPENSSH_PRIVATE = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_OPENSSH_MAGIC = b"openssh-key-v1\x00"

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
AskPassphrase = Callable[[Path], bytes]


@dataclass(frozen=True)
class PublicKey:
    """A public key as its SSH wire blob (what signatures, agents and allowed_signers carry)."""

    blob: bytes

    @property
    def key_type(self) -> str:
        return WireReader(self.blob, "a public key").text()

    @property
    def fingerprint(self) -> str:
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")
        return f"SHA256:{digest}"

    def __str__(self) -> str:
        return f"{_LABELS.get(self.key_type, self.key_type)} key {self.fingerprint}"

    @classmethod
    def from_line(cls, line: str, what: str) -> PublicKey:
        """``TYPE BASE64 [COMMENT]`` as in a .pub file or an allowed_signers line."""
        fields = line.split()
        if len(fields) < 2:
            raise SignatureError(f"{what} is not a public key line")
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SignatureError(f"{what}: the key is not valid base64") from exc
        key = cls(blob)
        if key.key_type != fields[0]:
            raise SignatureError(f"{what}: key type {fields[0]} does not match its key")
        return key

    @classmethod
    def of(cls, key: PrivateKey) -> PublicKey:
        line = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return cls(base64.b64decode(line.split()[1]))

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` (an SSH signature blob) is this key's signature of ``data``."""
        fields = WireReader(signature, "the signature")
        algorithm = fields.text()
        raw = fields.string()
        fields.end()
        key_type = self.key_type
        _check_algorithm(key_type, algorithm)
        public = self._load()
        try:
            if isinstance(public, ed25519.Ed25519PublicKey):
                public.verify(raw, data)
            elif isinstance(public, ec.EllipticCurvePublicKey):
                numbers = WireReader(raw, "the ECDSA signature")
                r, s = numbers.mpint(), numbers.mpint()
                numbers.end()
                public.verify(encode_dss_signature(r, s), data, ec.ECDSA(_ECDSA[key_type][1]()))
            elif isinstance(public, rsa.RSAPublicKey):
                public.verify(raw, data, padding.PKCS1v15(), _RSA_VERIFY[algorithm]())
            else:
                raise SignatureError(f"{key_type} keys are not supported")
        except InvalidSignature:
            return False
        return True

    def _load(self) -> object:
        line = f"{self.key_type} {base64.b64encode(self.blob).decode()}".encode()
        try:
            return serialization.load_ssh_public_key(line)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SignatureError(f"unusable public key ({self.key_type}): {exc}") from exc


def _check_algorithm(key_type: str, algorithm: str) -> None:
    if "-cert-" in key_type:
        raise SignatureError(
            "signed with an SSH certificate: sealift checks plain keys (use ssh-keygen -Y verify)"
        )
    if key_type not in _LABELS:
        raise SignatureError(f"{key_type} keys are not supported (ed25519, ecdsa and rsa are)")
    fits = algorithm in _RSA_VERIFY if key_type == RSA else algorithm == key_type
    if not fits:
        raise SignatureError(f"a {algorithm} signature does not fit a {key_type} key")


def sign(key: PrivateKey, data: bytes) -> bytes:
    """The SSH signature blob of ``data`` made with ``key`` (rsa-sha2-512 for RSA keys)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return string(ED25519.encode()) + string(key.sign(data))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        name = _CURVE_NAMES.get(key.curve.name)
        if name is None:
            raise SignatureError(f"ECDSA keys on {key.curve.name} are not supported")
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_ECDSA[name][1]())))
        return string(name.encode()) + string(mpint(r) + mpint(s))
    signature = key.sign(data, padding.PKCS1v15(), hashes.SHA512())
    return string(RSA_SIGNATURE.encode()) + string(signature)


def load_private_key(path: Path, ask_passphrase: AskPassphrase | None) -> PrivateKey:
    """The private key in ``path`` (OpenSSH or PEM format), asking for its passphrase through
    ``ask_passphrase`` when it is encrypted."""
    data = read_key_file(path)
    try:
        return _load(data, None, path)
    except TypeError:
        pass  # encrypted
    if ask_passphrase is None:
        raise SignatureError(
            f"{path} is encrypted and there is no terminal to ask for its passphrase: "
            f"add it to ssh-agent (ssh-add {path}) and sign again"
        )
    try:
        return _load(data, ask_passphrase(path), path)
    except (TypeError, ValueError) as exc:
        raise SignatureError(f"wrong passphrase for {path}") from exc


def _load(data: bytes, password: bytes | None, path: Path) -> PrivateKey:
    """Raises TypeError when the key is encrypted and ``password`` is None, ValueError when it
    does not decrypt it."""
    try:
        if data.lstrip().startswith(_OPENSSH_PRIVATE):
            key: object = serialization.load_ssh_private_key(data, password)
        else:
            key = serialization.load_pem_private_key(data, password)
    except UnsupportedAlgorithm as exc:
        raise SignatureError(f"{path}: unsupported key ({exc})") from exc
    except ValueError:
        if password is not None:
            raise
        raise SignatureError(f"{path} is not an SSH private key file") from None
    if not isinstance(key, PrivateKey):
        raise SignatureError(
            f"{path} holds a {type(key).__name__}: sealift signs with ed25519, ecdsa or rsa keys"
        )
    return key


def read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise SignatureError(f"no such key file: {path}") from exc
    except OSError as exc:
        raise SignatureError(f"cannot read {path}: {exc.strerror}") from exc


def public_key_line(data: bytes) -> str | None:
    """The key line when ``data`` is a public key file (``TYPE BASE64 [COMMENT]``), else None."""
    try:
        text = data.decode().strip()
    except UnicodeDecodeError:
        return None
    first = text.split(maxsplit=1)[0] if text else ""
    if "\n" in text or first.startswith("-----") or first.lower() != first:
        return None
    return text if first.startswith(("ssh-", "ecdsa-", "sk-")) else None


def public_key_of(path: Path, data: bytes) -> PublicKey | None:
    """The public half of the key file ``path`` without decrypting it: an OpenSSH private key
    carries it in the clear; otherwise ``path.pub`` is read when it exists."""
    if data.lstrip().startswith(_OPENSSH_PRIVATE):
        return _openssh_public_key(data, path)
    pub = path.with_name(path.name + ".pub")
    if pub.is_file():
        return PublicKey.from_line(pub.read_text(), str(pub))
    return None


def _openssh_public_key(data: bytes, path: Path) -> PublicKey:
    body = b"".join(line.strip() for line in data.strip().splitlines()[1:-1])
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{path} is not a valid OpenSSH private key") from exc
    fields = WireReader(raw, f"private key {path}")
    if fields.take(len(_OPENSSH_MAGIC)) != _OPENSSH_MAGIC:
        raise SignatureError(f"{path} is not a valid OpenSSH private key")
    fields.string()  # cipher
    fields.string()  # kdf
    fields.string()  # kdf options
    if fields.uint32() < 1:
        raise SignatureError(f"{path} holds no key")
    return PublicKey(fields.string())
