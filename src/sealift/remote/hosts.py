"""Push to and pull from hosts over SSH: pick the remote mode, run it, report per host.

One ssh connection starts with a small fixed shell line: if ``sealift`` is on the remote PATH it
becomes ``sealift agent`` (mode 1, the protocol); otherwise it lists which of ``docker`` and
``podman`` the remote has (mode 2: a thin archive into ``docker load`` / ``podman load``).
Many hosts are served by a thread each (``parallel`` at a time), from one spool of the source;
one host failing does not stop the others.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, cast

from sealift import compression
from sealift.blobs import make_spool_dir
from sealift.cache import LayerCache, disabled_by_environment
from sealift.digest import Digest
from sealift.ends.base import all_layers
from sealift.ends.engine import chain_ids, engine_ids, layers_in_chains
from sealift.ends.ssh import Ssh, SshTarget, last_line, remote_command, stop_all
from sealift.errors import EngineError, SealiftError, TransportError, UsageError
from sealift.formats.write import write_archive
from sealift.inventory import of_remote
from sealift.model import Entry, Manifest
from sealift.reference import Reference
from sealift.remote import protocol
from sealift.remote.deltas import DeltaPlan, PatchMaker, send_layers_or_patches
from sealift.remote.protocol import (
    NO_AGENT,
    Channel,
    Need,
    OfferedImage,
    ProtocolError,
    RemoteError,
)
from sealift.remote.receiver import Receiver, StagingReceiver, staged_entry
from sealift.remote.sender import (
    configs_for,
    layers_by_diff_id,
    manifests_for,
    single_images,
    without_zstd,
)
from sealift.remote.source import Offering
from sealift.remote.staging import Staging

LISTING_END = "sealift-listing-end"
"""Printed after a remote engine's image listing, before the IDs its tags show."""
TOOLS_PROBE = "for t in docker podman; do command -v $t >/dev/null 2>&1 && echo tool $t; done; true"
BOOTSTRAP = (
    "if command -v sealift >/dev/null 2>&1; then exec sealift agent; fi; "
    f"echo {NO_AGENT.decode()}; {TOOLS_PROBE}"
)
"""The fixed remote line: nothing user-typed reaches it."""
NOT_RUNNABLE = (126, 127)
"""Shell exit statuses for a command found but not runnable, or not found."""

CLI_TOOLS = ("docker", "podman")


# What crosses an SSH link costs more than the CPU to squeeze it: without sealift on the remote,
# the archive for `docker load` is gzipped as densely as gzip's own default, not save's level 3.
WIRE_GZIP_LEVEL = 6


@dataclass(frozen=True)
class RemoteOptions:
    compression: str = compression.ZSTD
    """Wire compression for mode 1 (zstd, gzip, none); mode 2 uses gzip unless none."""
    level: int | None = None
    dry_run: bool = False
    ssh_command: tuple[str, ...] | None = None
    parallel: int = 4
    platform: str | None = None
    mode: str = "auto"
    """auto, agent, docker or podman."""
    delta: bool = True
    """Send layers as patches against layers the host holds, where that pays (agent only)."""


@dataclass
class HostResult:
    host: str
    ok: bool = False
    mode: str = ""
    error: str | None = None
    images: list[dict[str, Any]] = field(default_factory=list)
    layers_sent: int = 0
    layers_skipped: int = 0
    layers_resumed: int = 0
    bytes_to_send: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0
    deltas: list[dict[str, Any]] = field(default_factory=list)
    """Per layer sent (agent, protocol 2): whether it went as a patch, against what, or why not."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class HostProgress(Protocol):
    """Where per-host progress goes (the CLI draws bars on a terminal)."""

    def total(self, host: str, raw_bytes: int) -> None:
        """The host will get about ``raw_bytes`` of layer data (before compression)."""

    def advance(self, host: str, wire: int, raw: int) -> None:
        """``wire`` more bytes went to the host, carrying ``raw`` more bytes of layer data."""


class NoProgress:
    def total(self, host: str, raw_bytes: int) -> None:
        return None

    def advance(self, host: str, wire: int, raw: int) -> None:
        return None


# ----------------------------------------------------------------------------------- sessions
class _Session:
    """One ssh process running the bootstrap line, with stderr drained in the background."""

    def __init__(self, ssh: Ssh) -> None:
        self.ssh = ssh
        self.proc = ssh.popen(BOOTSTRAP)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.channel = Channel(self.proc.stdout, self.proc.stdin, str(ssh.target))
        self._stderr = b""
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr = self.proc.stderr.read()

    def start(self) -> tuple[bool, list[str]]:
        """(agent?, tools): the agent's banner, or the tools a remote without sealift has."""
        try:
            words = self.channel.read_banner()
        except ProtocolError as exc:
            if self.wait(10) not in NOT_RUNNABLE:
                raise self.failure(exc) from exc
            # a `sealift` on the PATH that does not run (a stale shim): treat as absent
            answer = self.ssh.run(TOOLS_PROBE, timeout=60)
            return False, _tools(answer.stdout.decode(errors="replace").splitlines())
        if words[0] == protocol.BANNER:
            return True, []
        tools = _tools(self.channel.lines_until_eof())
        self.close()
        return False, tools

    def failure(self, exc: BaseException | None = None) -> SealiftError:
        """The most telling error: ssh's own words when ssh failed, else ``exc``."""
        code = self.wait(10)
        if isinstance(exc, ProtocolError) and code != 255:
            reported = self._reported_error()
            if reported is not None:
                return reported
        if code == 255 or (code not in (None, 0) and not isinstance(exc, RemoteError)):
            return TransportError(self.ssh.failure(self._stderr, code))
        if isinstance(exc, SealiftError):
            return exc
        return TransportError(f"{self.ssh.target}: connection lost ({exc})")

    def _reported_error(self) -> RemoteError | None:
        """The error the other side sent before it hung up, if it sent one."""
        for _ in range(1000):
            try:
                self.channel.recv()
            except RemoteError as exc:
                return exc
            except (SealiftError, OSError, ValueError):
                return None
        return None

    def wait(self, timeout: float) -> int | None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._drain.join(5)
        return code

    def close(self) -> None:
        self.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    @contextlib.contextmanager
    def conversation(self, result: HostResult) -> Iterator[Channel]:
        """The agent's channel: errors become the remote's own message, the bytes that crossed
        are counted either way, and the session is closed once the talk went well."""
        try:
            yield self.channel
        except (SealiftError, OSError) as exc:
            raise self.failure(exc) from exc
        finally:
            result.bytes_sent = self.channel.bytes_out
            result.bytes_received = self.channel.bytes_in
        self.close()


def _tools(lines: list[str]) -> list[str]:
    found = [
        line.split()[1] for line in lines if line.startswith("tool ") and len(line.split()) == 2
    ]
    return [tool for tool in found if tool in CLI_TOOLS]


def _hello(channel: Channel) -> int:
    """Agree on a protocol version with the agent; return it."""
    channel.send(protocol.hello())
    channel.flush()
    answer = channel.expect("hello")
    version = answer.get("protocol")
    if not isinstance(version, int) or version not in protocol.PROTOCOLS:
        raise RemoteError(
            f"{channel.peer}: protocol mismatch: the agent chose {version!r}, "
            f"this sealift speaks {list(protocol.PROTOCOLS)}"
        )
    return version


# ---------------------------------------------------------------------------------------- push
def push_host(
    source: Offering,
    target: SshTarget,
    options: RemoteOptions,
    progress: HostProgress,
    patches: PatchMaker | None = None,
) -> HostResult:
    """Push to one host; ``patches`` (shared by the hosts of one push) makes delta patches."""
    with contextlib.ExitStack() as stack:
        if patches is None and options.delta:
            patches = _patch_maker(source, options)
            stack.callback(patches.close)
        return _push_host(source, target, options, progress, patches)


def _patch_maker(source: Offering, options: RemoteOptions) -> PatchMaker:
    """Bases come from the images sent, sealift's layer cache (unless SEALIFT_NO_CACHE), or
    the source's engine."""
    cache = None if disabled_by_environment() else LayerCache()
    return PatchMaker(source.engine, options.compression, options.level, cache)


def _push_host(
    source: Offering,
    target: SshTarget,
    options: RemoteOptions,
    progress: HostProgress,
    patches: PatchMaker | None,
) -> HostResult:
    result = HostResult(str(target))
    start = time.monotonic()
    try:
        ssh = Ssh(target, options.ssh_command)
        session = _Session(ssh)
        agent, tools = session.start()
        if agent and options.mode in ("auto", "agent"):
            try:
                result.mode = "agent"
                _push_agent(session, source, options, result, progress, patches)
                agent_done = True
            except RemoteError as exc:
                if exc.kind != "engine" or options.mode == "agent":
                    raise
                # sealift is there but reaches no Docker engine: try docker/podman themselves
                agent_done = False
                tools = _tools(ssh.run(TOOLS_PROBE, timeout=60).stdout.decode().splitlines())
        else:
            agent_done = False
            if agent:
                session.close()
                tools = [options.mode]
        if not agent_done:
            with make_spool_dir() as spool:
                candidates = _candidates(tools, options.mode, target)
                _push_cli(ssh, candidates, source, options, result, progress, Path(spool))
        result.ok = True
    except SealiftError as exc:
        result.error = str(exc)
    except OSError as exc:
        result.error = f"{target}: {exc.strerror or exc}"
    except Exception as exc:  # one host's bug must not take the other hosts down
        result.error = f"{target}: internal error: {exc!r}"
    result.seconds = round(time.monotonic() - start, 3)
    return result


def _candidates(tools: list[str], mode: str, target: SshTarget) -> list[str]:
    """The CLI tools to try, in order."""
    if mode in CLI_TOOLS:
        return [mode]
    if mode == "agent":
        raise EngineError(f"{target}: no sealift on the remote PATH")
    if not tools:
        raise EngineError(f"{target}: neither sealift, docker nor podman on the remote PATH")
    return tools


def _push_agent(
    session: _Session,
    source: Offering,
    options: RemoteOptions,
    result: HostResult,
    progress: HostProgress,
    patches: PatchMaker | None,
) -> None:
    with session.conversation(result) as channel:
        deltas = _hello(channel) >= protocol.DELTA_PROTOCOL and patches is not None
        channel.send(protocol.offer_message(source.offer, deltas=deltas))
        channel.flush()
        need = Need.parse(channel.expect("need"))
        # the engine's save stream is read only when this host lacks something
        entries = source.entries() if need.layers or need.configs else []
        _tally(result, source, entries, need)
        plan = DeltaPlan()
        if patches is not None and need.held is not None and need.layers:
            plan = patches.choose(entries, source.offer, need)
            if plan.bases and not options.dry_run:
                # the agent reads its bases out of its engine while this side makes the patches
                channel.send({"t": "bases", "diff_ids": [str(base) for base in plan.bases]})
                channel.flush()
            patches.make(plan, entries)
        progress.total(result.host, result.bytes_to_send)
        if options.dry_run:
            result.deltas = [report.to_json() for report in plan.reports.values()]
            channel.send({"t": "bye"})
            channel.flush()
        else:
            try:
                send_layers_or_patches(
                    channel,
                    entries,
                    need,
                    plan,
                    options.compression,
                    options.level,
                    lambda wire, raw: progress.advance(result.host, wire, raw),
                )
            finally:
                result.deltas = [report.to_json() for report in plan.reports.values()]
            commit: dict[str, Any] = {"t": "commit", "configs": configs_for(entries, need)}
            if need.blobs:
                commit["manifests"] = manifests_for(entries, need)
            channel.send(commit)
            channel.flush()
            done = channel.expect("done")
            result.images = list(done.get("images") or [])
            channel.send({"t": "bye"})
            channel.flush()


def _count_layers(result: HostResult, need: Need) -> None:
    result.layers_sent = len(need.layers)
    result.layers_skipped = need.skipped_layers
    result.layers_resumed = sum(1 for offset in need.layers.values() if offset)


def _tally(result: HostResult, source: Offering, entries: list[Entry], need: Need) -> None:
    layers = layers_by_diff_id(entries)
    _count_layers(result, need)
    result.bytes_to_send = sum(
        max(0, layers[d].size - o) if layers[d].codec == compression.NONE else layers[d].size
        for d, o in need.layers.items()
        if d in layers
    )
    present = set(need.present_images)
    result.images = _statuses(source, lambda image_id: image_id in present)


def _statuses(source: Offering, present: Callable[[str], bool]) -> list[dict[str, Any]]:
    statuses = []
    for image in source.offer:
        status = "present" if present(str(image.id)) else "send"
        for tag in image.tags or (None,):
            name = Reference.parse(tag).familiar if tag else None
            statuses.append({"ref": name, "id": str(image.id), "status": status})
    return statuses


# ----------------------------------------------------------------------------- mode 2: a CLI
def _inventory(ssh: Ssh, tool: str) -> tuple[dict[str, list[Digest]], bool]:
    """Image ID -> diff_ids of every image the remote's docker/podman holds, and whether it
    keeps them in containerd's image store (where IDs are manifest digests)."""
    held = of_remote(ssh, tool)
    return {image.id: list(image.diff_ids) for image in held.images}, held.containerd_store


def _remote_ids(
    source: Offering, have: dict[str, list[Digest]], containerd: bool
) -> tuple[dict[str, str], dict[str, set[str]]]:
    """(config digest -> the ID the remote knows it by, for images it has; config digest ->
    every ID it may show once loaded). The containerd store names images by manifest digest,
    so there the images are read to learn their manifests."""
    if not containerd:
        ids = {str(image.id) for image in source.offer}
        return {i: i for i in ids if i in have}, {i: {i} for i in ids}
    accepted = {str(image.id): engine_ids(image) for image, _ in single_images(source.entries())}
    known = {
        image_id: next(iter(ids & set(have)))
        for image_id, ids in accepted.items()
        if ids & set(have)
    }
    return known, accepted


def _prefixed(image_id: str) -> str:
    return image_id if ":" in image_id else f"sha256:{image_id}"


def _tag_name(tool: str, tag: Any) -> str:
    return str(tag.familiar if tool == "docker" else str(tag))


class _CountingWriter:
    def __init__(self, out: IO[bytes], count: Callable[[int], None]) -> None:
        self._out = out
        self._count = count
        self.total = 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self.total += len(data)
        self._count(len(data))
        return len(data)

    def flush(self) -> None:
        self._out.flush()


def _push_cli(
    ssh: Ssh,
    tools: list[str],
    source: Offering,
    options: RemoteOptions,
    result: HostResult,
    progress: HostProgress,
    spool: Path,
) -> None:
    """Push with the first of ``tools`` (docker, podman) that answers on the remote; layers it
    must have in another form are spooled in ``spool``."""
    for index, tool in enumerate(tools):
        try:
            have, containerd = _inventory(ssh, tool)
            break
        except EngineError:
            if index == len(tools) - 1:
                raise
    result.mode = tool
    known, accepted = _remote_ids(source, have, containerd)
    chains = {c for ids in have.values() for c in chain_ids(ids)}
    missing = {str(image.id) for image in source.offer if str(image.id) not in known}
    result.images = _statuses(source, lambda image_id: image_id not in missing)
    send: list[Entry] = []
    omit: set[Digest] = set()
    if missing:
        pairs = single_images(source.entries())
        send = [entry for image, entry in pairs if str(image.id) in missing]
        if not containerd and not options.dry_run:
            send = without_zstd(send, spool)
        omit = layers_in_chains(send, chains)
        needed = all_layers(send) - omit
        layers = {
            layer.digest: layer
            for entry in send
            for image in entry.images()
            for layer in image.layers
        }
        result.layers_sent = len(needed)
        result.layers_skipped = len(omit)
        result.bytes_to_send = sum(layers[d].size for d in needed)
    if options.dry_run:
        return
    tagged = [(str(image.id), Reference.parse(tag)) for image in source.offer for tag in image.tags]
    words = [
        remote_command([tool, "tag", known[image_id], _tag_name(tool, tag)])
        for image_id, tag in tagged
        if image_id not in missing
    ]
    expected = tagged
    thin_into_containerd = bool(omit) and containerd
    if thin_into_containerd:
        words.append(remote_command([tool, "images", "-aq", "--no-trunc"]))
        words.append(f"echo {LISTING_END}")
    if expected:
        names = [_tag_name(tool, tag) for _, tag in expected]
        words.append(remote_command([tool, "image", "inspect", "--format", "{{.Id}}", *names]))
    after = " && ".join(words)
    if send:
        try:
            shown = _load(ssh, tool, send, omit, options, result, progress, after)
            if thin_into_containerd:
                listing, _, shown = shown.rpartition(LISTING_END)
                _check_listed(ssh, tool, listing, missing, accepted)
        except EngineError as exc:
            # a containerd store can fail to unpack a blob an earlier, cut load left half
            # ingested ("content digest ... not found"); a second load writes it whole
            if not omit and not (containerd and "not found" in str(exc)):
                raise
            result.layers_sent, result.layers_skipped = result.layers_sent + len(omit), 0
            shown = _load(ssh, tool, send, set(), options, result, progress, after)
    elif after:
        answer = ssh.run(after, timeout=120)
        if answer.returncode != 0:
            raise EngineError(f"{ssh.target}: {tool} failed: {last_line(answer.stderr)}")
        shown = answer.stdout.decode(errors="replace")
    else:
        return
    shown_ids = shown.split()[-len(expected) :] if expected else []
    _check_tags(ssh, tool, expected, shown_ids, accepted)
    for item in result.images:
        item["status"] = "loaded" if item["status"] == "send" else "tagged"


def _load(
    ssh: Ssh,
    tool: str,
    entries: list[Entry],
    omit: set[Digest],
    options: RemoteOptions,
    result: HostResult,
    progress: HostProgress,
    after: str,
) -> str:
    """Pipe the archive into ``tool load`` then run ``after``; return what ``after`` printed."""
    command = remote_command([tool, "load", "--quiet"])
    proc = ssh.popen(f"{command} && {after}" if after else command)
    assert proc.stdin is not None
    stderr: list[bytes] = []
    stdout: list[bytes] = []
    drain = threading.Thread(
        target=lambda: stderr.append(proc.stderr.read() if proc.stderr else b""), daemon=True
    )
    drain.start()
    out_thread = threading.Thread(
        target=lambda: stdout.append(proc.stdout.read() if proc.stdout else b""), daemon=True
    )
    out_thread.start()
    counter = _CountingWriter(proc.stdin, lambda n: progress.advance(result.host, n, 0))
    codec = _archive_codec(entries, omit, options)
    progress.total(result.host, result.bytes_to_send)
    error: BaseException | None = None
    try:
        level = options.level if options.level is not None else WIRE_GZIP_LEVEL
        writer = compression.open_compressor(cast(IO[bytes], counter), codec, level)
        raw = _CountingWriter(writer, lambda n: progress.advance(result.host, 0, n))
        write_archive(entries, cast(IO[bytes], raw), omit=omit)
        writer.close()
        proc.stdin.close()
    except (BrokenPipeError, ConnectionResetError) as exc:
        error = exc
    finally:
        result.bytes_sent += counter.total
    code = proc.wait()
    drain.join(5)
    out_thread.join(5)
    message = last_line(b"".join(stderr))
    if code == 255:
        raise TransportError(ssh.failure(b"".join(stderr), code))
    if code != 0 or error is not None:
        raise EngineError(f"{ssh.target}: {tool} load failed: {message or error}")
    return b"".join(stdout).decode(errors="replace")


def _archive_codec(entries: list[Entry], omit: set[Digest], options: RemoteOptions) -> str:
    """gzip for the archive as a whole, unless told none or every layer in it is a compressed
    blob already: those cross as they are (a containerd-store engine keeps them, so the
    manifest digest survives), and gzip would only spend CPU on them."""
    if options.compression == compression.NONE:
        return compression.NONE
    written = [
        layer
        for entry in entries
        for image in entry.images()
        for layer in image.layers
        if layer.digest not in omit
    ]
    if all(layer.codec != compression.NONE for layer in written):
        return compression.NONE
    return compression.GZIP


def _check_listed(
    ssh: Ssh, tool: str, listing: str, loaded: set[str], accepted: dict[str, set[str]]
) -> None:
    """A thin archive's images are listed by a containerd store (``listing``: its ``images
    -aq``) only if it held every blob the archive left out: it hides an image it cannot
    complete, though its tag may answer."""
    listed = {_prefixed(line) for line in listing.split()}
    for image_id in loaded:
        if not accepted.get(image_id, {image_id}) & listed:
            raise EngineError(f"{ssh.target}: {tool} did not take {image_id} whole")


def _check_tags(
    ssh: Ssh,
    tool: str,
    expected: list[tuple[str, Any]],
    shown: list[str],
    accepted: dict[str, set[str]],
) -> None:
    """Every tag must show its image's ID: success is what the remote engine says."""
    if len(shown) != len(expected):
        raise EngineError(f"{ssh.target}: after loading, {tool} does not show every image")
    for (image_id, tag), actual in zip(expected, shown, strict=True):
        if _prefixed(actual) not in accepted.get(image_id, {image_id}):
            raise EngineError(
                f"{ssh.target}: after loading, {tag.familiar} is {actual}, expected {image_id}"
            )


# ---------------------------------------------------------------------------------------- pull
class _PullPlanner(Protocol):
    """The receiving side of a pull: what it lacks, and where layers arrive."""

    exact: bool
    """Set once the agent agreed on protocol 3 (blobs and manifests may cross as they are)."""

    def plan(self, images: list[OfferedImage]) -> Need: ...

    def receive(self, channel: Channel, header: dict[str, Any]) -> None: ...


def pull_host(
    target: SshTarget,
    refs: Sequence[str],
    receiver: Receiver,
    options: RemoteOptions,
) -> HostResult:
    """Pull ``refs`` from the host's engine into the local engine (only what it lacks)."""

    loaded: list[dict[str, Any]] = []

    def load(
        images: list[OfferedImage],
        configs: dict[Digest, bytes],
        manifests: dict[Digest, Manifest],
    ) -> None:
        loaded.extend(receiver.commit(images, configs, manifests))

    result = _pull(target, refs, receiver, options, load)
    result.images = loaded
    return result


def fetch_host(
    target: SshTarget, refs: Sequence[str], staging: Staging, options: RemoteOptions
) -> list[Entry]:
    """Fetch ``refs`` from the host's engine into ``staging``; return them as images there.

    Everything not already staged crosses (there is no engine on this side to ask). With
    protocol 3, blobs cross as they are and each image keeps the remote's manifest.
    """
    receiver = StagingReceiver(staging)
    entries: list[Entry] = []

    def keep(
        images: list[OfferedImage], configs: dict[Digest, bytes], manifests: dict[Digest, Manifest]
    ) -> None:
        entries.extend(
            staged_entry(staging, image, configs[image.id], manifests.get(image.id))
            for image in images
        )

    result = _pull(target, refs, receiver, options, keep)
    if not result.ok:
        raise TransportError(f"pull failed: {result.error}")
    return entries


def _pull(
    target: SshTarget,
    refs: Sequence[str],
    receiver: _PullPlanner,
    options: RemoteOptions,
    finish: Callable[[list[OfferedImage], dict[Digest, bytes], dict[Digest, Manifest]], None],
) -> HostResult:
    result = HostResult(str(target), mode="agent")
    start = time.monotonic()
    try:
        ssh = Ssh(target, options.ssh_command)
        session = _Session(ssh)
        agent, _ = session.start()
        if not agent:
            raise UsageError(f"{target}: pull needs sealift on the remote PATH")
        with session.conversation(result) as channel:
            receiver.exact = _hello(channel) >= protocol.EXACT_PROTOCOL
            channel.send(
                {
                    "t": "pull",
                    "refs": list(refs),
                    "platform": options.platform,
                    "codec": options.compression,
                    "level": options.level,
                }
            )
            channel.flush()
            images = protocol.parse_offer(channel.expect("offer"))
            need = receiver.plan(images)
            _count_layers(result, need)
            if options.dry_run:
                need = Need({}, need.present_images, need.skipped_layers, need.configs)
            channel.send(need.to_json())
            channel.flush()
            for _ in need.layers:
                receiver.receive(channel, channel.expect("layer"))
            sent = channel.expect("sent")
            configs = protocol.parse_configs(sent, need.configs)
            manifests = protocol.parse_manifests(sent, need.configs) if need.blobs else {}
            channel.send({"t": "bye"})
            channel.flush()
            if not options.dry_run:
                finish(images, configs, manifests)
        result.ok = True
    except SealiftError as exc:
        result.error = str(exc)
    result.seconds = round(time.monotonic() - start, 3)
    return result


# ------------------------------------------------------------------------------------ fan-out
def push_many(
    source: Offering,
    targets: Sequence[SshTarget],
    options: RemoteOptions,
    progress: HostProgress | None = None,
) -> list[HostResult]:
    """Push to every target, ``options.parallel`` at a time; one result per target, in order."""
    count = progress or NoProgress()
    patches = _patch_maker(source, options) if options.delta else None
    pool = ThreadPoolExecutor(max_workers=max(1, options.parallel))
    try:
        futures = [pool.submit(push_host, source, t, options, count, patches) for t in targets]
        return [future.result() for future in futures]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        stop_all()
        raise
    finally:
        pool.shutdown(wait=True)
        if patches is not None:
            patches.close()
