"""A Docker engine as a source (its save stream) and as a sink (its load endpoint).

The engine is reached the way the docker CLI reaches it: ``-H/--host``, else DOCKER_HOST, else
the current docker context. Images are read with the Engine API's save endpoint, streamed into the
archive reader (so layers are compressed and hashed while the engine is still exporting), and
written with the load endpoint, fed by the archive writer. On a unix socket sealift speaks HTTP/1.0
itself (the docker SDK and requests are never imported): a classic store's load gets the archive
as one body of its known size, written straight to the socket; the containerd store's, and any
engine over TCP or SSH, through the SDK in chunks.

Loading is all-or-nothing: every layer is verified while it streams to the engine, and the end of
the tar stream is sent only once every check has passed. A failure aborts the request mid-stream,
so the engine sees a truncated archive and loads (and tags) nothing.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlencode

from sealift import compression
from sealift.cache import Key, LayerCache
from sealift.digest import Digest, Hasher
from sealift.ends.archive import ArchiveSource
from sealift.ends.base import WriteResult
from sealift.errors import EngineError, NotFoundError, SealiftError, UsageError
from sealift.formats.write import archive_size, write_archive
from sealift.model import Entry, Image, Layer
from sealift.progress import human_size
from sealift.reference import Reference
from sealift.streams import ChunkQueue, CountingReader
from sealift.transfer import renamed, verify_layer

if TYPE_CHECKING:
    import docker

# The docker SDK (with requests) takes a third of sealift's start-up time, so it is imported on
# first use: a save asks the engine to start exporting before that.

_PIPE_CHUNK = 1024 * 1024
_HEADER_BUFFER = 64 * 1024
ZSTD_MIN_VERSION = (23, 0)


def resolve_host(host: str | None) -> str | None:
    """The engine address the docker CLI would use: --host, DOCKER_HOST, then the context."""
    if host:
        return host
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if _current_context_name() == "default":
        return None  # the default socket, known without importing the docker SDK
    from docker.context import ContextAPI

    try:
        context = ContextAPI.get_current_context()
    except Exception:  # a broken ~/.docker/config.json should not stop the default socket
        return None
    return getattr(context, "Host", None) or None


def _current_context_name() -> str:
    """The current context as the docker SDK finds it: ``currentContext`` in the first
    config file that exists ($DOCKER_CONFIG/config.json, ~/.docker/config.json, ~/.dockercfg)."""
    home = Path.home()
    candidates = [home / ".docker" / "config.json", home / ".dockercfg"]
    if os.environ.get("DOCKER_CONFIG"):
        candidates.insert(0, Path(os.environ["DOCKER_CONFIG"]) / "config.json")
    for candidate in candidates:
        if not candidate.exists():
            continue
        try:
            name = json.loads(candidate.read_bytes()).get("currentContext", "default")
        except (OSError, ValueError, AttributeError):
            return "default"
        return name if isinstance(name, str) else "default"
    return "default"


class Engine:
    """A connection to one Docker engine, with errors translated to one clear line."""

    def __init__(self, host: str | None = None, timeout: int = 600) -> None:
        self.host = resolve_host(host) or "unix:///var/run/docker.sock"
        self._timeout = timeout
        self._api: docker.APIClient | None = None
        self._version: dict[str, Any] | None = None
        self._info: dict[str, Any] | None = None
        self._containerd_store: bool | None = None

    @property
    def api(self) -> docker.APIClient:
        """The SDK's client, made (and the API version negotiated) on first use."""
        if self._api is None:
            import docker
            import requests

            try:
                self._api = docker.APIClient(
                    base_url=self.host, version="auto", timeout=self._timeout
                )
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise EngineError(_unreachable(self.host, exc)) from exc
        return self._api

    def ensure_reachable(self) -> None:
        """Raise EngineError now if the engine cannot be reached, rather than at the first call."""
        _ = self.api

    @property
    def version(self) -> dict[str, Any]:
        if self._version is None:
            self._version = self._get("/version", lambda: self.api.version())
        return self._version

    @property
    def info(self) -> dict[str, Any]:
        """What ``docker info`` shows (asked once)."""
        if self._info is None:
            self._info = self._get("/info", lambda: self.api.info())
        return self._info

    def _get(self, path: str, through_sdk: Callable[[], Any]) -> Any:
        """The JSON at ``path`` of the Engine API: asked straight over a unix socket (the docker
        SDK, with requests, is a third of sealift's start-up), through the SDK elsewhere."""
        if not self.host.startswith("unix://"):
            return self.call(through_sdk)
        status, body = _unix_exchange(self.host, "GET", path, self._timeout)
        if status == 404:
            raise NotFoundError(_api_message(body) or f"{path}: not found")
        if status // 100 != 2:
            raise EngineError(f"the engine refused: {_api_message(body) or status}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise EngineError(f"the engine sent invalid JSON for {path}") from exc

    @property
    def version_tuple(self) -> tuple[int, int]:
        parts = str(self.version.get("Version", "0.0")).split(".")
        try:
            return int(parts[0]), int(parts[1].split("-")[0] if len(parts) > 1 else 0)
        except ValueError:
            return (0, 0)

    @property
    def is_local(self) -> bool:
        return self.host.startswith(("unix://", "npipe://"))

    @property
    def containerd_store(self) -> bool:
        """Whether the engine keeps images in containerd's image store (Docker 25+, opt-in)."""
        if self._containerd_store is None:
            status = self.info.get("DriverStatus") or []
            self._containerd_store = any(
                pair and pair[0] == "driver-type" and "snapshotter" in str(pair[1])
                for pair in status
            )
        return self._containerd_store

    def call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        import docker
        import requests

        try:
            return method(*args, **kwargs)
        except docker.errors.ImageNotFound as exc:
            raise NotFoundError(str(exc.explanation or exc)) from exc
        except docker.errors.APIError as exc:
            raise EngineError(f"the engine refused: {exc.explanation or exc}") from exc
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise EngineError(_unreachable(self.host, exc)) from exc
        except PermissionError as exc:
            raise EngineError(_unreachable(self.host, exc)) from exc

    def inspect(self, ref: str) -> dict[str, Any]:
        try:
            return self._inspect(ref)
        except NotFoundError as exc:
            raise NotFoundError(
                f"image {ref!r} not found in the engine at {self.host} "
                "(sealift never pulls: build it or `docker pull` it first)"
            ) from exc

    def _inspect(self, ref: str) -> dict[str, Any]:
        path = f"/images/{quote(ref, safe='/:@')}/json"
        found = self._get(path, lambda: self.api.inspect_image(ref))  # type: ignore[no-untyped-call]
        return cast(dict[str, Any], found)

    def image_ids(self) -> list[str]:
        images = self._get("/images/json?all=1", lambda: self.api.images(all=True))
        return [image["Id"] for image in images]

    def layer_chains(self) -> set[Digest]:
        """Chain IDs of every layer stack the engine holds (what a classic load can skip)."""
        return set(self.chain_holders())

    def chain_holders(self) -> dict[Digest, str]:
        """Each layer stack the engine holds (by chain ID) and an image that holds it."""
        holders: dict[Digest, str] = {}
        for image_id in self.image_ids():
            try:
                layers = self._inspect(image_id)["RootFS"].get("Layers") or []
            except NotFoundError:
                continue
            for chain in chain_ids([Digest.parse(layer) for layer in layers]):
                holders.setdefault(chain, image_id)
        return holders

    def tag(self, image_id: str, reference: Reference) -> None:
        repository, tag = reference.familiar_repository, reference.tag
        if not self.host.startswith("unix://"):
            self.call(self.api.tag, image_id, repository, tag, force=True)
            return
        query = urlencode({"repo": repository, **({"tag": tag} if tag else {}), "force": "1"})
        path = f"/images/{quote(image_id, safe='/:@')}/tag?{query}"
        status, body = _unix_exchange(self.host, "POST", path, self._timeout)
        if status == 404:
            raise NotFoundError(_api_message(body) or f"no image {image_id}")
        if status // 100 != 2:
            raise EngineError(f"the engine refused: {_api_message(body) or status}")

    def start_save(self, names: list[str]) -> SaveRequest:
        """Ask the engine to start exporting ``names`` now; read the tar stream later.

        Docker exports every layer to a temp dir before it sends the first byte, so asking first
        hides the rest of the set-up (imports, inspects, a remote's handshake) behind that.
        """
        return SaveRequest(self, names)


class SaveRequest:
    """A save the engine is working on; ``stream()`` waits for its response.

    On a unix socket the request goes out at once over HTTP/1.0, so the engine sends the body as
    is rather than in the small chunks of chunked encoding, which would cost a Python call every
    few kilobytes. Elsewhere the SDK asks when the stream is wanted.
    """

    def __init__(self, engine: Engine, names: list[str]) -> None:
        self._engine = engine
        self._names = names
        self._pending: IO[bytes] | None = None
        if engine.host.startswith("unix://"):
            self._pending = self._send()

    def _send(self) -> IO[bytes]:
        query = urlencode([("names", name) for name in self._names])
        sock = _unix_request(self._engine.host, "GET", f"/images/get?{query}")
        try:
            # a small buffer for the headers: the body's large reads then go straight from
            # the socket into the reader's buffers
            return cast(IO[bytes], sock.makefile("rb", buffering=_HEADER_BUFFER))
        finally:
            sock.close()  # the file keeps the connection open until it is closed

    def stream(self) -> IO[bytes]:
        """The tar stream, once the engine has exported everything and starts sending."""
        if self._pending is None:
            return _save_stream_sdk(self._engine, self._names)
        stream, self._pending = self._pending, None
        status = stream.readline(1024).decode("latin-1").split(" ", 2)
        headers = _read_headers(stream)
        if len(status) < 2 or status[1] != "200":
            body = stream.read(64 * 1024).decode(errors="replace").strip()
            stream.close()
            message = _api_message(body) or " ".join(status).strip()
            if status[1:2] == ["404"]:
                raise NotFoundError(message)
            raise EngineError(f"the engine refused to save: {message}")
        if "chunked" in headers.get("transfer-encoding", ""):
            stream.close()  # an HTTP/1.0 request never gets chunks; fall back if it does
            return _save_stream_sdk(self._engine, self._names)
        return stream

    def close(self) -> None:
        """Drop a request whose stream was never read (the engine stops when it next writes)."""
        if self._pending is not None:
            self._pending.close()
            self._pending = None


def _unix_request(
    host: str,
    method: str,
    path: str,
    *,
    timeout: float | None = None,
    headers: dict[str, str] | None = None,
) -> socket.socket:
    """A connection to the engine at unix ``host`` with an HTTP/1.0 request sent on it (so the
    response comes whole, never in chunks, and ends when the engine closes the connection);
    a request with a body (``Content-Length`` in ``headers``) is sent up to that body."""
    lines = [f"{method} {path} HTTP/1.0", "Host: docker"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(host.removeprefix("unix://"))
        sock.sendall("\r\n".join([*lines, "", ""]).encode("latin-1"))
    except OSError as exc:
        sock.close()
        raise EngineError(_unreachable(host, exc)) from exc
    return sock


def _unix_exchange(host: str, method: str, path: str, timeout: float) -> tuple[int, str]:
    """One small request without a body: the response's status and body."""
    headers = {"Content-Length": "0"} if method != "GET" else None
    with _unix_request(host, method, path, timeout=timeout, headers=headers) as sock:
        try:
            with sock.makefile("rb") as stream:
                status, _ = _read_response_head(stream)
                return status, stream.read().decode(errors="replace")
        except OSError as exc:
            raise EngineError(_unreachable(host, exc)) from exc


def _read_response_head(stream: IO[bytes]) -> tuple[int, dict[str, str]]:
    """The status code and headers of an HTTP response."""
    status = stream.readline(1024).decode("latin-1").split(" ", 2)
    headers = _read_headers(stream)
    if len(status) < 2 or not status[1].isdigit():
        raise EngineError("the engine sent an invalid HTTP response")
    return int(status[1]), headers


def _save_stream_sdk(engine: Engine, names: list[str]) -> IO[bytes]:
    api = engine.api
    url = f"{api.base_url}/v{api.api_version}/images/get"
    response = engine.call(api.get, url, params={"names": names}, stream=True, timeout=None)
    if response.status_code != 200:
        raise EngineError(f"the engine refused to save: {response.text.strip()}")
    response.raw.decode_content = True
    return response.raw  # type: ignore[no-any-return]


def _read_headers(stream: IO[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(100):
        line = stream.readline(8192).decode("latin-1").strip()
        if not line:
            return headers
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    raise EngineError("the engine sent an invalid HTTP response")


def _api_message(body: str) -> str:
    try:
        return str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        return body


def _unreachable(host: str, exc: BaseException) -> str:
    text = str(exc)
    if "Permission denied" in text or isinstance(exc, PermissionError):
        return (
            f"permission denied on the Docker engine socket {host}: "
            "add your user to the docker group, or run with sudo"
        )
    if "No such file" in text or "Connection refused" in text or "Connection aborted" in text:
        return (
            f"cannot connect to the Docker engine at {host}: "
            "is dockerd running? (set -H or DOCKER_HOST)"
        )
    return f"cannot talk to the Docker engine at {host}: {text.splitlines()[0] if text else exc!r}"


def chain_ids(diff_ids: list[Digest]) -> list[Digest]:
    """The chain ID of each layer stack.

    chain(0) = diff(0); chain(n) = sha256(chain(n-1) + " " + diff(n)).
    """
    chains: list[Digest] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
            continue
        hasher = Hasher()
        hasher.update(f"{chains[-1]} {diff_id}".encode())
        chains.append(hasher.digest())
    return chains


class EngineSource:
    """Images from an engine, read from its save stream as it arrives."""

    def __init__(self, engine: Engine, refs: list[str]) -> None:
        if not refs:
            raise UsageError("name at least one image to save")
        self.engine = engine
        self.refs = refs
        self._request = engine.start_save(refs)
        try:
            self.found: dict[str, dict[str, Any]] = {ref: engine.inspect(ref) for ref in refs}
        except BaseException:
            self._request.close()
            raise
        self._archive: ArchiveSource | None = None
        self._cache: LayerCache | None = None
        self._arrival_codec: str | None = None
        self._keep_layers = True

    def use_cache(self, cache: LayerCache) -> None:
        """Take layers compressed before from ``cache``, and keep those compressed now."""
        self._cache = cache

    @property
    def total_size(self) -> int:
        return sum(
            int(info.get("Size") or 0)
            for info in {i["Id"]: i for i in self.found.values()}.values()
        )

    @property
    def input_counter(self) -> CountingReader | None:
        """What has been read of the engine's save stream so far."""
        return self._archive.input_counter if self._archive else None

    def entries(self, want_codec: str | None = None, want_level: int | None = None) -> list[Entry]:
        if self._archive is None:
            self._arrival_codec, self._keep_layers = self._plan_arrival(want_codec, want_level)
            self._archive = ArchiveSource(
                self._request.stream(), keep_layers=self._keep_layers, transcode_compressed=False
            )
            if self._cache is not None:
                self._archive.use_cache(self._cache)
        try:
            entries = self._archive.entries(self._arrival_codec, want_level)
        except _stream_errors() as exc:
            raise EngineError(f"the engine's save stream broke: {exc}") from exc
        if not self._keep_layers:
            self._check_all_cached(entries, want_codec, want_level)
        return self._in_request_order(entries)

    def _in_request_order(self, entries: list[Entry]) -> list[Entry]:
        """The entries in the order their images were named: an engine's export lists them in
        an order of its own (Docker 20.10's varies between runs), and a save's bytes must not."""
        rank: dict[str, int] = {}
        for index, info in enumerate(self.found.values()):
            rank.setdefault(str(info["Id"]), index)

        def position(entry: Entry) -> int:
            ids = {engine_id for image in entry.images() for engine_id in engine_ids(image)}
            return min((rank[i] for i in ids if i in rank), default=len(rank))

        return sorted(entries, key=position)

    def _plan_arrival(self, codec: str | None, level: int | None) -> tuple[str | None, bool]:
        """The codec to compress layers with as they arrive, and whether to keep them at all.

        Which member of the stream is which layer is known only once it has been read, so
        either every layer is compressed on arrival (none is cached: overlap with the export)
        or none is (the copy then takes cached ones from the cache and compresses the rest).
        When all are cached, and held verified before the stream starts, the layers need not
        even be spooled: they are only hashed.
        """
        if self._cache is None or codec is None:
            return codec, True
        wanted = {layer for info in self.found.values() for layer in _diff_ids(info)}
        cached = {d for d in wanted if self._cache.pin(Key.of(d, codec, level)) is not None}
        if not cached:
            return codec, True
        # the containerd store sends compressed layers, which a save may keep as they are
        return None, cached != wanted or self.engine.containerd_store

    def _check_all_cached(self, entries: list[Entry], codec: str | None, level: int | None) -> None:
        """Layers that were not kept must all be in the cache (unless a tag moved meanwhile)."""
        assert self._cache is not None and codec is not None
        for entry in entries:
            for image in entry.images():
                for layer in image.layers:
                    if self._cache.pin(Key.of(layer.diff_id, codec, level)) is None:
                        raise EngineError(
                            "the images changed while sealift read them (a tag moved): try again"
                        )

    def current_member(self) -> str | None:
        return self._archive.current_member() if self._archive is not None else None

    def close(self) -> None:
        self._request.close()
        if self._archive is not None:
            self._archive.close()


def _stream_errors() -> tuple[type[BaseException], ...]:
    """What a broken save stream raises: requests' errors only where the SDK read it (so a
    save over a unix socket never imports requests)."""
    requests = sys.modules.get("requests")
    if requests is None:
        return (OSError,)
    return (OSError, requests.exceptions.RequestException)


def _diff_ids(info: dict[str, Any]) -> list[Digest]:
    return [Digest.parse(layer) for layer in (info.get("RootFS") or {}).get("Layers") or []]


@dataclass
class LoadPlan:
    """What a load sends: images the engine lacks, tags for those it has, layers it can skip."""

    send: list[Entry] = field(default_factory=list)
    tag_only: list[tuple[Image, Entry, str]] = field(default_factory=list)
    """Images the engine has, with the ID it knows each by."""
    skip_layers: set[Digest] = field(default_factory=set)


class EngineSink:
    """Loads images into an engine: only what it lacks, verified before anything is tagged."""

    def __init__(
        self,
        engine: Engine,
        *,
        thin: bool = True,
        rename: Reference | None = None,
        whole_entries: Callable[[list[Entry]], list[Entry]] | None = None,
    ) -> None:
        """``whole_entries`` gives the entries an engine refused thin as they are to be read
        for a whole load: for a writer that holds the left-out layers nowhere until then."""
        self.engine = engine
        self.thin = thin
        self.rename = rename
        self.whole_entries = whole_entries
        self.bytes_sent = 0
        self._state: tuple[set[str], set[Digest]] | None = None
        self._upload: _ArchiveUpload | _SocketUpload | None = None

    @property
    def keeps_blobs(self) -> bool:
        """Only the containerd image store keeps the blobs it is given; the classic store keeps
        uncompressed layers and rebuilds manifests when it pushes or saves."""
        return self.engine.containerd_store

    def accepts_codec(self, codec: str) -> bool:
        """The containerd store keeps blobs as given (and reads zstd): every layer goes as it
        is, so the loaded image's digest is the manifest's. A classic store over a local socket
        takes uncompressed layers: we decompress faster than the engine does, in parallel with
        it, and the engine then skips decompression. Over a network, whatever the engine can
        decompress (zstd from Docker 23 on)."""
        if codec == compression.ZSTD and self.engine.version_tuple < ZSTD_MIN_VERSION:
            return False
        if self.engine.containerd_store:
            return codec in compression.LAYER_CODECS
        if self.engine.is_local:
            return codec == compression.NONE
        return codec in compression.LAYER_CODECS

    def plan(self, entries: list[Entry]) -> LoadPlan:
        if self.rename is not None:
            entries = renamed(entries, str(self.rename), as_reference=True)
        # OCI ref names that are not image references (`app-1`) name nothing an engine lists:
        # such an image loads untagged, by ID, on both stores
        entries = [Entry(entry.target, entry.tags, ()) for entry in entries]
        present, chains = self._engine_state()
        plan = LoadPlan()
        for entry in entries:
            entry = entry.without_attestations()
            images = list(entry.images())
            if not all(image.is_loadable for image in images):
                raise UsageError(
                    f"{_name(entry)} is an OCI artifact, not a container image: "
                    "engines cannot load it"
                )
            known = engine_ids(images[0]) & present if len(images) == 1 else set()
            if known:
                plan.tag_only.append((images[0], entry, known.pop()))
            else:
                plan.send.append(entry)
        if chains:
            plan.skip_layers = layers_in_chains(plan.send, chains)
        if self.engine.containerd_store and self.thin:
            held = _layers_of([entry for _, entry, _ in plan.tag_only])
            plan.skip_layers |= set(_layers_of(plan.send)) & set(held)
        return plan

    def _engine_state(self) -> tuple[set[str], set[Digest]]:
        """Image IDs the engine has, and (for thin loads) its layer chain IDs; asked once.

        The containerd store cannot say which blobs it holds (Docker 26's API lists images, not
        content): a layer whose stack it has was most likely loaded from the same blob, so it is
        left out, and the load is checked afterwards (`_check_loaded`) and repeated whole when
        the store lacked the blob after all.
        """
        if self._state is None:
            self._state = (
                set(self.engine.image_ids()),
                self.engine.layer_chains() if self.thin else set(),
            )
        return self._state

    def missing_layers(self, entries: list[Entry]) -> set[Digest]:
        """The layers a load of ``entries`` will actually send (the copy prepares only these)."""
        plan = self.plan(entries)
        return set(_layers_of(plan.send)) - plan.skip_layers

    def write(self, entries: list[Entry]) -> WriteResult:
        plan = self.plan(entries)
        layers = _layers_of(plan.send)
        result = WriteResult(
            layers_sent=len(layers) - len(plan.skip_layers), layers_skipped=len(plan.skip_layers)
        )
        if plan.send:
            skipped = [layers[digest] for digest in plan.skip_layers]
            try:
                result.names.extend(self._load(plan.send, plan.skip_layers, skipped))
                self._check_loaded(plan.send)
            except EngineError as exc:
                if not plan.skip_layers and not self._worth_another_try(exc):
                    raise
                # an engine that refuses (or half takes) a thin archive gets everything
                whole = plan.send if self.whole_entries is None else self.whole_entries(plan.send)
                result.names = self._load(whole, set(), [])
                self._check_loaded(whole)
                result.layers_sent, result.layers_skipped = len(layers), 0
        if plan.tag_only:
            tagged_layers = _layers_of([entry for _, entry, _ in plan.tag_only])
            _Background([layer for d, layer in tagged_layers.items() if d not in layers]).wait()
        for image, entry, engine_id in plan.tag_only:
            for tag in entry.tags:
                self.engine.tag(engine_id, tag)
            result.names.extend(_loaded_lines(image, entry))
        result.bytes_sent = self.bytes_sent
        return result

    def _worth_another_try(self, error: EngineError) -> bool:
        """The containerd store can fail to unpack a blob a load that was cut off earlier left
        half ingested ("content digest ... not found"); a second load writes it whole."""
        return self.engine.containerd_store and "not found" in str(error)

    def _check_loaded(self, entries: list[Entry]) -> None:
        """The containerd store accepts an archive whose blobs it lacks and then hides the
        image; only what it lists was loaded whole."""
        if not self.engine.containerd_store:
            return
        listed = set(self.engine.image_ids())
        for entry in entries:
            images = list(entry.images())
            if len(images) == 1 and not engine_ids(images[0]) & listed:
                raise EngineError(f"the engine did not take {_name(entry)} whole")

    def current_blob(self) -> str | None:
        """The blob being sent to the engine now, for progress displays."""
        return self._upload.current if self._upload is not None else None

    def _load(self, entries: list[Entry], skip: set[Digest], skipped: list[Layer]) -> list[str]:
        # the containerd store (Docker 26) can drop such a connection without an answer:
        # it gets the archive through the SDK, in chunks
        if self.engine.host.startswith("unix://") and not self.engine.containerd_store:
            return self._load_over_socket(entries, skip, skipped)
        body = self._upload = _ArchiveUpload(entries, skip, skipped)
        api = self.engine.api
        url = f"{api.base_url}/v{api.api_version}/images/load"
        try:
            response = self.engine.call(
                self.engine.api.post,
                url,
                params={"quiet": "1"},
                data=body.chunks(),
                headers={"Content-Type": "application/x-tar"},
                stream=True,
                timeout=None,
            )
        except (EngineError, _AbortedError):
            body.raise_if_failed()
            raise
        finally:
            body.close()
        body.raise_if_failed()
        self.bytes_sent += body.bytes_sent
        if response.status_code != 200:
            raise EngineError(f"the engine refused the load: {response.text.strip()}")
        return _load_messages(response.iter_lines())

    def _load_over_socket(
        self, entries: list[Entry], skip: set[Digest], skipped: list[Layer]
    ) -> list[str]:
        """The archive written straight into the request: its exact size is known beforehand,
        so it goes as one plain body (no chunks to frame, no queue between threads). On a
        failure the connection is dropped short of that size: the engine loads nothing."""
        host = self.engine.host
        size = archive_size(entries, omit=skip)
        headers = {"Content-Type": "application/x-tar", "Content-Length": str(size)}
        with _unix_request(host, "POST", "/images/load?quiet=1", headers=headers) as sock:
            upload = self._upload = _SocketUpload(sock, size)
            try:
                write_archive(
                    entries,
                    cast(IO[bytes], upload),
                    omit=skip,
                    before_end=_Background(skipped).wait,
                    on_blob=upload.sending,
                )
            except _HungUpError as exc:  # its answer, if it gave one, says why
                raise EngineError(_refusal(sock) or _unreachable(host, exc)) from exc
            upload.check_complete()
            self.bytes_sent += upload.bytes_sent
            return _load_response(sock, host)


def engine_ids(image: Image) -> set[str]:
    """The IDs an engine may know ``image`` by: its config digest (the classic store) or its
    manifest digest (the containerd store)."""
    ids = {str(image.id)}
    if image.manifest is not None:
        ids.add(str(image.manifest.digest))
    return ids


def _layers_of(entries: list[Entry]) -> dict[Digest, Layer]:
    return {
        layer.digest: layer
        for entry in entries
        for image in entry.images()
        for layer in image.layers
    }


def layers_in_chains(entries: list[Entry], chains: set[Digest]) -> set[Digest]:
    """Layers every image that uses them can leave out, because an engine (or a site) holds
    their stack: those whose chain ID is in ``chains``."""
    present: set[Digest] = set()
    needed: set[Digest] = set()
    for entry in entries:
        for image in entry.images():
            stacks = chain_ids([layer.diff_id for layer in image.layers])
            for layer, chain in zip(image.layers, stacks, strict=True):
                (present if chain in chains else needed).add(layer.digest)
    return present - needed


def _load_response(sock: socket.socket, host: str) -> list[str]:
    """The ``Loaded image`` lines of the engine's answer to a load sent over ``sock``."""
    try:
        with sock.makefile("rb") as stream:
            status, _ = _read_response_head(stream)
            if status != 200:
                body = stream.read(64 * 1024).decode(errors="replace").strip()
                raise EngineError(f"the engine refused the load: {body}")
            return _load_messages(line.rstrip(b"\r\n") for line in stream)
    except OSError as exc:
        raise EngineError(_unreachable(host, exc)) from exc


def _refusal(sock: socket.socket) -> str | None:
    """Why the engine stopped taking a load, if it said so before hanging up."""
    try:
        sock.settimeout(5)
        with sock.makefile("rb") as stream:
            status, _ = _read_response_head(stream)
            body = stream.read(64 * 1024).decode(errors="replace").strip()
    except (OSError, EngineError):
        return None
    message = _api_message(body) or body
    return f"the engine refused the load: {message}" if status != 200 and message else None


def _load_messages(raw_lines: Iterable[bytes]) -> list[str]:
    lines: list[str] = []
    for raw in raw_lines:
        if not raw:
            continue
        message = json.loads(raw)
        if message.get("error"):
            raise EngineError(f"the engine failed to load: {message['error'].strip()}")
        text = (message.get("stream") or "").strip()
        if text:
            lines.extend(line for line in text.splitlines() if line.startswith("Loaded image"))
    return lines


def _name(entry: Entry) -> str:
    if entry.tags:
        return entry.tags[0].familiar
    return entry.ref_names[0] if entry.ref_names else "an untagged entry"


def _loaded_lines(image: Image, entry: Entry) -> list[str]:
    if not entry.tags:
        return [f"Loaded image ID: {image.id}"]
    return [f"Loaded image: {tag.familiar}" for tag in entry.tags]


class _ArchiveUpload:
    """Writes the archive from a thread; the HTTP request takes it as chunks.

    Skipped layers are left out of the tar but still verified, in parallel, before the end of
    the archive is written. If anything fails the chunk generator raises, which aborts the
    request so the engine never sees a complete archive.
    """

    def __init__(self, entries: list[Entry], skip: set[Digest], skipped: list[Layer]) -> None:
        self.error: BaseException | None = None
        self.bytes_sent = 0
        self.current: str | None = None
        self._chunks = ChunkQueue(_PIPE_CHUNK)
        self._thread = threading.Thread(
            target=self._produce, args=(entries, skip, skipped), daemon=True
        )
        self._thread.start()

    def _produce(self, entries: list[Entry], skip: set[Digest], skipped: list[Layer]) -> None:
        try:
            checks = _Background(skipped)
            write_archive(
                entries,
                cast(IO[bytes], self._chunks),
                omit=skip,
                before_end=checks.wait,
                on_blob=self._sending,
            )
        except BaseException as exc:
            self.error = exc
        finally:
            self._chunks.end(complete=self.error is None)

    def _sending(self, digest: Digest, size: int) -> None:
        self.current = f"{digest.short} ({human_size(size)})"

    def chunks(self) -> Iterator[bytes]:
        for chunk in self._chunks.chunks():
            self.bytes_sent += len(chunk)
            yield chunk
        self._thread.join()
        if self.error is not None:
            raise _AbortedError from self.error

    def raise_if_failed(self) -> None:
        self._thread.join(timeout=5)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self._chunks.cancel()


class _SocketUpload(io.RawIOBase):
    """The body of a load as it is written to the engine's socket: counted, and named blob by
    blob for progress displays."""

    def __init__(self, sock: socket.socket, size: int) -> None:
        self._sock = sock
        self.size = size
        """The Content-Length announced: the body must be exactly that long."""
        self.bytes_sent = 0
        self.current: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | memoryview) -> int:  # type: ignore[override]
        if self.bytes_sent + len(data) > self.size:
            raise SealiftError(f"a load of {self.size} bytes got more to send: a sealift bug")
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise _HungUpError(str(exc)) from exc
        self.bytes_sent += len(data)
        return len(data)

    def check_complete(self) -> None:
        """Raise unless the whole announced body was sent (the engine would wait for the
        rest forever)."""
        if self.bytes_sent != self.size:
            raise SealiftError(
                f"a load of {self.size} bytes ended after {self.bytes_sent}: a sealift bug"
            )

    def sending(self, digest: Digest, size: int) -> None:
        self.current = f"{digest.short} ({human_size(size)})"


class _HungUpError(Exception):
    """The engine closed the connection while a load was being sent."""


class _AbortedError(Exception):
    """Raised inside the request body to cut the upload short."""


class _Background:
    def __init__(self, layers: list[Layer]) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(layers,), daemon=True)
        self._thread.start()

    def _run(self, layers: list[Layer]) -> None:
        try:
            for layer in layers:
                verify_layer(layer)
        except BaseException as exc:
            self.error = exc

    def wait(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error
