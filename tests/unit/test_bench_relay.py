"""The registry bench stage's counting relay: every byte of both directions, counted once."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from bench.registry import CountingRelay


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that sends back whatever it reads, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield int(listener.getsockname()[1])
    listener.close()


def _echo_through(relay: CountingRelay, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", relay.port)) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        received = bytearray()
        while data := conn.recv(65536):
            received += data
    return bytes(received)


def test_relay_counts_both_directions_of_every_connection(echo_port: int) -> None:
    relay = CountingRelay()
    relay.upstream_port = echo_port
    try:
        payload = bytes(range(256)) * 4096
        assert _echo_through(relay, payload) == payload
        assert _echo_through(relay, b"x" * 1000) == b"x" * 1000
        moved, cpu = relay.take()
        assert moved == 2 * (len(payload) + 1000)
        assert cpu >= 0
    finally:
        relay.close()


def test_relay_count_restarts_after_take(echo_port: int) -> None:
    relay = CountingRelay()
    relay.upstream_port = echo_port
    try:
        _echo_through(relay, b"first")
        relay.take()
        _echo_through(relay, b"second")
        assert relay.take()[0] == 2 * len(b"second")
    finally:
        relay.close()
