"""An in-process registry for fast unit tests: the part of the distribution API sealift uses,
with knobs to fail in the ways real ones do (429/5xx, cut downloads, refused media types).

It is deliberately small and trusting; the real thing (distribution 2.8) is in the
integration tests.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.registry import ThreadedServer

__all__ = ["FakeRegistry"]

_BLOB = re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})")
_UPLOAD = re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<id>[0-9a-f]*)")
_TAGS = re.compile(r"/v2/(?P<name>.+)/tags/list")
_MANIFEST = re.compile(r"/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)")


@dataclass
class _Failure:
    status: int
    retry_after: str | None = None


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: FakeRegistry
    protocol_version = "HTTP/1.1"

    def _dispatch(self) -> None:
        fake = self.owner
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with fake.lock:
            fake.requests.append((self.command, url.path, dict(self.headers), len(body)))
            failure = fake.failures.pop(0) if fake.failures else None
        if failure is not None:
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            self._send(failure.status, b"", headers)
            return
        if url.path == "/v2/":
            self._send(200, b"{}")
        elif url.path == "/v2/_catalog":
            self._json({"repositories": sorted({name for name, _ in fake.manifests})})
        elif match := _TAGS.fullmatch(url.path):
            tags = sorted(ref for name, ref in fake.manifests if name == match["name"])
            self._json({"name": match["name"], "tags": [t for t in tags if ":" not in t]})
        elif match := _UPLOAD.fullmatch(url.path):
            self._upload(match["name"], match["id"], query, body)
        elif match := _BLOB.fullmatch(url.path):
            self._blob(match["name"], match["digest"])
        elif match := _MANIFEST.fullmatch(url.path):
            self._manifest(match["name"], match["ref"], body)
        else:
            self._error(404, "NAME_UNKNOWN", "unknown path")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch  # noqa: N815

    # ---------------------------------------------------------------------------------- blobs
    def _blob(self, name: str, digest: str) -> None:
        fake = self.owner
        if digest not in fake.repositories.get(name, set()):
            self._error(404, "BLOB_UNKNOWN", "blob unknown")
            return
        data = fake.blobs[digest]
        start = 0
        ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if ranged:
            start = int(ranged.group(1))
        part = data[start:]
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        if self.command == "HEAD":
            return
        if fake.gathered_downloads is not None and digest in fake.gathered_downloads[0]:
            fake.gathered_downloads[1].wait()
        with fake.lock:
            cut = fake.cut_downloads > 0 and len(part) > 1
            fake.cut_downloads -= cut
        if cut:
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(part)

    def _upload(self, name: str, session: str, query: dict[str, str], body: bytes) -> None:
        fake = self.owner
        if self.command == "POST":
            source = query.get("from")
            if "mount" in query and source and query["mount"] in fake.repositories.get(source, ()):
                fake.repositories.setdefault(name, set()).add(query["mount"])
                fake.mounted += 1
                self._send(201, b"", {"Location": f"/v2/{name}/blobs/{query['mount']}"})
                return
            session = uuid.uuid4().hex
            fake.sessions[session] = bytearray()
            self._send(202, b"", self._session_headers(name, session))
            return
        if session not in fake.sessions:
            self._error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown")
            return
        if self.command == "DELETE":
            del fake.sessions[session]
            self._send(204, b"")
        elif self.command == "GET":
            self._send(204, b"", self._session_headers(name, session))
        elif self.command == "PATCH":
            fake.sessions[session] += body
            self._send(202, b"", self._session_headers(name, session))
        elif self.command == "PUT":
            data = bytes(fake.sessions.pop(session) + body)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            if digest != query.get("digest"):
                self._error(400, "DIGEST_INVALID", "provided digest did not match content")
                return
            fake.blobs[digest] = data
            fake.repositories.setdefault(name, set()).add(digest)
            self._send(201, b"", {"Location": f"/v2/{name}/blobs/{digest}"})

    def _session_headers(self, name: str, session: str) -> dict[str, str]:
        size = len(self.owner.sessions[session])
        return {
            "Location": f"/v2/{name}/blobs/uploads/{session}",
            "Range": f"0-{max(size - 1, 0)}",
        }

    # ------------------------------------------------------------------------------ manifests
    def _manifest(self, name: str, ref: str, body: bytes) -> None:
        fake = self.owner
        if self.command == "PUT":
            for refused in fake.refused_types:
                if refused.encode() in body:
                    self._error(
                        400,
                        "MANIFEST_INVALID",
                        f"manifest invalid: unsupported media type {refused}",
                    )
                    return
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            kind = self.headers.get("Content-Type", "")
            fake.manifests[(name, digest)] = (body, kind)
            fake.manifests[(name, ref)] = (body, kind)
            self._send(201, b"", {"Docker-Content-Digest": digest})
            return
        found = fake.manifests.get((name, ref))
        if found is None:
            self._error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            return
        body, kind = found
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self._send(200, body, {"Content-Type": kind, "Docker-Content-Digest": digest})

    # -------------------------------------------------------------------------------- replies
    def _json(self, document: object) -> None:
        self._send(200, json.dumps(document).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, code: str, message: str) -> None:
        document = {"errors": [{"code": code, "message": message}]}
        self._send(status, json.dumps(document).encode(), {"Content-Type": "application/json"})

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@dataclass
class FakeRegistry(ThreadedServer):
    """``failures``: statuses the next requests get (with ``Retry-After``); ``cut_downloads``:
    how many blob downloads stop halfway; ``refused_types``: media types a manifest PUT is
    refused for; ``gathered_downloads``: (digests, barrier): a download of one of these blobs
    waits at the barrier before its body is sent, so they get through only if that many run at
    once (a timeout breaks the barrier)."""

    handler = _Handler
    blobs: dict[str, bytes] = field(default_factory=dict)
    repositories: dict[str, set[str]] = field(default_factory=dict)
    sessions: dict[str, bytearray] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], int]] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    cut_downloads: int = 0
    refused_types: tuple[str, ...] = ()
    gathered_downloads: tuple[frozenset[str], threading.Barrier] | None = None
    mounted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def fail_next(self, *statuses: int, retry_after: str | None = None) -> None:
        self.failures.extend(_Failure(status, retry_after) for status in statuses)

    def count(self, method: str, pattern: str = "") -> int:
        return sum(1 for m, path, _, _ in self.requests if m == method and pattern in path)
