"""Signatures: SSHSIG made with key files or an agent, checked against allowed_signers rules,
refused with one line whenever a byte, a part or the signer is not what was signed.

Keys are made in-process here; tests/integration/test_signing.py proves the same against the
real ssh-keygen and ssh-agent.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from sealift.signing import (
    ALLOWED_SIGNERS_VARIABLE,
    SignatureError,
    check_bundle,
    require_signature,
    sign_bundle,
)
from sealift.signing.agent import Agent
from sealift.signing.allowed import match_pattern_list, parse_allowed_signers
from sealift.signing.keys import PrivateKey, PublicKey, sign
from sealift.signing.sshsig import Signature
from sealift.signing.wire import WireReader, mpint, string, uint32
from sealift.split import PartError, SplitArchive, write_split
from tests.support.cli import sealift_env

KEY_MAKERS: dict[str, Callable[[], PrivateKey]] = {
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ecdsa-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ecdsa-p521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}
PAYLOAD = os.urandom(200_000)


@pytest.fixture(autouse=True)
def no_ambient_agent_or_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv(ALLOWED_SIGNERS_VARIABLE, raising=False)


def write_key(path: Path, key: PrivateKey, passphrase: bytes | None = None) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
        )
    )
    path.with_name(path.name + ".pub").write_text(public_line(key) + " me@laptop\n")
    return path


def public_line(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def allow(
    path: Path, key: PrivateKey, principals: str = "release@example.com", options: str = ""
) -> Path:
    path.write_text(f"# who may sign\n\n{principals} {options} {public_line(key)} a comment\n")
    return path


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "stack.tar"
    path.write_bytes(PAYLOAD)
    return path


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


# ------------------------------------------------------------------------ sign and check
@pytest.mark.parametrize("kind", sorted(KEY_MAKERS))
def test_each_key_type_signs_and_the_signature_checks(
    kind: str, bundle: Path, tmp_path: Path
) -> None:
    key = KEY_MAKERS[kind]()
    written, signed_with = sign_bundle(bundle, write_key(tmp_path / "id", key))
    assert written == tmp_path / "stack.tar.sig"
    assert written.read_text().startswith("-----BEGIN SSH SIGNATURE-----\n")
    assert signed_with == PublicKey.of(key)
    signer = check_bundle(bundle, allow(tmp_path / "allowed", key))
    assert signer.principals == "release@example.com"
    assert signer.key.fingerprint.startswith("SHA256:")


def test_the_signature_is_sshsig_over_sha512_in_namespace_sealift(
    bundle: Path, tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    written, _ = sign_bundle(bundle, write_key(tmp_path / "id", ed_key))
    signature = Signature.parse(written.read_bytes(), "sig")
    assert (signature.namespace, signature.hash_algorithm) == ("sealift", "sha512")
    assert Signature.parse(signature.armored(), "again") == signature


@pytest.mark.parametrize(
    "tamper",
    [
        lambda data: data[:-1],
        lambda data: data + b"\0",
        lambda data: data[:1000] + bytes([data[1000] ^ 1]) + data[1001:],
        lambda data: b"",
    ],
    ids=["truncated", "extended", "one-bit", "emptied"],
)
def test_a_bundle_changed_after_signing_is_refused(
    tamper: Callable[[bytes], bytes],
    bundle: Path,
    tmp_path: Path,
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    sign_bundle(bundle, write_key(tmp_path / "id", ed_key))
    bundle.write_bytes(tamper(PAYLOAD))
    with pytest.raises(SignatureError, match="changed after it was signed"):
        check_bundle(bundle, allow(tmp_path / "allowed", ed_key))


def test_a_key_the_file_does_not_list_is_refused(
    bundle: Path, tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    sign_bundle(bundle, write_key(tmp_path / "id", ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(SignatureError, match=r"signed by ED25519 key SHA256:.*does not list"):
        check_bundle(bundle, allow(tmp_path / "allowed", ed_key))


def test_an_unsigned_bundle_loads_where_nobody_asked_and_is_refused_where_asked(
    bundle: Path, tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert require_signature(bundle) is None
    allowed = allow(tmp_path / "allowed", ed_key)
    with pytest.raises(SignatureError, match=r"not signed \(.*stack\.tar\.sig not found\)"):
        require_signature(bundle, allowed)
    monkeypatch.setenv(ALLOWED_SIGNERS_VARIABLE, str(allowed))
    with pytest.raises(SignatureError, match=f"{ALLOWED_SIGNERS_VARIABLE} requires a signature"):
        require_signature(bundle)
    with pytest.raises(SignatureError, match="stdin cannot be checked first"):
        require_signature("-")
    sign_bundle(bundle, write_key(tmp_path / "id", ed_key))
    signer = require_signature(bundle)
    assert signer is not None and signer.principals == "release@example.com"


def test_a_signature_for_another_namespace_is_refused(
    bundle: Path, tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    written, _ = sign_bundle(bundle, write_key(tmp_path / "id", ed_key))
    signature = Signature.parse(written.read_bytes(), "sig")
    other = Signature(signature.public_key, "git", "sha512", signature.signature)
    written.write_bytes(other.armored())
    with pytest.raises(SignatureError, match="namespace 'git', not 'sealift'"):
        check_bundle(bundle, allow(tmp_path / "allowed", ed_key))


@pytest.mark.parametrize(
    "garbage", [b"", b"hello", b"-----BEGIN SSH SIGNATURE-----\n!!\n-----END SSH SIGNATURE-----"]
)
def test_a_signature_file_that_is_not_one_is_refused(
    garbage: bytes, bundle: Path, tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    (tmp_path / "stack.tar.sig").write_bytes(garbage)
    with pytest.raises(SignatureError, match=r"stack\.tar\.sig"):
        check_bundle(bundle, allow(tmp_path / "allowed", ed_key))


# -------------------------------------------------------------------------- allowed_signers
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("principals", "options", "identity", "allowed"),
    [
        ("*@example.com", "", "release@example.com", True),
        ("*@example.com", "", "release@evil.com", False),
        ('"ops@example.com,rel?ase@example.com"', "", "release@example.com", True),
        ("*@example.com,!intern@example.com", "", "intern@example.com", False),
        ("release@example.com", 'namespaces="git,seal*"', None, True),
        ("release@example.com", 'namespaces="git,file"', None, False),
        ("release@example.com", 'namespaces="*,!sealift"', None, False),
        ("release@example.com", 'valid-after="20260101"', None, True),
        ("release@example.com", 'valid-after="20270101Z"', None, False),
        ("release@example.com", 'valid-before="202605311200Z"', None, False),
        (
            "release@example.com",
            'valid-before="20260601120001Z",VALID-AFTER="20250101"',
            None,
            True,
        ),
    ],
)
def test_allowed_signers_rules(
    principals: str,
    options: str,
    identity: str | None,
    allowed: bool,
    bundle: Path,
    tmp_path: Path,
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    sign_bundle(bundle, write_key(tmp_path / "id", ed_key))
    policy = allow(tmp_path / "allowed", ed_key, principals, options)
    if allowed:
        signer = check_bundle(bundle, policy, identity=identity, now=NOW)
        assert signer.principals == (identity or principals.strip('"'))
    else:
        with pytest.raises(SignatureError, match="does not allow"):
            check_bundle(bundle, policy, identity=identity, now=NOW)


def test_cert_authority_lines_are_not_supported_and_the_refusal_says_so(
    bundle: Path, tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    sign_bundle(bundle, write_key(tmp_path / "id", ed_key))
    policy = allow(tmp_path / "allowed", ed_key, "*@example.com", "cert-authority")
    with pytest.raises(SignatureError, match="cert-authority lines are not supported"):
        check_bundle(bundle, policy)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice", "not a public key line"),
        ("alice bogus=1 ssh-ed25519 AAAA", "unknown option 'bogus'"),
        ('alice namespaces="a",namespaces="b" ssh-ed25519 AAAA', "given twice"),
        ('alice valid-after="tomorrow" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5', "invalid time"),
        ("alice ssh-ed25519 not*base64", "not valid base64"),
        (
            "alice ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "does not match",
        ),
        ('"alice ssh-ed25519 AAAA', "unterminated quote"),
    ],
)
def test_malformed_allowed_signers_lines_are_named(line: str, message: str) -> None:
    with pytest.raises(SignatureError, match=rf"^signers line 1\b.*{message}"):
        parse_allowed_signers(line, "signers")


@given(st.text(alphabet="ab.@", max_size=8), st.text(alphabet="ab.@", max_size=8))
def test_a_pattern_without_wildcards_matches_only_itself(value: str, pattern: str) -> None:
    if pattern:
        assert match_pattern_list(value, pattern) == (value == pattern)
        assert match_pattern_list(value, "*") is True
        assert match_pattern_list(value, f"*,!{pattern}") == (value != pattern)


# -------------------------------------------------------------------------------- split
def split_bundle(tmp_path: Path) -> SplitArchive:
    base = tmp_path / "stack.tar"

    def write(out: IO[bytes]) -> None:
        out.write(PAYLOAD)

    write_split(base, 70_000, write)
    return SplitArchive(base)


def test_a_split_bundle_is_signed_over_its_parts_in_order(
    tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    split = split_bundle(tmp_path)
    key = write_key(tmp_path / "id", ed_key)
    written, _ = sign_bundle(split.part(0), key)
    assert written == tmp_path / "stack.tar.sig"
    single = tmp_path / "single" / "stack.tar"
    single.parent.mkdir()
    single.write_bytes(PAYLOAD)
    sign_bundle(single, key)
    policy = allow(tmp_path / "allowed", ed_key)
    assert check_bundle(single, policy).principals == check_bundle(split.base, policy).principals
    parts = [split.part(n) for n in range(3)]
    assert require_signature(parts, policy) is not None


def test_a_swapped_part_of_a_signed_bundle_is_named(
    tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    split = split_bundle(tmp_path)
    sign_bundle(split.base, write_key(tmp_path / "id", ed_key))
    first, second = split.part(0).read_bytes(), split.part(1).read_bytes()
    split.part(0).write_bytes(second)
    split.part(1).write_bytes(first)
    with pytest.raises(PartError, match=r"stack\.tar\.000 holds what .* stack\.tar\.001"):
        check_bundle(split.base, allow(tmp_path / "allowed", ed_key))


def test_a_part_and_its_sidecar_changed_together_still_fail_the_signature(
    tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    split = split_bundle(tmp_path)
    sign_bundle(split.base, write_key(tmp_path / "id", ed_key))
    forged = b"\0" * 70_000
    split.part(1).write_bytes(forged)
    sidecar = split.sidecar.read_text()
    listed = split.read_index().parts[1].sha256
    split.sidecar.write_text(sidecar.replace(listed, hashlib.sha256(forged).hexdigest()))
    with pytest.raises(SignatureError, match="changed after it was signed"):
        check_bundle(split.base, allow(tmp_path / "allowed", ed_key))


def test_a_broken_split_bundle_is_not_signed(
    tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    split = split_bundle(tmp_path)
    split.part(2).unlink()
    with pytest.raises(PartError, match=r"stack\.tar\.002 is missing"):
        sign_bundle(split.base, write_key(tmp_path / "id", ed_key))
    assert not (tmp_path / "stack.tar.sig").exists()


# ------------------------------------------------------------------------- encrypted keys
def test_an_encrypted_key_asks_for_its_passphrase(
    bundle: Path, tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    key = write_key(tmp_path / "id", ed_key, b"correct horse")
    asked: list[Path] = []

    def ask(path: Path) -> bytes:
        asked.append(path)
        return b"correct horse"

    sign_bundle(bundle, key, ask_passphrase=ask)
    assert asked == [key]
    assert check_bundle(bundle, allow(tmp_path / "allowed", ed_key))


def test_an_encrypted_key_without_a_terminal_or_with_a_wrong_passphrase_fails_in_one_line(
    bundle: Path, tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    key = write_key(tmp_path / "id", ed_key, b"correct horse")
    with pytest.raises(SignatureError, match=r"encrypted and there is no terminal.*ssh-add"):
        sign_bundle(bundle, key)
    with pytest.raises(SignatureError, match="wrong passphrase"):
        sign_bundle(bundle, key, ask_passphrase=lambda path: b"battery staple")
    assert not (tmp_path / "stack.tar.sig").exists()


def test_the_cli_without_a_terminal_fails_in_one_line(
    bundle: Path, tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    key = write_key(tmp_path / "id", ed_key, b"correct horse")
    result = subprocess.run(
        [sys.executable, "-m", "sealift", "sign", str(bundle), "--key", str(key)],
        capture_output=True,
        text=True,
        env={k: v for k, v in sealift_env().items() if k != "SSH_AUTH_SOCK"},
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # no controlling terminal
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("sealift: error: ") and "no terminal" in result.stderr


# ---------------------------------------------------------------------------------- agent
class FakeAgent:
    """An ssh-agent speaking the real protocol over a unix socket, holding ``keys``."""

    def __init__(self, path: Path, keys: list[PrivateKey]) -> None:
        self.keys = {PublicKey.of(key).blob: key for key in keys}
        self.signed = 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                length = int.from_bytes(connection.recv(4), "big")
                request = b""
                while len(request) < length:
                    request += connection.recv(length - len(request))
                connection.sendall(string(self.answer(request)))

    def answer(self, request: bytes) -> bytes:
        if request[0] == 11:
            listed = b"".join(string(blob) + string(b"comment") for blob in self.keys)
            return bytes([12]) + uint32(len(self.keys)) + listed
        fields = WireReader(request[1:], "request")
        blob, data, flags = fields.string(), fields.string(), fields.uint32()
        key = self.keys.get(blob)
        if request[0] != 13 or key is None or (isinstance(key, rsa.RSAPrivateKey) and flags != 4):
            return bytes([5])
        self.signed += 1
        return bytes([14]) + string(sign(key, data))

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def agent_with(tmp_path: Path) -> Iterator[Callable[[list[PrivateKey]], FakeAgent]]:
    agents: list[FakeAgent] = []

    def start(keys: list[PrivateKey]) -> FakeAgent:
        agents.append(FakeAgent(tmp_path / f"agent{len(agents)}.sock", keys))
        return agents[-1]

    yield start
    for agent in agents:
        agent.close()


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-p384", "rsa"])
def test_a_public_key_signs_through_the_agent(
    kind: str,
    bundle: Path,
    tmp_path: Path,
    agent_with: Callable[[list[PrivateKey]], FakeAgent],
) -> None:
    key = KEY_MAKERS[kind]()
    agent = agent_with([ed25519.Ed25519PrivateKey.generate(), key])
    pub = write_key(tmp_path / "id", key).with_name("id.pub")
    (tmp_path / "id").unlink()
    sign_bundle(bundle, pub, agent=Agent(str(tmp_path / "agent0.sock")))
    assert agent.signed == 1
    assert check_bundle(bundle, allow(tmp_path / "allowed", key))


def test_an_encrypted_key_the_agent_holds_needs_no_passphrase(
    bundle: Path,
    tmp_path: Path,
    ed_key: ed25519.Ed25519PrivateKey,
    agent_with: Callable[[list[PrivateKey]], FakeAgent],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = agent_with([ed_key])
    key = write_key(tmp_path / "id", ed_key, b"secret")
    (tmp_path / "id.pub").unlink()  # the public half comes from the key file's clear header
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent0.sock"))
    sign_bundle(bundle, key)
    assert agent.signed == 1


def test_a_public_key_the_agent_lacks_or_without_an_agent_is_one_clear_error(
    bundle: Path,
    tmp_path: Path,
    ed_key: ed25519.Ed25519PrivateKey,
    agent_with: Callable[[list[PrivateKey]], FakeAgent],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pub = write_key(tmp_path / "id", ed_key).with_name("id.pub")
    with pytest.raises(SignatureError, match="needs ssh-agent"):
        sign_bundle(bundle, pub)
    agent_with([ed25519.Ed25519PrivateKey.generate()])
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent0.sock"))
    with pytest.raises(SignatureError, match="ssh-agent does not hold ED25519 key"):
        sign_bundle(bundle, pub)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "gone.sock"))
    with pytest.raises(SignatureError, match="cannot reach ssh-agent"):
        sign_bundle(bundle, pub)
    sign_bundle(bundle, tmp_path / "id")  # a private key file works without a working agent


# ----------------------------------------------------------------------------------- wire
@given(st.integers(min_value=0, max_value=2**600))
def test_mpints_round_trip(value: int) -> None:
    assert WireReader(mpint(value), "mpint").mpint() == value
    encoded = mpint(value)[4:]
    assert not encoded or encoded[0] != 0 or encoded[1] & 0x80  # minimal


def test_the_cli_signs_and_verify_names_the_signer(
    tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    from sealift.samples import write_demo_archive

    archive = write_demo_archive(tmp_path / "stack.tar")
    key = write_key(tmp_path / "id", ed_key)
    env = {k: v for k, v in sealift_env().items() if k != "SSH_AUTH_SOCK"}

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "sealift", *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, env=env)

    signed = run("sign", archive, "--key", key)
    assert signed.returncode == 0, signed.stderr
    assert "Signed" in signed.stdout and "ED25519 key SHA256:" in signed.stdout
    policy = allow(tmp_path / "allowed", ed_key)
    checked = run("verify", archive, "--allowed-signers", policy, "--signer", "release@example.com")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("Good signature from release@example.com (ED25519 key")
    lone_signer = run("verify", archive, "--signer", "x")
    assert lone_signer.returncode == 2


def test_verify_help_names_the_variable_that_requires_signatures() -> None:
    from click.testing import CliRunner

    from sealift.cli import cli

    result = CliRunner().invoke(cli, ["verify", "--help"], terminal_width=200)
    assert f"${ALLOWED_SIGNERS_VARIABLE}" in result.output
