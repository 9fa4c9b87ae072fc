"""``sealift agent``: the remote end of push and pull, speaking the protocol on stdin/stdout.

It talks to the engine its user reaches (DOCKER_HOST, the docker context, the default socket) and
keeps received layers under its cache directory (see :mod:`sealift.remote.staging`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType
from typing import IO, Any

from sealift import __version__
from sealift.digest import Digest
from sealift.ends.engine import Engine
from sealift.errors import EngineError, SealiftError, TransportError
from sealift.remote import protocol
from sealift.remote.protocol import BANNER, Channel, Need, OfferedImage, parse_offer
from sealift.remote.receiver import Receiver
from sealift.remote.sender import configs_for, manifests_for, send_layers
from sealift.remote.source import LazySource
from sealift.remote.staging import Staging


def _hang_up(signum: int, frame: FrameType | None) -> None:
    raise TransportError(f"stopped by signal {signum}")


def serve(reader: IO[bytes], writer: IO[bytes], engine_host: str | None = None) -> int:
    """Answer one client; return the exit status."""
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, _hang_up)
    channel = Channel(reader, writer, "the client")
    writer.write(BANNER + f" {__version__}\n".encode())
    writer.flush()
    try:
        version = protocol.choose_protocol(channel.expect("hello"))
        try:
            engine = Engine(engine_host)
            engine.ensure_reachable()
        except EngineError as exc:
            _report(channel, str(exc), "engine")
            return 1
        channel.send(
            {"t": "hello", "protocol": version, "sealift": __version__, "engine": engine.host}
        )
        channel.flush()
        request, _ = channel.recv()
        if request["t"] == "offer":
            deltas = version >= protocol.DELTA_PROTOCOL and request.get("deltas") is True
            exact = version >= protocol.EXACT_PROTOCOL
            _receive(channel, engine, request, deltas=deltas, exact=exact)
        elif request["t"] == "pull":
            _send(channel, engine, request)
        elif request["t"] != "bye":
            raise protocol.ProtocolError(f"unknown request {request['t']!r}")
    except protocol.RemoteError:
        return 1
    except SealiftError as exc:
        _report(channel, str(exc))
        return 1
    except (OSError, MemoryError) as exc:
        _report(channel, f"agent failed: {exc}")
        return 1
    return 0


def _report(channel: Channel, message: str, kind: str | None = None) -> None:
    with contextlib.suppress(SealiftError, OSError):
        channel.error(message, kind)


def _receive(
    channel: Channel, engine: Engine, request: dict[str, Any], *, deltas: bool, exact: bool
) -> None:
    with Staging() as staging:
        receiver = Receiver(engine, staging, exact=exact)
        try:
            _receive_into(channel, receiver, parse_offer(request), deltas=deltas)
        finally:
            receiver.close()


def _receive_into(
    channel: Channel, receiver: Receiver, images: list[OfferedImage], *, deltas: bool = False
) -> None:
    need = receiver.plan(images, deltas=deltas)
    channel.send(need.to_json())
    channel.flush()
    while True:
        message, _ = channel.recv()
        kind = message["t"]
        if kind == "layer":
            receiver.receive(channel, message)
        elif kind == "patch" and deltas:
            _answer_patch(channel, receiver, need, message)
        elif kind == "bases" and deltas:
            receiver.prefetch_bases(protocol.parse_bases(message))
        elif kind == "commit":
            configs = protocol.parse_configs(message, need.configs)
            manifests = protocol.parse_manifests(message, need.configs) if need.blobs else {}
            results = receiver.commit(images, configs, manifests)
            channel.send({"t": "done", "images": results})
            channel.flush()
        elif kind == "bye":
            return
        else:
            raise protocol.ProtocolError(f"unexpected {kind!r} while receiving")


def _answer_patch(channel: Channel, receiver: Receiver, need: Need, header: dict[str, Any]) -> None:
    """Rebuild a layer from its patch; tell the sender whether it must send it whole."""
    if need.layers.get(Digest.parse(header.get("diff_id"))) != 0:
        raise protocol.ProtocolError("a patch for a layer not asked for from its start")
    reason = receiver.receive_patch(channel, header)
    answer: dict[str, Any] = {"t": "patched", "diff_id": header.get("diff_id"), "ok": not reason}
    if reason:
        answer["reason"] = reason
    channel.send(answer)
    channel.flush()


def _send(channel: Channel, engine: Engine, request: dict[str, Any]) -> None:
    from sealift.reference import Reference

    refs = request.get("refs")
    platform = request.get("platform")
    if not isinstance(refs, list) or not refs:
        raise protocol.ProtocolError("pull without image references")
    names = [Reference.parse(str(ref), default_tag=False).familiar for ref in refs]
    if platform is not None and not isinstance(platform, str):
        raise protocol.ProtocolError("pull: invalid platform")
    source = LazySource(engine, names, platform)
    try:
        channel.send(protocol.offer_message(source.offer))
        channel.flush()
        need = Need.parse(channel.expect("need"))
        entries = source.entries() if need.layers or need.configs else []
        codec = str(request.get("codec") or "zstd")
        level = request.get("level")
        send_layers(channel, entries, need, codec, level if isinstance(level, int) else None)
        sent: dict[str, Any] = {"t": "sent", "configs": configs_for(entries, need)}
        if need.blobs:
            sent["manifests"] = manifests_for(entries, need)
        channel.send(sent)
        channel.flush()
        channel.expect("bye")
    finally:
        source.close()


def main() -> int:
    """Serve on stdin/stdout; anything else that writes to stdout lands on stderr instead."""
    sys.stdout.flush()
    channel_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with channel_out:
        return serve(sys.stdin.buffer, channel_out)
