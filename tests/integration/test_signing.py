"""Signatures and split media against the real OpenSSH and Docker.

* ``sealift sign`` signatures are checked by stock ``ssh-keygen -Y verify`` (every key type; over
  ``cat`` of the parts for a split bundle), and ``sealift verify`` checks what
  ``ssh-keygen -Y sign -n sealift`` made;
* signing through a real ``ssh-agent`` (a ``.pub`` key, or an encrypted key the agent holds);
* an encrypted key asks for its passphrase on a real terminal (a pty);
* a 3-part bundle written by ``sealift save --split`` is read by ``cat parts | docker load``
  (Docker 20.10) and by ``sealift load`` given its first part.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealift.samples import write_demo_archive
from tests.support.cli import run_sealift, sealift_env
from tests.support.dockerd import DockerDaemon, image_id
from tests.support.images import ImageSet
from tests.support.peers import missing_tools
from tests.support.require import require

pytestmark = pytest.mark.openssh

KEY_TYPES = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa-256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa-384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa-521": ["-t", "ecdsa", "-b", "521"],
    "rsa": ["-t", "rsa", "-b", "2048"],
}
SIGNER = "release@example.com"


@pytest.fixture(autouse=True)
def openssh(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = missing_tools("ssh-keygen", "ssh-agent", "ssh-add")
    require(f"missing {', '.join(missing)} (openssh-client)" if missing else None)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("SEALIFT_ALLOWED_SIGNERS", raising=False)


def keygen(path: Path, kind: str = "ed25519", passphrase: str = "") -> Path:
    command = [
        "ssh-keygen",
        "-q",
        *KEY_TYPES[kind],
        "-N",
        passphrase,
        "-C",
        SIGNER,
        "-f",
        str(path),
    ]
    subprocess.run(command, check=True, capture_output=True)
    return path


def allowed_signers(directory: Path, *keys: Path) -> Path:
    lines = []
    for key in keys:
        key_type, blob = key.with_name(key.name + ".pub").read_text().split()[:2]
        lines.append(f'{SIGNER} namespaces="sealift" {key_type} {blob}\n')
    path = directory / "allowed_signers"
    path.write_text("".join(lines))
    return path


def ssh_keygen_verify(
    allowed: Path, signature: Path, data: bytes
) -> subprocess.CompletedProcess[bytes]:
    command = ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", SIGNER, "-n", "sealift"]
    return subprocess.run(
        [*command, "-s", str(signature)], input=data, capture_output=True, check=False
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sealift archive of the sample images (1.4 MB)."""
    directory = tmp_path_factory.mktemp("demo")
    source = write_demo_archive(directory / "docker-save.tar")
    run_sealift("convert", source, directory / "stack.tar", "-q").assert_ok()
    return directory / "stack.tar"


def copy_of(archive: Path, directory: Path) -> Path:
    target = directory / archive.name
    target.write_bytes(archive.read_bytes())
    return target


def split_copy(archive: Path, directory: Path, parts: int = 3) -> Path:
    size = -(-archive.stat().st_size // parts)
    base = directory / "stack.tar"
    run_sealift("convert", archive, base, "--split", str(size), "-q").assert_ok()
    assert sorted(p.name for p in directory.glob("stack.tar.0*")) == [
        f"stack.tar.{n:03d}" for n in range(parts)
    ]
    return base


def joined_parts(base: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(base.parent.glob(f"{base.name}.[0-9]*")))


# -------------------------------------------------------------------------- both directions
@pytest.mark.parametrize("kind", sorted(KEY_TYPES))
def test_ssh_keygen_verifies_what_sealift_signs(kind: str, demo: Path, tmp_path: Path) -> None:
    key = keygen(tmp_path / "id", kind)
    archive = copy_of(demo, tmp_path)
    run_sealift("sign", archive, "--key", key).assert_ok()
    checked = ssh_keygen_verify(
        allowed_signers(tmp_path, key), tmp_path / "stack.tar.sig", archive.read_bytes()
    )
    assert checked.returncode == 0, checked.stderr
    assert f'Good "sealift" signature for {SIGNER}' in checked.stdout.decode()


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-384", "rsa"])
def test_sealift_verifies_what_ssh_keygen_signs(kind: str, demo: Path, tmp_path: Path) -> None:
    key = keygen(tmp_path / "id", kind)
    archive = copy_of(demo, tmp_path)
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-n", "sealift", "-f", key, archive],
        check=True,
        capture_output=True,
    )
    result = run_sealift(
        "verify", archive, "--allowed-signers", allowed_signers(tmp_path, key)
    ).assert_ok()
    assert result.stdout.splitlines()[0].startswith(f"Good signature from {SIGNER} (")


def test_a_signature_for_another_namespace_is_refused_by_both(demo: Path, tmp_path: Path) -> None:
    key = keygen(tmp_path / "id")
    archive = copy_of(demo, tmp_path)
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-n", "file", "-f", key, archive],
        check=True,
        capture_output=True,
    )
    allowed = allowed_signers(tmp_path, key)
    line = run_sealift("verify", archive, "--allowed-signers", allowed).assert_one_line_error()
    assert "namespace 'file', not 'sealift'" in line
    assert (
        ssh_keygen_verify(allowed, tmp_path / "stack.tar.sig", archive.read_bytes()).returncode != 0
    )


def test_a_changed_archive_is_refused_by_both(demo: Path, tmp_path: Path) -> None:
    key = keygen(tmp_path / "id")
    archive = copy_of(demo, tmp_path)
    run_sealift("sign", archive, "--key", key, "-q").assert_ok()
    data = bytearray(archive.read_bytes())
    data[-100] ^= 1  # in the tar's padding: every digest inside still checks
    archive.write_bytes(bytes(data))
    allowed = allowed_signers(tmp_path, key)
    assert ssh_keygen_verify(allowed, tmp_path / "stack.tar.sig", bytes(data)).returncode != 0
    line = run_sealift("verify", archive, "--allowed-signers", allowed).assert_one_line_error()
    assert "changed after it was signed" in line
    assert run_sealift("verify", archive).ok, "without --allowed-signers only digests count"


def test_an_unsigned_bundle_is_refused_only_where_a_signature_is_required(
    demo: Path, tmp_path: Path
) -> None:
    key = keygen(tmp_path / "id")
    archive = copy_of(demo, tmp_path)
    allowed = allowed_signers(tmp_path, key)
    run_sealift("verify", archive).assert_ok()
    line = run_sealift(
        "verify", archive, env={**os.environ, "SEALIFT_ALLOWED_SIGNERS": str(allowed)}
    ).assert_one_line_error()
    assert "is not signed" in line and "SEALIFT_ALLOWED_SIGNERS" in line


# ---------------------------------------------------------------------------------- split
def test_a_split_bundle_is_signed_over_cat_of_its_parts(demo: Path, tmp_path: Path) -> None:
    key = keygen(tmp_path / "id", "ecdsa-256")
    base = split_copy(demo, tmp_path)
    run_sealift("sign", f"{base}.000", "--key", key, "-q").assert_ok()
    allowed = allowed_signers(tmp_path, key)
    checked = ssh_keygen_verify(allowed, tmp_path / "stack.tar.sig", joined_parts(base))
    assert checked.returncode == 0, checked.stderr
    assert run_sealift("verify", base, "--allowed-signers", allowed).ok


def test_sealift_verifies_a_split_bundle_ssh_keygen_signed_from_stdin(
    demo: Path, tmp_path: Path
) -> None:
    key = keygen(tmp_path / "id")
    base = split_copy(demo, tmp_path)
    signed = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-n", "sealift", "-f", key],
        input=joined_parts(base),
        capture_output=True,
        check=True,
    )
    (tmp_path / "stack.tar.sig").write_bytes(signed.stdout)
    allowed = allowed_signers(tmp_path, key)
    run_sealift("verify", f"{base}.000", "--allowed-signers", allowed).assert_ok()


@pytest.mark.parametrize("damage", ["changed", "truncated", "reordered", "missing"])
def test_a_damaged_part_of_a_signed_bundle_is_named_in_one_line(
    damage: str, demo: Path, tmp_path: Path
) -> None:
    key = keygen(tmp_path / "id")
    base = split_copy(demo, tmp_path)
    run_sealift("sign", base, "--key", key, "-q").assert_ok()
    part0, part1 = Path(f"{base}.000"), Path(f"{base}.001")
    if damage == "changed":
        data = bytearray(part1.read_bytes())
        data[5000] ^= 1
        part1.write_bytes(bytes(data))
    elif damage == "truncated":
        part1.write_bytes(part1.read_bytes()[:-1])
    elif damage == "reordered":
        first, second = part0.read_bytes(), part1.read_bytes()
        part0.write_bytes(second)
        part1.write_bytes(first)
    else:
        part1.unlink()
    allowed = allowed_signers(tmp_path, key)
    line = run_sealift("verify", base, "--allowed-signers", allowed).assert_one_line_error()
    expected = {
        "changed": "stack.tar.001 changed",
        "truncated": "stack.tar.001 is truncated",
        "reordered": "stack.tar.000 holds what stack.tar.parts.json lists as stack.tar.001",
        "missing": "stack.tar.001 is missing",
    }[damage]
    assert expected in line
    if damage != "missing":
        assert (
            ssh_keygen_verify(allowed, tmp_path / "stack.tar.sig", joined_parts(base)).returncode
            != 0
        )


# ---------------------------------------------------------------------------------- agent
@pytest.fixture
def agent(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private ssh-agent; yields the environment that points at it."""
    socket_path = tmp_path / "agent.sock"
    process = subprocess.Popen(
        ["ssh-agent", "-D", "-a", socket_path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)
        yield {**os.environ, "SSH_AUTH_SOCK": str(socket_path)}
    finally:
        process.terminate()
        process.wait(timeout=10)


def ssh_add(key: Path, env: dict[str, str], passphrase: str = "") -> None:
    askpass = key.with_name("askpass")
    askpass.write_text(f"#!/bin/sh\necho '{passphrase}'\n")
    askpass.chmod(0o700)
    env = {**env, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    subprocess.run(
        ["ssh-add", key], env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-521", "rsa"])
def test_a_public_key_signs_through_a_real_agent(
    kind: str, agent: dict[str, str], demo: Path, tmp_path: Path
) -> None:
    key = keygen(tmp_path / "id", kind)
    ssh_add(key, agent)
    allowed = allowed_signers(tmp_path, key)
    key.unlink()  # only the agent holds the private half now
    archive = copy_of(demo, tmp_path)
    run_sealift("sign", archive, "--key", f"{key}.pub", env=agent).assert_ok()
    checked = ssh_keygen_verify(allowed, tmp_path / "stack.tar.sig", archive.read_bytes())
    assert checked.returncode == 0, checked.stderr


def test_an_encrypted_key_in_the_agent_signs_without_asking(
    agent: dict[str, str], demo: Path, tmp_path: Path
) -> None:
    key = keygen(tmp_path / "id", passphrase="correct horse")
    ssh_add(key, agent, "correct horse")
    archive = copy_of(demo, tmp_path)
    signed = subprocess.run(
        [sys.executable, "-m", "sealift", "sign", archive, "--key", key],
        env=sealift_env(agent),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # no terminal: a passphrase prompt would fail
        check=False,
    )
    assert signed.returncode == 0, signed.stderr
    run_sealift("verify", archive, "--allowed-signers", allowed_signers(tmp_path, key)).assert_ok()


# ------------------------------------------------------------------------------ terminal
def test_an_encrypted_key_asks_for_its_passphrase_on_the_terminal(
    demo: Path, tmp_path: Path
) -> None:
    key = keygen(tmp_path / "id", "ecdsa-384", passphrase="correct horse")
    archive = copy_of(demo, tmp_path)
    env = {k: v for k, v in sealift_env().items() if k != "SSH_AUTH_SOCK"}
    pid, terminal = pty.fork()
    if pid == 0:  # the child: sealift with the pty as its controlling terminal
        os.execve(
            sys.executable,
            [sys.executable, "-m", "sealift", "sign", str(archive), "--key", str(key)],
            env,
        )
    output = read_until(terminal, b"Enter passphrase for ")
    os.write(terminal, b"correct horse\n")
    output += read_until(terminal, b"Signed ")
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0, output
    checked = ssh_keygen_verify(
        allowed_signers(tmp_path, key), tmp_path / "stack.tar.sig", archive.read_bytes()
    )
    assert checked.returncode == 0, checked.stderr


def read_until(fd: int, marker: bytes, timeout: float = 60) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} on the terminal; saw {seen!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    assert marker in seen, seen
    return seen


# ---------------------------------------------------------------------------------- docker
@pytest.mark.engine
def test_a_three_part_save_loads_with_cat_into_docker_and_with_sealift(
    source_engine: DockerDaemon,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    tmp_path: Path,
) -> None:
    refs = [test_images.base.ref, test_images.app1.ref]
    whole = tmp_path / "whole.tar"
    run_sealift("save", *refs, "-H", source_engine.host, "-o", whole, "-q").assert_ok()
    part_size = -(-whole.stat().st_size // 3)
    base = tmp_path / "split" / "stack.tar"
    base.parent.mkdir()
    run_sealift(
        "save", *refs, "-H", source_engine.host, "-o", base, "--split", str(part_size), "-q"
    ).assert_ok()
    assert len(list(base.parent.glob("stack.tar.0*"))) == 3
    assert joined_parts(base) == whole.read_bytes()

    loaded = empty_dest_engine.docker_bytes("load", input=joined_parts(base)).decode()
    assert f"Loaded image: {test_images.app1.ref}" in loaded
    assert image_id(empty_dest_engine, test_images.app1.ref) == test_images.app1.id

    empty_dest_engine.remove_all_images()
    run_sealift("load", f"{base}.000", "-H", empty_dest_engine.host, "-q").assert_ok()
    assert image_id(empty_dest_engine, test_images.app1.ref) == test_images.app1.id
    assert empty_dest_engine.run(test_images.app1.ref) == test_images.app1.expected_output
