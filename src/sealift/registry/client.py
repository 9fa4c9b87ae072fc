"""The OCI distribution API calls sealift makes, on top of one :class:`Transport`.

Manifests are fetched byte-exact (every OCI and Docker type accepted) and checked against the
digest that names them; blobs are read as streams that resume a cut download with a Range
request (:class:`BlobReader`). Error answers become one line naming the registry.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import quote

from sealift import media
from sealift.digest import Digest, sha256_of
from sealift.errors import DigestMismatchError, InvalidArchiveError
from sealift.model import MAX_JSON_SIZE
from sealift.registry.auth import scope_text
from sealift.registry.errors import (
    AccessDeniedError,
    ManifestUnknownError,
    MediaTypeRefusedError,
    RegistryError,
)
from sealift.registry.transport import Transport, TransportOptions

if TYPE_CHECKING:
    import requests

MANIFEST_ACCEPT = ", ".join(
    [
        media.OCI_INDEX,
        media.OCI_MANIFEST,
        media.DOCKER_MANIFEST_LIST,
        media.DOCKER_MANIFEST,
    ]
)
PULL = ("pull",)
PUSH = ("pull", "push")
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
_READ_CHUNK = 1024 * 1024
_MAX_RESUMES = 5


@dataclass(frozen=True)
class FetchedManifest:
    raw: bytes
    media_type: str
    digest: Digest


class RegistryClient:
    """The API of one registry."""

    def __init__(self, host: str, options: TransportOptions | None = None) -> None:
        self.host = host
        self.transport = Transport(host, options or TransportOptions())
        self.bytes_read = 0
        """Blob bytes downloaded so far, for a progress bar (approximate under threads)."""

    def close(self) -> None:
        self.transport.close()

    # ------------------------------------------------------------------------------ manifests
    def get_manifest(self, repository: str, reference: str) -> FetchedManifest:
        """The manifest or index ``repository:reference`` (a tag or a digest), byte-exact."""
        what = f"{self.host}/{repository}{_ref_suffix(reference)}"
        response = self.transport.request(
            "GET",
            f"v2/{repository}/manifests/{quote(reference, safe=':')}",
            scopes=scopes_for(repository, PULL),
            headers={"Accept": MANIFEST_ACCEPT},
            stream=True,
        )
        with response:
            if response.status_code != 200:
                raise self.error(response, f"manifest {what}", repository, PULL)
            raw = _read_response(response, MAX_JSON_SIZE, f"manifest {what}")
        digest = sha256_of(raw)
        expected = _digest_or_none(reference) or _digest_or_none(
            response.headers.get("Docker-Content-Digest", "")
        )
        if expected is not None and expected.is_computable():
            actual = expected.new_hasher()
            actual.update(raw)
            if actual.digest() != expected:
                raise DigestMismatchError(
                    f"manifest {what}: content hashes to {actual.digest()}, expected {expected}"
                )
            digest = expected
        declared = response.headers.get("Content-Type", "").partition(";")[0].strip()
        kind = media.guess_manifest_type(raw) or declared
        return FetchedManifest(raw, kind, digest)

    def manifest_digest(self, repository: str, reference: str) -> Digest | None:
        """The digest under ``reference`` (HEAD), or None when there is no such manifest."""
        response = self.transport.request(
            "HEAD",
            f"v2/{repository}/manifests/{quote(reference, safe=':')}",
            scopes=scopes_for(repository, PULL),
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.error(response, f"manifest {self.host}/{repository}", repository, PULL)
        return _digest_or_none(response.headers.get("Docker-Content-Digest", ""))

    def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> None:
        what = f"manifest {self.host}/{repository}{_ref_suffix(reference)}"
        response = self.transport.request(
            "PUT",
            f"v2/{repository}/manifests/{quote(reference, safe=':')}",
            scopes=scopes_for(repository, PUSH),
            headers={"Content-Type": media_type},
            body=raw,
        )
        with response:
            if response.status_code not in (200, 201, 202):
                raise self.error(response, what, repository, PUSH, media_type=media_type)

    # ---------------------------------------------------------------------------------- blobs
    def blob_size(self, repository: str, digest: Digest) -> int | None:
        """The size of a blob the repository holds (HEAD), or None when it does not."""
        response = self.transport.request(
            "HEAD", f"v2/{repository}/blobs/{digest}", scopes=scopes_for(repository, PULL)
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.error(response, f"blob {digest} in {repository}", repository, PULL)
        length = response.headers.get("Content-Length", "")
        return int(length) if length.isdigit() else -1

    def open_blob(self, repository: str, digest: Digest, size: int | None = None) -> IO[bytes]:
        """A stream of the blob's bytes; a cut download resumes where it stopped."""
        return cast(IO[bytes], BlobReader(self, repository, digest, size))

    def read_blob(self, repository: str, digest: Digest, size: int, limit: int) -> bytes:
        """A small blob (config), read whole and checked against its digest and size."""
        what = f"blob {digest} of {self.host}/{repository}"
        if size > limit:
            raise InvalidArchiveError(f"{what} declares {size} bytes, more than {limit}")
        with self.open_blob(repository, digest, size) as stream:
            data = _read_stream(stream, limit, what)
        if len(data) != size:
            raise DigestMismatchError(f"{what}: {len(data)} bytes, expected {size}")
        hasher = digest.new_hasher()
        hasher.update(data)
        if hasher.digest() != digest:
            raise DigestMismatchError(f"{what}: content hashes to {hasher.digest()}")
        return data

    def blob_response(self, repository: str, digest: Digest, offset: int = 0) -> requests.Response:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self.transport.request(
            "GET",
            f"v2/{repository}/blobs/{digest}",
            scopes=scopes_for(repository, PULL),
            headers=headers,
            stream=True,
        )
        expected = 206 if offset else 200
        if response.status_code != expected:
            response.close()
            if offset and response.status_code == 200:
                raise RegistryError(f"registry {self.host} cannot resume blob {digest} (no Range)")
            raise self.error(response, f"blob {digest} in {repository}", repository, PULL)
        return response

    def mount(self, repository: str, digest: Digest, source: str) -> bool:
        """Mount a blob from ``source`` (same registry) into ``repository``; True if it worked.

        A registry that cannot mount opens an upload session instead, which is cancelled.
        """
        response = self.transport.request(
            "POST",
            f"v2/{repository}/blobs/uploads/",
            scopes=scopes_for(repository, PUSH) | scopes_for(source, PULL),
            params={"mount": str(digest), "from": source},
        )
        with response:
            if response.status_code == 201:
                return True
            if response.status_code == 202 and response.headers.get("Location"):
                self.cancel_upload(response.headers["Location"], repository)
                return False
            if response.status_code in (401, 403, 404):
                return False
            raise self.error(response, f"mount of {digest} into {repository}", repository, PUSH)

    def cancel_upload(self, location: str, repository: str) -> None:
        try:
            self.transport.request("DELETE", location, scopes=scopes_for(repository, PUSH)).close()
        except RegistryError:
            return  # the session expires by itself

    # --------------------------------------------------------------------------- tags, catalog
    def tags(self, repository: str) -> list[str]:
        return self._paged(f"v2/{repository}/tags/list", "tags", scopes_for(repository, PULL))

    def catalog(self) -> list[str]:
        return self._paged("v2/_catalog", "repositories", frozenset({"registry:catalog:*"}))

    def _paged(self, path: str, key: str, scopes: frozenset[str]) -> list[str]:
        found: list[str] = []
        next_path: str | None = path
        while next_path is not None:
            response = self.transport.request("GET", next_path, scopes=scopes)
            with response:
                if response.status_code != 200:
                    raise self.error(response, path, None, PULL)
                try:
                    items = response.json().get(key) or []
                except (ValueError, AttributeError) as exc:
                    raise RegistryError(
                        f"registry {self.host}: unreadable answer to {path}"
                    ) from exc
                found.extend(str(item) for item in items)
                match = _NEXT_LINK.search(response.headers.get("Link", ""))
                next_path = match.group(1) if match else None
        return found

    # --------------------------------------------------------------------------------- errors
    def error(
        self,
        response: requests.Response,
        what: str,
        repository: str | None,
        actions: tuple[str, ...],
        *,
        media_type: str | None = None,
    ) -> RegistryError:
        """One line for a failed request: the registry's own error code and message."""
        codes = registry_error_codes(response)
        detail = "; ".join(f"{code}: {message}" for code, message in codes) or response.reason
        status = response.status_code
        if any(code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN") for code, _ in codes) or (
            status == 404 and what.startswith("manifest")
        ):
            return ManifestUnknownError(f"{what} not found on registry {self.host}")
        if status in (401, 403) or any(code == "DENIED" for code, _ in codes):
            target = f" to {repository}" if repository else ""
            return AccessDeniedError(
                f"registry {self.host} denied {'/'.join(actions)} access{target} ({detail})"
            )
        if media_type is not None or status == 415:
            refused = _refused_media_type(codes, media_type)
            if refused is not None or status == 415:
                return MediaTypeRefusedError(
                    f"registry {self.host} refused media type {refused or media_type} "
                    f"({what}: {detail}); push it with --compression gzip"
                )
        return RegistryError(f"registry {self.host}: {what}: {status} {detail}")


def registry_error_codes(response: requests.Response) -> list[tuple[str, str]]:
    """``[(code, message)]`` of a distribution error body (empty when there is none)."""
    try:
        document: Any = response.json()
    except ValueError:
        return []
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return []
    return [
        (str(item.get("code", "")), str(item.get("message", "")))
        for item in errors
        if isinstance(item, dict)
    ]


def _refused_media_type(codes: list[tuple[str, str]], media_type: str | None) -> str | None:
    for code, message in codes:
        if (
            code in ("MANIFEST_INVALID", "UNSUPPORTED", "BLOB_UNKNOWN")
            and "media" in message.lower()
        ):
            named = re.search(r"application/[\w.+-]+", message)
            return named.group(0) if named else media_type
    return None


def scopes_for(repository: str, actions: tuple[str, ...]) -> frozenset[str]:
    return frozenset({scope_text(repository, actions)})


def _ref_suffix(reference: str) -> str:
    return f"@{reference}" if ":" in reference else f":{reference}"


def _digest_or_none(text: str) -> Digest | None:
    if ":" not in text:
        return None
    try:
        return Digest.parse(text.strip())
    except InvalidArchiveError:
        return None


def _read_response(response: requests.Response, limit: int, what: str) -> bytes:
    data = bytearray()
    for chunk in response.iter_content(_READ_CHUNK):
        data += chunk
        if len(data) > limit:
            raise InvalidArchiveError(f"{what} is larger than {limit} bytes")
    return bytes(data)


def _read_stream(stream: IO[bytes], limit: int, what: str) -> bytes:
    data = bytearray()
    while chunk := stream.read(_READ_CHUNK):
        data += chunk
        if len(data) > limit:
            raise InvalidArchiveError(f"{what} is larger than {limit} bytes")
    return bytes(data)


class BlobReader(io.RawIOBase):
    """A blob's bytes from the registry; when the connection is cut, the next read asks for
    the rest with a Range request (a few times, then the error stands).

    Nothing here checks the digest: the copy does that on everything it reads.
    """

    def __init__(
        self, client: RegistryClient, repository: str, digest: Digest, size: int | None
    ) -> None:
        self._client = client
        self._repository = repository
        self._digest = digest
        self._size = size
        self._offset = 0
        self._resumes = 0
        self._response: requests.Response | None = None
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        import requests
        import urllib3

        while True:
            if self._done:
                return 0
            if self._response is None:
                self._response = self._client.blob_response(
                    self._repository, self._digest, self._offset
                )
            try:
                data = self._response.raw.read(len(buffer), decode_content=False)
            except (
                urllib3.exceptions.HTTPError,
                requests.exceptions.RequestException,
                OSError,
            ) as exc:
                self._cut(exc)
                continue
            if not data:
                if self._size is not None and self._offset < self._size:
                    self._cut(None)
                    continue
                self._done = True
                self._close_response()
                return 0
            n = len(data)
            buffer[:n] = data
            self._offset += n
            self._client.bytes_read += n
            return n

    def _cut(self, exc: Exception | None) -> None:
        self._close_response()
        self._resumes += 1
        if self._resumes > _MAX_RESUMES:
            reason = f": {exc}" if exc is not None else ""
            raise RegistryError(
                f"registry {self._client.host}: download of blob {self._digest} kept breaking "
                f"at byte {self._offset}{reason}"
            ) from exc

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def close(self) -> None:
        self._close_response()
        super().close()
