"""Signing bundles with SSH keys, and checking them, in OpenSSH's own format.

``stack.tar.sig`` is a detached SSHSIG signature (namespace ``sealift``, sha512) over the
archive's bytes: the file, or every part of a split archive in order. Stock OpenSSH checks it::

    ssh-keygen -Y verify -f allowed_signers -I SIGNER -n sealift -s stack.tar.sig < stack.tar

Signing uses the user's key file (asking for its passphrase when it is encrypted) or, when the
key is in ssh-agent or only its ``.pub`` is given, the agent. Checking is asked for by naming an
allowed_signers file, or by setting ``SEALIFT_ALLOWED_SIGNERS``: ``require_signature`` is what
the loading paths call, and does nothing where nobody asked.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, cast

from sealift.signing.agent import Agent
from sealift.signing.allowed import find_signer, read_allowed_signers
from sealift.signing.keys import (
    AskPassphrase,
    PublicKey,
    load_private_key,
    public_key_line,
    public_key_of,
    read_key_file,
    sign,
)
from sealift.signing.sshsig import Signature, new_hash, signed_data
from sealift.signing.wire import SignatureError
from sealift.split import SIGNATURE_SUFFIX, SplitArchive, find_split, open_parts

__all__ = [
    "ALLOWED_SIGNERS_VARIABLE",
    "HASH_ALGORITHM",
    "NAMESPACE",
    "Bundle",
    "SignatureError",
    "Signer",
    "check_bundle",
    "locate",
    "require_signature",
    "sign_bundle",
]

NAMESPACE = "sealift"
HASH_ALGORITHM = "sha512"
ALLOWED_SIGNERS_VARIABLE = "SEALIFT_ALLOWED_SIGNERS"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Signer:
    """Who signed: the principals of the allowed_signers line that let the key sign."""

    principals: str
    key: PublicKey

    def __str__(self) -> str:
        return f"{self.principals} ({self.key})"


@dataclass(frozen=True)
class Bundle:
    """The bytes a signature covers: one archive file, or the parts of a split archive."""

    base: Path
    split: SplitArchive | None = None

    @property
    def signature_path(self) -> Path:
        return self.base.with_name(self.base.name + SIGNATURE_SUFFIX)

    def __str__(self) -> str:
        return str(self.base)

    def open(self) -> IO[bytes]:
        """The bundle's bytes; a split one checks each part against its sidecar on the way."""
        if self.split is not None:
            return cast(IO[bytes], open_parts(self.split))
        try:
            return self.base.open("rb")
        except OSError as exc:
            raise SignatureError(f"cannot read {self.base}: {exc.strerror}") from exc

    def digest(self, algorithm: str) -> bytes:
        hasher = new_hash(algorithm)
        with self.open() as stream:
            while chunk := stream.read(_CHUNK):
                hasher.update(chunk)
        return hasher.digest()


def locate(path_or_parts: str | Path | Sequence[Path]) -> Bundle:
    """The bundle a path names: an archive file, a split archive's base name, its first part or
    its sidecar; or a list of a split archive's parts."""
    first = path_or_parts if isinstance(path_or_parts, str | Path) else path_or_parts[0]
    split = find_split(first)
    if split is not None:
        return Bundle(split.base, split)
    path = Path(first)
    if path.is_dir():
        raise SignatureError(f"{path} is a directory: sealift signs archive files")
    if not path.is_file():
        raise SignatureError(f"no such archive: {path}")
    return Bundle(path)


SignData = Callable[[bytes], bytes]


def sign_bundle(
    path: str | Path,
    key_path: Path,
    *,
    ask_passphrase: AskPassphrase | None = None,
    agent: Agent | None = None,
) -> tuple[Path, PublicKey]:
    """Sign the bundle at ``path`` with the key in ``key_path``; return the signature file
    written (``<bundle>.sig``) and the key that signed.

    A ``.pub`` file, or a private key whose public half ``agent`` (default: SSH_AUTH_SOCK)
    holds, signs through the agent; otherwise the private key file is used.
    """
    bundle = locate(path)
    agent = agent if agent is not None else Agent.from_environment()
    key, sign_data = _signer(key_path, ask_passphrase, agent)
    message_hash = bundle.digest(HASH_ALGORITHM)
    raw = sign_data(signed_data(NAMESPACE, HASH_ALGORITHM, message_hash))
    signature = Signature(key, NAMESPACE, HASH_ALGORITHM, raw)
    if not signature.verifies(NAMESPACE, message_hash):
        raise SignatureError(f"the signature made with {key} does not verify")
    _write_atomically(bundle.signature_path, signature.armored())
    return bundle.signature_path, key


def _signer(
    key_path: Path, ask_passphrase: AskPassphrase | None, agent: Agent | None
) -> tuple[PublicKey, SignData]:
    data = read_key_file(key_path)
    line = public_key_line(data)
    if line is not None:
        key = PublicKey.from_line(line, str(key_path))
        if agent is None:
            raise SignatureError(
                f"{key_path} is a public key: signing with it needs ssh-agent (SSH_AUTH_SOCK)"
            )
        if not agent.has(key):
            raise SignatureError(f"ssh-agent does not hold {key} ({key_path}): ssh-add it")
        return key, lambda data: agent.sign(key, data)
    public = public_key_of(key_path, data)
    if public is not None and agent is not None and _agent_holds(agent, public):
        return public, lambda data: agent.sign(public, data)
    private = load_private_key(key_path, ask_passphrase)
    return PublicKey.of(private), lambda data: sign(private, data)


def _agent_holds(agent: Agent, key: PublicKey) -> bool:
    """Whether the agent has ``key``; an agent that cannot be reached has nothing (as for ssh)."""
    try:
        return agent.has(key)
    except SignatureError:
        return False


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as exc:
        raise SignatureError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        Path(temp).chmod(0o644)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def check_bundle(
    path: str | Path | Sequence[Path],
    allowed_signers: Path,
    *,
    identity: str | None = None,
    now: datetime | None = None,
    required_by: str = "--allowed-signers",
) -> Signer:
    """Check the bundle's signature against an allowed_signers file and return who signed.

    Refused, with one line: no signature, a key the file does not allow (for namespace
    ``sealift``, now, as ``identity`` when given), any byte changed, a part of a split bundle
    missing, truncated, swapped or changed (naming it).
    """
    bundle = locate(path)
    signers = read_allowed_signers(allowed_signers)
    signature = _read_signature(bundle, required_by)
    if signature.namespace != NAMESPACE:
        raise SignatureError(
            f"{bundle.signature_path} is for namespace {signature.namespace!r}, not {NAMESPACE!r}"
        )
    allowed = find_signer(
        signers, signature.public_key, NAMESPACE, str(allowed_signers), identity=identity, now=now
    )
    if not signature.verifies(NAMESPACE, bundle.digest(signature.hash_algorithm)):
        raise SignatureError(
            f"{bundle} does not match its signature {bundle.signature_path}: "
            "it changed after it was signed"
        )
    return Signer(identity or allowed.principals, signature.public_key)


def _read_signature(bundle: Bundle, required_by: str) -> Signature:
    path = bundle.signature_path
    try:
        armored = path.read_bytes()
    except FileNotFoundError as exc:
        raise SignatureError(
            f"{bundle} is not signed ({path} not found) and {required_by} requires a signature"
        ) from exc
    except OSError as exc:
        raise SignatureError(f"cannot read {path}: {exc.strerror}") from exc
    return Signature.parse(armored, str(path))


def require_signature(
    path_or_parts: str | Path | Sequence[Path],
    allowed_signers: str | Path | None = None,
    *,
    identity: str | None = None,
) -> Signer | None:
    """Check the bundle's signature when one is asked for: ``allowed_signers`` given, or
    ``SEALIFT_ALLOWED_SIGNERS`` set. Return who signed, or None when nobody asked."""
    required_by = "--allowed-signers"
    if allowed_signers is None:
        allowed_signers = os.environ.get(ALLOWED_SIGNERS_VARIABLE) or None
        required_by = ALLOWED_SIGNERS_VARIABLE
    if allowed_signers is None:
        return None
    if isinstance(path_or_parts, str | Path) and str(path_or_parts) == "-":
        raise SignatureError(
            f"{required_by} requires a signed bundle, and one read from stdin cannot be "
            "checked first: name the file"
        )
    return check_bundle(
        path_or_parts, Path(allowed_signers), identity=identity, required_by=required_by
    )
