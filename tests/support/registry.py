"""What the registry tests run besides distribution itself: htpasswd lines, a token issuer
whose JWTs distribution validates, a proxy that cuts uploads and a relay that slows downloads
(certificates: tls.py).

Everything listens on 127.0.0.1 and lives in threads of the test process.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import http.server
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "CuttingProxy",
    "SlowRelay",
    "ThreadedServer",
    "TokenIssuer",
    "htpasswd_line",
]


# ------------------------------------------------------------------------------- certificates
def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: str, public_key: Any, days: int = 2) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def htpasswd_line(user: str, password: str) -> str:
    """A line of an htpasswd file as distribution reads it (bcrypt is all it accepts)."""
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}"


# ------------------------------------------------------------------------------ token issuer
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class ThreadedServer:
    """A ThreadingHTTPServer on 127.0.0.1 run in a thread; ``with`` starts and stops it."""

    handler: type[http.server.BaseHTTPRequestHandler]
    _server: _Server | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Self:
        outer = self

        class Handler(self.handler):  # type: ignore[name-defined,misc]
            owner = outer

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    owner: TokenIssuer

    def do_GET(self) -> None:
        issuer = self.owner
        query = parse_qs(urlsplit(self.path).query)
        login_ok, user = self._user()
        if not login_ok:
            self._answer(401, {"details": "wrong login"})
            return
        access = [issuer.grant(user, scope) for scope in query.get("scope", [])]
        token = issuer.sign(user or "", query.get("service", [""])[0], access)
        issuer.issued.append((user or "", [a for a in access if a["actions"]]))
        self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

    def _user(self) -> tuple[bool, str | None]:
        """Whether the login (if any) is right, and whose it is (None: anonymous)."""
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return True, None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return self.owner.users.get(user) == password, user

    def _answer(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class TokenIssuer(ThreadedServer):
    """A token service for distribution's ``auth: token``: checks a user's password, grants
    what the scope asks except on ``denied`` repositories (pull only there), and signs an RS256
    JWT whose ``x5c`` certificate is the one in distribution's ``rootcertbundle``.

    ``expire_next`` makes the next token one distribution refuses as expired (a client must
    ask again); ``issued`` records ``(user, access)`` of every token.
    """

    handler = _TokenHandler
    SERVICE = "sealift-test-registry"
    ISSUER = "sealift-test-issuer"

    def __init__(self, directory: Path, users: dict[str, str], denied: Iterable[str] = ()) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.denied = set(denied)
        self.expire_next = 0
        self.issued: list[tuple[str, list[dict[str, Any]]]] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._certificate = (
            _builder("sealift token issuer", "sealift token issuer", self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.bundle = directory / "token-issuer.crt"
        self.bundle.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))
        self._lock = threading.Lock()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def grant(self, user: str | None, scope: str) -> dict[str, Any]:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        wanted = [a for a in actions.split(",") if a]
        if user is None:
            allowed: list[str] = []
        elif name in self.denied:
            allowed = [a for a in wanted if a == "pull"]
        else:
            allowed = wanted
        return {"type": kind, "name": name, "actions": allowed}

    def sign(self, user: str, service: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        with self._lock:
            expired = self.expire_next > 0
            self.expire_next -= expired
        expires = now - 600 if expired else now + 300
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [
                base64.b64encode(
                    self._certificate.public_bytes(serialization.Encoding.DER)
                ).decode()
            ],
        }
        claims = {
            "iss": self.ISSUER,
            "sub": user,
            "aud": service,
            "exp": expires,
            "nbf": now - 900 if expired else now - 5,
            "iat": now - 900 if expired else now,
            "jti": uuid.uuid4().hex,
            "access": [a for a in access if a["actions"]],
        }
        signing_input = ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims))
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


# ---------------------------------------------------------------------------- cutting proxy
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    owner: CuttingProxy
    protocol_version = "HTTP/1.1"

    def _relay(self) -> None:
        proxy = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        if self.command == "PATCH" and proxy.should_cut(length):
            self._cut(length)
            return
        body = self.rfile.read(length) if length else b""
        if self.command == "PATCH":
            proxy.count(received=len(body), forwarded=len(body))
        upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
        finally:
            upstream.close()
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if self.command == "HEAD":
            self.send_header("Content-Length", response.getheader("Content-Length") or "0")
        else:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _cut(self, length: int) -> None:
        """Drop the connection in the middle of this PATCH. ``swallow``: read the whole body
        and never forward it (the registry sees nothing); otherwise forward the first part of
        the body and cut the registry's connection too (it sees a request cut mid-body)."""
        proxy = self.owner
        if proxy.swallow:
            body = self.rfile.read(length)
            proxy.count(received=len(body), forwarded=0)
        else:
            part = self.rfile.read(max(proxy.cut_at - proxy.forwarded, 1))
            proxy.count(received=len(part), forwarded=len(part))
            upstream = socket.create_connection(("127.0.0.1", proxy.upstream_port), timeout=30)
            head = [f"PATCH {self.path} HTTP/1.1"]
            head += [f"{k}: {v}" for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
            upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + part)
            time.sleep(0.2)
            upstream.close()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _relay  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        return


class CuttingProxy(ThreadedServer):
    """A reverse proxy to ``upstream_port`` that cuts one upload: the first ``PATCH`` whose
    body would take the PATCH bytes seen past ``cut_at``. Counts PATCH body bytes received from
    the client and forwarded to the registry."""

    handler = _ProxyHandler

    def __init__(self, upstream_port: int, cut_at: int, *, swallow: bool) -> None:
        self.upstream_port = upstream_port
        self.cut_at = cut_at
        self.swallow = swallow
        self.cuts = 0
        self.received = 0
        self.forwarded = 0
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def should_cut(self, length: int) -> bool:
        with self._lock:
            if self.cuts or self.received + length <= self.cut_at:
                return False
            self.cuts += 1
            return True

    def count(self, *, received: int, forwarded: int) -> None:
        with self._lock:
            self.received += received
            self.forwarded += forwarded


# ------------------------------------------------------------------------------ slow relay
class SlowRelay:
    """A TCP relay to ``upstream_port`` that sends the registry's answers on at most
    ``rate`` bytes per second per connection, so a download is still under way when a test
    acts on it; ``relayed`` counts those bytes. ``with`` starts and stops it."""

    _BLOCK = 16 * 1024

    def __init__(self, upstream_port: int, rate: int) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.relayed = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, self.rate), daemon=True
            ).start()

    def _pump(self, source: socket.socket, target: socket.socket, rate: int | None) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(self._BLOCK):
                target.sendall(data)
                if rate is not None:
                    with self._lock:
                        self.relayed += len(data)
                    time.sleep(len(data) / rate)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
