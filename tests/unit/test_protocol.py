"""The SSH push protocol without ssh or engines: framing, negotiation, staging and resume."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

import pytest

from sealift import compression, media
from sealift.digest import Digest
from sealift.ends.ssh import Ssh, SshTarget, remote_command, ssh_command
from sealift.errors import DigestMismatchError, UsageError
from sealift.model import Descriptor, Layer
from sealift.remote import protocol
from sealift.remote.protocol import Channel, LayerStream, Need, ProtocolError, RemoteError
from sealift.remote.sender import send_layer
from sealift.remote.staging import Staging


# ------------------------------------------------------------------------------- destinations
@pytest.mark.parametrize(
    ("text", "user", "host", "port"),
    [
        ("ssh://web1", None, "web1", None),
        ("ssh://deploy@web1.example.com:2222", "deploy", "web1.example.com", 2222),
        ("ssh://root@127.0.0.1", "root", "127.0.0.1", None),
        ("ssh://[::1]:22", None, "::1", 22),
        ("ssh://web1/", None, "web1", None),
    ],
)
def test_parse_destinations(text: str, user: str | None, host: str, port: int | None) -> None:
    target = SshTarget.parse(text)
    assert (target.user, target.host, target.port) == (user, host, port)


@pytest.mark.parametrize(
    "text",
    [
        "web1",
        "ssh://",
        "ssh://-oProxyCommand=sh",
        "ssh://web1;reboot",
        "ssh://web 1",
        "ssh://we$(id)b1",
        "ssh://-l@web1",
        "ssh://a@b@web1",
        "ssh://web1:0",
        "ssh://web1:65536",
        "ssh://web1:22x",
        "ssh://web1\n",
        "ssh://[::1",
        "ssh://user name@web1",
    ],
)
def test_hostile_destinations_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        SshTarget.parse(text)


def test_ssh_argv_never_lets_the_destination_be_an_option() -> None:
    ssh = Ssh(SshTarget.parse("ssh://me@web1:2200"), ["ssh", "-F", "cfg"], batch=True)
    argv = ssh.argv(remote_command(["docker", "tag", "a;b", "$(x)"]))
    assert argv == [
        "ssh",
        "-F",
        "cfg",
        "-o",
        "BatchMode=yes",
        "-p",
        "2200",
        "--",
        "me@web1",
        "docker tag 'a;b' '$(x)'",
    ]


def test_ssh_command_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALIFT_SSH_COMMAND", "ssh -F '/my dir/config' -v")
    assert ssh_command() == ["ssh", "-F", "/my dir/config", "-v"]
    assert ssh_command("myssh -x") == ["myssh", "-x"]
    monkeypatch.delenv("SEALIFT_SSH_COMMAND")
    assert ssh_command() == ["ssh"]
    with pytest.raises(UsageError):
        ssh_command("ssh 'unclosed")


# ------------------------------------------------------------------------------------ framing
def _pair() -> tuple[Channel, io.BytesIO]:
    out = io.BytesIO()
    return Channel(io.BytesIO(), out), out


def _reader(data: bytes) -> Channel:
    return Channel(io.BytesIO(data), io.BytesIO(), "peer")


def test_messages_and_frames_round_trip() -> None:
    sender, out = _pair()
    sender.send({"t": "x", "a": 1})
    sender.send({"t": "c"}, b"\n\x00binary\n")
    receiver = _reader(out.getvalue())
    assert receiver.recv() == ({"t": "x", "a": 1}, None)
    message, payload = receiver.recv()
    assert message["t"] == "c" and payload == b"\n\x00binary\n"
    assert receiver.bytes_in == sender.bytes_out
    with pytest.raises(ProtocolError, match="closed"):
        receiver.recv()


@pytest.mark.parametrize(
    "data",
    [
        b"not json\n",
        b'["list"]\n',
        b'{"no":"type"}\n',
        b'{"t":"c","n":-1}\n',
        b'{"t":"c","n":99999999999}\n',
        b'{"t":"c","n":10}\nshort',
    ],
)
def test_garbage_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        _reader(data).recv()


def test_error_messages_are_raised() -> None:
    with pytest.raises(RemoteError, match="peer: disk full"):
        _reader(b'{"t":"error","message":"disk full"}\n').recv()


def test_banner_skips_login_noise() -> None:
    channel = _reader(b"Welcome!\nlast login\nSEALIFT-AGENT 0.1.0\n")
    assert channel.read_banner()[0] == protocol.BANNER
    with pytest.raises(ProtocolError):
        _reader(b"motd only\n").read_banner()


def test_version_negotiation() -> None:
    assert protocol.choose_protocol(protocol.hello()) == max(protocol.PROTOCOLS)
    with pytest.raises(ProtocolError, match="protocol mismatch"):
        protocol.choose_protocol({"t": "hello", "protocols": [99], "sealift": "9.0"})
    with pytest.raises(ProtocolError):
        protocol.choose_protocol({"t": "hello"})


def test_need_round_trip_and_validation() -> None:
    digest = Digest.parse("sha256:" + "a" * 64)
    need = Need({digest: 5}, ("sha256:" + "b" * 64,), 2)
    assert Need.parse(need.to_json()) == need
    with pytest.raises(ProtocolError):
        Need.parse({"t": "need", "layers": [{"diff_id": str(digest), "offset": -1}]})
    with pytest.raises(ProtocolError):
        Need.parse({"t": "need", "layers": [{"diff_id": "sha256:zz", "offset": 0}]})


def _offer(tags: list[str], diff_ids: list[str] | None = None) -> dict[str, object]:
    diff = "sha256:" + "c" * 64
    layer = {"diff_id": diff, "digest": diff, "size": 3, "media_type": media.OCI_LAYER}
    return {
        "t": "offer",
        "images": [
            {
                "id": "sha256:" + "d" * 64,
                "diff_ids": diff_ids if diff_ids is not None else [diff],
                "layers": [layer],
                "tags": tags,
            }
        ],
    }


def test_offer_round_trip() -> None:
    (image,) = protocol.parse_offer(_offer(["app:1"]))
    assert image.tags == ("docker.io/library/app:1",)
    assert protocol.parse_offer(protocol.offer_message([image])) == [image]


@pytest.mark.parametrize("tag", ["app:1;rm -rf /", "$(id)", "-oops", "app:1 app:2", ""])
def test_offer_refuses_hostile_tags(tag: str) -> None:
    with pytest.raises(ProtocolError):
        protocol.parse_offer(_offer([tag]))


def test_offer_refuses_layers_that_do_not_match_diff_ids() -> None:
    with pytest.raises(ProtocolError, match="do not match"):
        protocol.parse_offer(_offer(["app:1"], ["sha256:" + "e" * 64]))


def test_configs_are_checked_against_their_ids() -> None:
    raw = b'{"real":"config"}'
    good = str(Digest.from_hex(hashlib.sha256(raw).hexdigest()))
    message = {"t": "commit", "configs": protocol.configs_json({Digest.parse(good): raw})}
    assert protocol.parse_configs(message, [good]) == {Digest.parse(good): raw}
    forged = "sha256:" + "f" * 64
    with pytest.raises(ProtocolError, match="hashes to"):
        protocol.parse_configs({"t": "commit", "configs": {forged: "e30="}}, [forged])
    with pytest.raises(ProtocolError, match="did not arrive"):
        protocol.parse_configs({"t": "commit"}, [good])


# ---------------------------------------------------------------------------- staging, resume
def _layer(data: bytes) -> Layer:
    diff_id = Digest.from_hex(hashlib.sha256(data).hexdigest())
    return Layer(
        Descriptor(media.OCI_LAYER, diff_id, len(data)),
        diff_id,
        compression.NONE,
        lambda: io.BytesIO(data),
        verified=True,
    )


def _payload() -> bytes:
    rng = random.Random(7)
    return rng.randbytes(3 * 1024 * 1024) + b"text " * 400_000


def _wire(layer: Layer, offset: int, codec: str) -> bytes:
    sender, out = _pair()
    send_layer(sender, layer, offset, codec)
    return out.getvalue()


def _receive(staging: Staging, wire: bytes) -> int:
    channel = _reader(wire)
    header = channel.expect("layer")
    stream = LayerStream(channel)
    appended = staging.receive(
        Digest.parse(header["diff_id"]), header["offset"], header["codec"], cast(IO[bytes], stream)
    )
    stream.finish()
    return appended


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[Staging]:
    with Staging(tmp_path) as held:
        yield held


@pytest.mark.parametrize("codec", [compression.ZSTD, compression.GZIP, compression.NONE])
def test_layer_arrives_whole(tmp_path: Path, staging: Staging, codec: str) -> None:
    data = _payload()
    layer = _layer(data)
    wire = _wire(layer, 0, codec)
    if codec != compression.NONE:
        assert len(wire) < len(data)
    assert _receive(staging, wire) == len(data)
    assert staging.hold(layer.diff_id)
    assert staging.complete_path(layer.diff_id).read_bytes() == data


def test_cut_mid_layer_resumes_from_the_bytes_that_arrived(
    tmp_path: Path, staging: Staging
) -> None:
    data = _payload()
    layer = _layer(data)
    full = _wire(layer, 0, compression.ZSTD)
    with pytest.raises(ProtocolError):
        _receive(staging, full[: len(full) // 2])
    offset = staging.offset(layer.diff_id)
    assert 0 < offset < len(data)
    assert not staging.hold(layer.diff_id)
    resumed = _wire(layer, offset, compression.ZSTD)
    assert len(resumed) < len(full)
    assert _receive(staging, resumed) == len(data) - offset
    assert staging.complete_path(layer.diff_id).read_bytes() == data


def test_wrong_content_is_refused_and_forgotten(tmp_path: Path, staging: Staging) -> None:
    data = _payload()
    layer = _layer(data)
    liar = Layer(layer.descriptor, layer.diff_id, compression.NONE, lambda: io.BytesIO(b"x" * 99))
    with pytest.raises(DigestMismatchError):
        _receive(staging, _wire(liar, 0, compression.ZSTD))
    assert staging.offset(layer.diff_id) == 0 and not staging.hold(layer.diff_id)


def test_resume_offset_must_match_staging(tmp_path: Path, staging: Staging) -> None:
    data = _payload()
    layer = _layer(data)
    with pytest.raises(Exception, match="resumed at 10"):
        _receive(staging, _wire(layer, 10, compression.ZSTD))


def test_stale_staging_expires(tmp_path: Path, staging: Staging) -> None:
    old = tmp_path / ("a" * 64 + ".partial")
    new = tmp_path / ("b" * 64)
    old.write_bytes(b"old")
    new.write_bytes(b"new")
    os.utime(old, (1, 1))
    assert staging.expire(3600) == 1
    assert not old.exists() and new.exists()


# ---------------------------------------------------------------------------------- the agent
def _agent(stdin: bytes) -> list[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    env["DOCKER_HOST"] = "unix:///nonexistent-sealift.sock"
    done = subprocess.run(
        [sys.executable, "-m", "sealift", "agent"],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    return done.stdout.splitlines()


def test_agent_reports_a_version_mismatch_instead_of_garbling() -> None:
    lines = _agent(b'{"t":"hello","protocols":[99],"sealift":"9.9"}\n')
    assert lines[0].startswith(protocol.BANNER)
    error = json.loads(lines[1])
    assert error["t"] == "error" and "protocol mismatch" in error["message"]
    assert "9.9" in error["message"]


def test_agent_refuses_garbage() -> None:
    lines = _agent(b"GET / HTTP/1.0\n\n")
    assert json.loads(lines[1])["t"] == "error"
