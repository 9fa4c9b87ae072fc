"""The read half of the OCI distribution API over :class:`Content`, as an HTTP request handler.

Endpoints: ``/v2/``, manifests and blobs by tag or digest (GET and HEAD, blobs with single
byte ranges), ``/v2/<name>/tags/list`` and ``/v2/_catalog`` (both with ``n``/``last``
pagination). Any write method gets 405 with an ``UNSUPPORTED`` error body.

A blob read from storage is hashed again while it is sent whole, and its last chunk is held back
until the digest matches: should the file change after it was verified, the client gets a cut
response, never a complete wrong blob.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Generator, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from sealift.digest import Digest
from sealift.errors import InvalidArchiveError, SealiftError
from sealift.serving.content import (
    REPOSITORY_NAME,
    TAG,
    Content,
    ServedBlob,
    ServedManifest,
)
from sealift.verify import CHUNK

if TYPE_CHECKING:
    from sealift.serving.server import RegistryServer

API_VERSION = "registry/2.0"
READ_ONLY = "sealift serve is read-only"
_NAME = REPOSITORY_NAME.pattern
_MANIFEST = re.compile(rf"/v2/({_NAME})/manifests/([^/]+)")
_BLOB = re.compile(rf"/v2/({_NAME})/blobs/([^/]+)")
_TAGS = re.compile(rf"/v2/({_NAME})/tags/list")
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
_COUNT = re.compile(r"[0-9]{1,9}")
_JSON = "application/json"


class ApiError(Exception):
    """An error the API answers with a distribution-spec error body."""

    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class RangeNotSatisfiableError(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The ``(first, last)`` byte positions one ``Range`` header asks for, or None for the whole
    blob (no header, several ranges, or a unit other than bytes: all may be ignored)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first_text, last_text = match.groups()
    if first_text == "":
        suffix = int(last_text)
        if suffix == 0:
            raise RangeNotSatisfiableError
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiableError
    return first, last


class RegistryHandler(BaseHTTPRequestHandler):
    """One client connection: HTTP/1.1 with keep-alive, every response with a Content-Length."""

    server: RegistryServer
    protocol_version = "HTTP/1.1"
    server_version = "sealift"
    sys_version = ""
    timeout = 60  # seconds a connection may sit idle (or stall) before it is closed
    _length: int | str = "-"

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # here, in the connection's thread, not in accept()

    @property
    def content(self) -> Content:
        return self.server.content

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _read_only(self) -> None:
        self.close_connection = True  # the request body is never read
        self._send_error(
            ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "UNSUPPORTED", READ_ONLY),
            head=False,
            extra={"Allow": "GET, HEAD"},
        )

    def do_POST(self) -> None:
        self._read_only()

    def do_PUT(self) -> None:
        self._read_only()

    def do_PATCH(self) -> None:
        self._read_only()

    def do_DELETE(self) -> None:
        self._read_only()

    def _dispatch(self, head: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        try:
            if path in ("/v2", "/v2/"):
                self._send_bytes(HTTPStatus.OK, b"{}", _JSON, head)
            elif path == "/v2/_catalog":
                self._catalog(query, head)
            elif match := _MANIFEST.fullmatch(path):
                self._manifest(match.group(1), match.group(2), head)
            elif match := _BLOB.fullmatch(path):
                self._blob(self._digest(match.group(2), "BLOB_UNKNOWN"), head)
            elif match := _TAGS.fullmatch(path):
                self._tags(match.group(1), query, head)
            else:
                raise ApiError(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no such endpoint: {path}")
        except ApiError as error:
            self._send_error(error, head)

    # ------------------------------------------------------------------------------ endpoints
    def _manifest(self, name: str, reference: str, head: bool) -> None:
        if ":" in reference:
            manifest = self.content.manifests.get(self._digest(reference, "MANIFEST_UNKNOWN"))
        elif TAG.fullmatch(reference):
            manifest = self._by_tag(name, reference)
        else:
            raise ApiError(HTTPStatus.BAD_REQUEST, "TAG_INVALID", f"invalid tag {reference!r}")
        if manifest is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "MANIFEST_UNKNOWN", f"no manifest {reference}")
        self._send_bytes(
            HTTPStatus.OK,
            manifest.raw,
            manifest.media_type,
            head,
            {"Docker-Content-Digest": str(manifest.digest)},
        )

    def _by_tag(self, name: str, tag: str) -> ServedManifest | None:
        tags = self._repository(name)
        digest = tags.get(tag)
        return self.content.manifests.get(digest) if digest is not None else None

    def _repository(self, name: str) -> dict[str, Digest]:
        tags = self.content.repositories.get(name)
        if tags is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "NAME_UNKNOWN", f"no repository {name}")
        return tags

    def _blob(self, digest: Digest, head: bool) -> None:
        blob = self.content.blobs.get(digest)
        if blob is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "BLOB_UNKNOWN", f"no blob {digest}")
        try:
            span = parse_range(self.headers.get("Range"), blob.size)
        except RangeNotSatisfiableError:
            self._send_head(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                0,
                _JSON,
                {"Content-Range": f"bytes */{blob.size}"},
            )
            return
        first, last = span if span is not None else (0, blob.size - 1)
        headers = {"Docker-Content-Digest": str(digest), "Accept-Ranges": "bytes"}
        if span is not None:
            headers["Content-Range"] = f"bytes {first}-{last}/{blob.size}"
        status = HTTPStatus.PARTIAL_CONTENT if span is not None else HTTPStatus.OK
        self._send_head(status, last - first + 1, "application/octet-stream", headers)
        if not head:
            self._send_blob_body(blob, first, last - first + 1, whole=span is None)

    def _tags(self, name: str, query: dict[str, str], head: bool) -> None:
        names = sorted(self._repository(name))
        page, link = _paginate(names, query, f"/v2/{name}/tags/list")
        self._send_json({"name": name, "tags": page}, head, link)

    def _catalog(self, query: dict[str, str], head: bool) -> None:
        page, link = _paginate(sorted(self.content.repositories), query, "/v2/_catalog")
        self._send_json({"repositories": page}, head, link)

    def _digest(self, text: str, unknown: str) -> Digest:
        try:
            digest = Digest.parse(text)
        except InvalidArchiveError as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, "DIGEST_INVALID", str(exc)) from exc
        if not digest.is_computable():
            raise ApiError(HTTPStatus.NOT_FOUND, unknown, f"nothing is named {digest}")
        return digest

    # ------------------------------------------------------------------------------ responses
    def _send_head(
        self, status: HTTPStatus, length: int, content_type: str, headers: dict[str, str]
    ) -> None:
        self._length = length
        self.send_response(status)
        self.send_header("Docker-Distribution-API-Version", API_VERSION)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _send_bytes(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        head: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._send_head(status, len(body), content_type, headers or {})
        if not head:
            self.wfile.write(body)

    def _send_json(self, document: Any, head: bool, link: str | None) -> None:
        headers = {"Link": f'<{link}>; rel="next"'} if link else {}
        self._send_bytes(HTTPStatus.OK, json.dumps(document).encode(), _JSON, head, headers)

    def _send_error(self, error: ApiError, head: bool, extra: dict[str, str] | None = None) -> None:
        body = {"errors": [{"code": error.code, "message": error.message, "detail": None}]}
        self._send_bytes(error.status, json.dumps(body).encode(), _JSON, head, extra)

    def _send_blob_body(self, blob: ServedBlob, first: int, length: int, *, whole: bool) -> None:
        reader = _read_chunks(blob, first, length)
        check = whole and blob.from_storage  # bytes in memory cannot change
        chunks = _held_back_until_verified(reader, blob.digest) if check else reader
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
        except SealiftError as exc:
            self.close_connection = True
            self.server.report(f"cut the response to {self.requestline!r}: {exc}")
        finally:
            chunks.close()
            reader.close()

    def version_string(self) -> str:
        return self.server_version

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        super().log_request(code, self._length if size == "-" else size)
        self._length = "-"

    def log_message(self, format: str, *args: Any) -> None:
        self.server.access(
            f"{self.address_string()} - [{self.log_date_time_string()}] " + (format % args)
        )


def _read_chunks(blob: ServedBlob, first: int, length: int) -> Generator[bytes, None, None]:
    with blob.open() as stream:
        _skip(stream, first)
        remaining = length
        while remaining > 0:
            chunk = stream.read(min(CHUNK, remaining))
            if not chunk:
                raise InvalidArchiveError(f"blob {blob.digest} ended early")
            remaining -= len(chunk)
            yield chunk


def _held_back_until_verified(
    chunks: Iterator[bytes], digest: Digest
) -> Generator[bytes, None, None]:
    """``chunks``, each passed on once the next one is read, the last only when the whole blob
    hashes to ``digest``: a blob that changed in storage is cut short, never completed."""
    hasher = digest.new_hasher()
    held: bytes | None = None
    for chunk in chunks:
        hasher.update(chunk)
        if held is not None:
            yield held
        held = chunk
    if hasher.digest() != digest:
        raise InvalidArchiveError(f"blob {digest} changed in storage since it was verified")
    if held is not None:
        yield held


def _skip(stream: IO[bytes], count: int) -> None:
    if count == 0:
        return
    if stream.seekable():
        stream.seek(count)
        return
    while count > 0:
        skipped = len(stream.read(min(CHUNK, count)))
        if not skipped:
            return
        count -= skipped


def _paginate(names: list[str], query: dict[str, str], path: str) -> tuple[list[str], str | None]:
    """One page of ``names`` after ``last``, at most ``n`` long, and the link to the next."""
    last = query.get("last")
    if last is not None:
        names = [name for name in names if name > last]
    limit_text = query.get("n")
    if limit_text is None:
        return names, None
    if not _COUNT.fullmatch(limit_text):
        raise ApiError(
            HTTPStatus.BAD_REQUEST, "PAGINATION_NUMBER_INVALID", f"invalid n={limit_text!r}"
        )
    limit = int(limit_text)
    if len(names) <= limit or limit == 0:
        return names[:limit], None
    page = names[:limit]
    return page, f"{path}?n={limit}&last={quote(page[-1], safe='')}"


def is_disconnect(error: BaseException) -> bool:
    """A client that went away or spoke something else (a TLS probe on plain HTTP): no news."""
    return isinstance(error, ConnectionError | TimeoutError | ssl.SSLError)
