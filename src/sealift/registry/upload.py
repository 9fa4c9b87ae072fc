"""One blob up to a registry: monolithic when small, chunked when large, resumed after a cut.

The bytes come from ``write_verified(out)``, which writes the blob to ``out`` and raises if it is
not what its digest says; the upload is committed (the final ``PUT ?digest=``) only after that
returned, so a corrupt source never leaves a blob behind. A small blob is collected in memory
and sent in one request. A large one streams through a short queue into ``PATCH`` requests of at
most ``chunk_size`` bytes (one request when there is no limit).

When a ``PATCH`` is cut, the registry is asked where the session stands (``GET`` on the upload
URL: its ``Range`` header), the source is read again and the bytes the registry already has are
skipped. Where the registry gave the session up (distribution 2.8 does when a request body was
cut: ``BLOB_UPLOAD_INVALID``), the blob starts over in a new session.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, cast

from sealift.digest import Digest
from sealift.registry.client import PUSH, RegistryClient, scopes_for
from sealift.registry.errors import RegistryError, UploadError
from sealift.registry.options import MONOLITHIC_LIMIT
from sealift.streams import ChunkQueue

WriteVerified = Callable[[IO[bytes]], None]
Progress = Callable[[Digest, int], None]
"""``progress(digest, n)``: ``n`` more bytes of the blob went on the wire."""

MAX_CUTS = 6
_QUEUE_CHUNK = 1024 * 1024


@dataclass
class UploadStats:
    bytes_sent: int = 0
    """Body bytes handed to the connection, including those of requests that were cut."""
    resumed: int = 0
    restarted: int = 0


class _CutError(Exception):
    """A request was cut; the session may or may not have survived."""


class BlobUpload:
    def __init__(
        self,
        client: RegistryClient,
        repository: str,
        digest: Digest,
        size: int,
        write_verified: WriteVerified,
        *,
        chunk_size: int | None = None,
        monolithic_limit: int = MONOLITHIC_LIMIT,
        progress: Progress | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.client = client
        self.repository = repository
        self.digest = digest
        self.size = size
        self.write_verified = write_verified
        self.chunk_size = chunk_size
        self.monolithic_limit = min(monolithic_limit, chunk_size or monolithic_limit)
        self.progress = progress
        self.stopping = stopping or threading.Event()
        self.stats = UploadStats()
        self._location = ""
        self._scope = scopes_for(repository, PUSH)
        self._what = f"blob {digest} to {client.host}/{repository}"

    def run(self) -> UploadStats:
        if self.size <= self.monolithic_limit:
            self._monolithic()
        else:
            self._chunked()
        return self.stats

    # ------------------------------------------------------------------------------- small
    def _monolithic(self) -> None:
        collected = io.BytesIO()
        self.write_verified(collected)
        data = collected.getvalue()
        location = self._start()
        response = self.client.transport.request(
            "PUT",
            location,
            scopes=self._scope,
            headers={"Content-Type": "application/octet-stream"},
            params={"digest": str(self.digest)},
            body=data,
        )
        with response:
            self._count(len(data))
            if response.status_code != 201 and not self._arrived():
                raise self.client.error(response, f"upload of {self._what}", self.repository, PUSH)

    # ------------------------------------------------------------------------------- large
    def _chunked(self) -> None:
        self._location, offset, cuts = self._start(), 0, 0
        while True:
            try:
                self._send_from(offset)
                break
            except _CutError as exc:
                cuts += 1
                if cuts > MAX_CUTS:
                    raise UploadError(f"upload of {self._what} kept breaking: {exc}") from exc
                self._location, offset = self._where_it_stands(self._location)
        response = self.client.transport.request(
            "PUT",
            self._location,
            scopes=self._scope,
            params={"digest": str(self.digest)},
            body=b"",
        )
        with response:
            if response.status_code != 201 and not self._arrived():
                raise self.client.error(response, f"upload of {self._what}", self.repository, PUSH)

    def _where_it_stands(self, location: str) -> tuple[str, int]:
        """Resume where the registry says the session stands, or start a new session."""
        try:
            response = self.client.transport.request("GET", location, scopes=self._scope)
        except RegistryError:
            response = None
        if response is not None:
            with response:
                ranged = response.headers.get("Range", "")
                if response.status_code == 204 and ranged.startswith("0-"):
                    end = ranged[2:]
                    if end.isdigit():
                        offset = int(end) + 1 if int(end) > 0 else 0
                        self.stats.resumed += 1
                        return response.headers.get("Location") or location, offset
        self.client.cancel_upload(location, self.repository)
        self.stats.restarted += 1
        return self._start(), 0

    def _send_from(self, offset: int) -> None:
        """Send the blob from ``offset`` on in PATCH requests, following the session's
        location (each answer names the next one: distribution signs the offset into it)."""
        queue = ChunkQueue(chunk=_QUEUE_CHUNK, depth=4)
        failure: list[BaseException] = []
        producer = threading.Thread(
            target=self._produce, args=(queue, offset, failure), name="sealift-upload", daemon=True
        )
        producer.start()
        pieces = _Pieces(queue.chunks())
        position = offset
        try:
            while position < self.size:
                length = min(self.chunk_size or self.size, self.size - position)
                self._location = self._patch(self._location, pieces, position, length, failure)
                position += length
            if not pieces.exhausted():
                raise UploadError(f"{self._what}: the source has more than {self.size} bytes")
        finally:
            queue.cancel()
            producer.join()
        if failure:
            raise failure[0]

    def _produce(self, queue: ChunkQueue, skip: int, failure: list[BaseException]) -> None:
        try:
            self.write_verified(cast(IO[bytes], _Skipping(queue, skip)))
            queue.end(complete=True)
        except BrokenPipeError:
            return  # the consumer stopped (a cut); it will start a new producer
        except BaseException as exc:
            failure.append(exc)
            queue.end(complete=False)

    def _patch(
        self,
        location: str,
        pieces: _Pieces,
        start: int,
        length: int,
        failure: list[BaseException],
    ) -> str:
        import requests

        body = _Body(pieces, length, self._count, self.stopping)
        try:
            response = self.client.transport.request(
                "PATCH",
                location,
                scopes=self._scope,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{start}-{start + length - 1}",
                    "Content-Length": str(length),
                },
                body=cast(IO[bytes], body),
            )
        except (RegistryError, requests.exceptions.RequestException) as exc:
            if failure:
                raise failure[0] from exc
            if self.stopping.is_set():
                raise UploadError(f"upload of {self._what} stopped") from exc
            raise _CutError(str(exc)) from exc
        with response:
            if response.status_code == 202 and response.headers.get("Location"):
                return response.headers["Location"]
            if response.status_code in (400, 404, 416):
                raise _CutError(f"the registry answered {response.status_code}")
            raise self.client.error(response, f"upload of {self._what}", self.repository, PUSH)

    # ------------------------------------------------------------------------------ helpers
    def _start(self) -> str:
        response = self.client.transport.request(
            "POST", f"v2/{self.repository}/blobs/uploads/", scopes=self._scope
        )
        with response:
            location = response.headers.get("Location")
            if response.status_code != 202 or not location:
                raise self.client.error(response, f"upload of {self._what}", self.repository, PUSH)
        return location

    def _arrived(self) -> bool:
        """After an unclear answer to a commit: whether the registry has the blob anyway."""
        try:
            return self.client.blob_size(self.repository, self.digest) == self.size
        except RegistryError:
            return False

    def _count(self, n: int) -> None:
        self.stats.bytes_sent += n
        if self.progress is not None:
            self.progress(self.digest, n)


class _Skipping(io.RawIOBase):
    """Passes writes on to ``out`` except the first ``skip`` bytes."""

    def __init__(self, out: ChunkQueue, skip: int) -> None:
        self._out = out
        self._skip = skip

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | memoryview) -> int:  # type: ignore[override]
        size = len(data)
        if self._skip >= size:
            self._skip -= size
            return size
        view = memoryview(data)[self._skip :]
        self._skip = 0
        self._out.write(view)
        return size


class _Pieces:
    """The queue's chunks as one stream that PATCH bodies take consecutive slices of."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def take(self, size: int) -> bytes:
        if not self._pending:
            piece = next(self._chunks, None)
            if piece is None:
                raise UploadError("the blob's source ended early")
            self._pending = memoryview(piece)
        data = bytes(self._pending[:size])
        self._pending = self._pending[len(data) :]
        return data

    def exhausted(self) -> bool:
        return not self._pending and next(self._chunks, None) is None


class _Body:
    """``length`` bytes of the pieces as a request body (requests reads it and sends
    ``Content-Length: len(body)``). Running dry early raises, which aborts the request."""

    def __init__(
        self,
        pieces: _Pieces,
        length: int,
        count: Callable[[int], None],
        stopping: threading.Event,
    ) -> None:
        self._pieces = pieces
        self._stopping = stopping
        self._left = length
        self._length = length
        self._count = count

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        if self._left == 0:
            return b""
        if self._stopping.is_set():
            raise UploadError("the push was stopped")
        data = self._pieces.take(self._left if size < 0 else min(size, self._left))
        self._left -= len(data)
        self._count(len(data))
        return data
