"""The listening side of ``sealift serve``: a threaded HTTP(S) server over :class:`Content`.

One thread per connection, at most ``MAX_CONNECTIONS`` at once (further clients wait in the
listen queue), each sending blobs in 1 MiB chunks: memory stays bounded whatever is pulled.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import socketserver
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sealift.errors import SealiftError, UsageError
from sealift.serving.api import RegistryHandler, is_disconnect
from sealift.serving.content import Content

MAX_CONNECTIONS = 64
DEFAULT_PORT = 5000

Log = Callable[[str], None]


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """``HOST:PORT``, ``[IPv6]:PORT``, ``HOST`` (port 5000) or ``PORT`` (on 127.0.0.1)."""
        if text.isdigit():
            return cls("127.0.0.1", _port(text, text))
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise UsageError(f"invalid listen address {text!r}: expected [IPv6]:PORT")
            return cls(host, _port(rest[1:], text) if rest else DEFAULT_PORT)
        host, colon, port = text.rpartition(":")
        if not colon:
            return cls(text, DEFAULT_PORT)
        if not host or ":" in host:
            raise UsageError(f"invalid listen address {text!r}: expected HOST:PORT")
        return cls(host, _port(port, text))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise UsageError(f"invalid port in listen address {whole!r}")
    return int(text)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(bound: ListenAddress, tls: bool) -> str | None:
    """The warning a server listening beyond this machine without TLS deserves, if any."""
    if tls or is_loopback(bound.host):
        return None
    return (
        f"serving on {bound} without TLS: anyone who can reach it can pull every image, "
        "unencrypted (use --tls-cert/--tls-key)"
    )


def tls_context(cert: Path, key: Path | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise UsageError(f"no such file: {exc.filename}") from exc
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"cannot use {cert} as the TLS certificate and key: {exc}") from exc
    return context


class RegistryServer(ThreadingHTTPServer):
    """Serves ``content`` on ``address``, with TLS when ``tls`` is given."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        address: ListenAddress,
        content: Content,
        *,
        tls: ssl.SSLContext | None = None,
        access_log: Log | None = None,
        error_log: Log | None = None,
    ) -> None:
        self.content = content
        self.tls = tls
        self._access_log = access_log
        self._error_log = error_log or _stderr
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(
                address.host, address.port, type=socket.SOCK_STREAM
            )[0]
        except socket.gaierror as exc:
            raise UsageError(f"cannot listen on {address}: {exc.strerror}") from exc
        self.address_family = family
        try:
            super().__init__((str(sockaddr[0]), int(sockaddr[1])), RegistryHandler)
        except OSError as exc:
            raise SealiftError(f"cannot listen on {address}: {exc.strerror or exc}") from exc
        if tls is not None:
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's name: nothing here needs it
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    @property
    def bound(self) -> ListenAddress:
        host, port = self.socket.getsockname()[:2]
        return ListenAddress(str(host), int(port))

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.bound}"

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if error is None or is_disconnect(error):
            return
        self.report(f"request from {client_address[0]} failed: {error}")

    def access(self, line: str) -> None:
        if self._access_log is not None:
            self._access_log(line)

    def report(self, message: str) -> None:
        self._error_log(f"sealift: warning: {message}")


def _stderr(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
