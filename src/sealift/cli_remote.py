"""``sealift push``, ``sealift pull`` and the hidden ``sealift agent``: images over SSH."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from sealift import compression, progress
from sealift.ends.ssh import SshTarget, is_ssh_url, ssh_command
from sealift.errors import SealiftError, UsageError
from sealift.progress import human_size
from sealift.reference import Reference
from sealift.remote.deltas import LayerDelta
from sealift.remote.hosts import HostResult, RemoteOptions, pull_host, push_many
from sealift.remote.source import open_offering

COMPRESSION = click.Choice(["auto", *compression.LAYER_CODECS])


def _options(function: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--compression",
                "codec",
                type=COMPRESSION,
                default="auto",
                show_default=True,
                help="Compression on the wire: auto is zstd with sealift on the remote, gzip "
                "into a bare docker/podman load.",
            ),
            click.option(
                "--level", type=int, help="Compression level on the wire (gzip 0-9, zstd 1-22)."
            ),
            click.option("--platform", help="Take one platform (os/arch[/variant])."),
            click.option(
                "--dry-run", is_flag=True, help="Show what would be sent, per host; send nothing."
            ),
            click.option(
                "--ssh-command",
                metavar="CMD",
                help="The ssh client command (default: SEALIFT_SSH_COMMAND, else ssh).",
            ),
            click.option(
                "-H",
                "--host",
                "engine_host",
                metavar="HOST",
                help="The local engine (default: DOCKER_HOST, the docker context, the socket).",
            ),
            click.option(
                "--mode",
                type=click.Choice(["auto", "agent", "docker", "podman"]),
                default="auto",
                show_default=True,
                help="How to reach the remote engine: sealift agent, or a bare docker/podman.",
            ),
            click.option("-q", "--quiet", is_flag=True, help="No progress, no summary."),
            click.option("--json", "as_json", is_flag=True, help="Print a JSON summary."),
        ]
    ):
        function = option(function)
    return function


def _remote_options(
    codec: str,
    level: int | None,
    platform: str | None,
    dry_run: bool,
    ssh: str | None,
    mode: str,
    parallel: int = 4,
) -> RemoteOptions:
    if parallel < 1:
        raise UsageError("--parallel must be at least 1")
    wire_codec = compression.ZSTD if codec == "auto" else codec
    return RemoteOptions(
        compression=wire_codec,
        level=compression.check_level(wire_codec, level),
        dry_run=dry_run,
        ssh_command=tuple(ssh_command(ssh)),
        parallel=parallel,
        platform=platform,
        mode=mode,
    )


def _references(texts: list[str]) -> list[str]:
    for text in texts:
        if text.startswith("-"):
            raise UsageError(f"invalid image reference {text!r}")
        Reference.parse(text)
    return texts


@click.command()
@click.argument(
    "arguments", nargs=-1, required=True, metavar="IMAGE...|ARCHIVE ssh://[user@]host[:port]..."
)
@_options
@click.option(
    "--parallel",
    type=int,
    default=4,
    show_default=True,
    help="Hosts served at once.",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="NAME:TAG",
    help="From an archive or layout: push only this image (repeatable).",
)
@click.option(
    "--no-delta",
    is_flag=True,
    help="Send every layer whole, never as a patch against a layer the host holds.",
)
def push(
    arguments: tuple[str, ...],
    codec: str,
    level: int | None,
    platform: str | None,
    dry_run: bool,
    ssh_command: str | None,
    engine_host: str | None,
    mode: str,
    quiet: bool,
    as_json: bool,
    parallel: int,
    tags: tuple[str, ...],
    no_delta: bool,
) -> None:
    """Send IMAGEs from the local engine, or the images of an ARCHIVE or OCI layout, to the
    engines of one or more hosts over SSH.

    Only what a host lacks crosses the wire: images it has are only tagged, layers it has are
    not sent. With sealift on the remote PATH, layers travel zstd-compressed, are verified and
    staged there, and a cut push resumes inside the layer where it stopped; a layer whose older
    version the host holds (an older tag of the same repository) crosses as a binary patch
    against it when that is less than half the layer (--dry-run shows each one). Without it, a thin
    archive goes into the remote's `docker load` (or `podman load`).

    \b
    ARCHIVE is any archive sealift reads (a bundle carried in on a USB stick, say) or oci:DIR.

    \b
    Examples:
      sealift push myapp:1.4 ssh://deploy@web1 ssh://deploy@web2
      sealift push myapp:1.4 ssh://web1:2222 --dry-run
      sealift push /media/usb/stack.tar ssh://web1 ssh://web2
    """
    from sealift.cli import errors_to_exit

    with errors_to_exit():
        sources = [a for a in arguments if not is_ssh_url(a)]
        targets = [SshTarget.parse(a) for a in arguments if is_ssh_url(a)]
        if not sources:
            raise UsageError("name at least one image (or an archive) to push")
        if not targets:
            raise UsageError("name at least one destination ssh://[user@]host[:port]")
        options = _remote_options(codec, level, platform, dry_run, ssh_command, mode, parallel)
        options = dataclasses.replace(options, delta=not no_delta)
        source = open_offering(sources, engine_host, platform, tags, export_early=not dry_run)
        try:
            with _host_progress([str(t) for t in targets], show=progress.enabled(quiet)) as count:
                results = push_many(source, targets, options, count)
        finally:
            source.close()
        _report(
            results,
            as_json=as_json,
            quiet=quiet,
            dry_run=dry_run,
            verb="push",
            extra={"source_read": source.saved},
        )


@click.command()
@click.argument("arguments", nargs=-1, required=True, metavar="ssh://[user@]host[:port] IMAGE...")
@_options
@click.option(
    "-o",
    "--output",
    metavar="DEST",
    help="Write the images to DEST (an archive file, oci:DIR, -) instead of the local engine.",
)
def pull(
    arguments: tuple[str, ...],
    codec: str,
    level: int | None,
    platform: str | None,
    dry_run: bool,
    ssh_command: str | None,
    engine_host: str | None,
    mode: str,
    quiet: bool,
    as_json: bool,
    output: str | None,
) -> None:
    """Bring IMAGEs from a remote host's engine into the local one (or, with -o, into a file or
    layout) over SSH.

    The remote needs sealift on its PATH. Only the layers the local engine lacks cross the
    wire, compressed; they are verified and staged locally and loaded once every digest checks.

    \b
    Examples:
      sealift pull ssh://build-box myapp:1.4
      sealift pull ssh://build-box myapp:1.4 -o myapp.tar
    """
    from sealift.cli import errors_to_exit
    from sealift.ends.engine import Engine
    from sealift.remote.receiver import Receiver
    from sealift.remote.staging import Staging

    with errors_to_exit():
        if not arguments or not is_ssh_url(arguments[0]):
            raise UsageError("name the source first: sealift pull ssh://[user@]host IMAGE...")
        target = SshTarget.parse(arguments[0])
        refs = _references(list(arguments[1:]))
        if not refs:
            raise UsageError("name at least one image to pull")
        if any(is_ssh_url(a) for a in refs):
            raise UsageError("pull takes one ssh:// source")
        if mode not in ("auto", "agent"):
            raise UsageError("pull works only with sealift on the remote (--mode agent)")
        options = _remote_options(codec, level, platform, dry_run, ssh_command, mode)
        if output is not None:
            _pull_into(output, target, refs, options, as_json=as_json)
            return
        with Staging() as staging:
            result = pull_host(target, refs, Receiver(Engine(engine_host), staging), options)
        _report([result], as_json=as_json, quiet=quiet, dry_run=dry_run, verb="pull")


def _pull_into(
    output: str, target: SshTarget, refs: list[str], options: RemoteOptions, *, as_json: bool
) -> None:
    from sealift.cli import _print_result
    from sealift.ends import open as ends
    from sealift.ends.ssh_host import SshSource
    from sealift.transfer import CopyOptions, copy

    if output == "-" and sys.stdout.isatty():
        raise UsageError("refusing to write an archive to a terminal: redirect stdout")
    sink = ends.open_sink(output)
    source = SshSource(target, refs, options)
    try:
        result = copy(source, sink, CopyOptions(compression=None))
    finally:
        source.close()
    _print_result(result, as_json=as_json, quiet=output == "-")


@click.command(hidden=True)
def agent() -> None:
    """The remote end of push and pull: speaks sealift's protocol on stdin/stdout."""
    from sealift.remote.agent import main

    sys.exit(main())


class _Bars:
    """One rich progress bar per host: layer data done of total, rate, ETA, bytes on the wire."""

    def __init__(self, hosts: list[str]) -> None:
        from rich.progress import TextColumn

        self.bar = progress.transfer_bars(TextColumn("{task.fields[wire]} on the wire"))
        self.tasks = {host: self.bar.add_task(host, total=None, wire="0 B") for host in hosts}
        self.wire = dict.fromkeys(hosts, 0)
        self.lock = threading.Lock()

    def total(self, host: str, raw_bytes: int) -> None:
        self.bar.update(self.tasks[host], total=raw_bytes or None)

    def advance(self, host: str, wire: int, raw: int) -> None:
        with self.lock:
            self.wire[host] += wire
            shown = human_size(self.wire[host])
        self.bar.update(self.tasks[host], advance=raw, wire=shown)


@contextmanager
def _host_progress(hosts: list[str], *, show: bool) -> Iterator[Any]:
    if not show:
        yield None
        return
    bars = _Bars(hosts)
    with bars.bar:
        yield bars


def _report(
    results: list[HostResult],
    *,
    as_json: bool,
    quiet: bool,
    dry_run: bool,
    verb: str,
    extra: dict[str, Any] | None = None,
) -> None:
    failed = [r for r in results if not r.ok]
    if as_json:
        click.echo(
            json.dumps(
                {"dry_run": dry_run, **(extra or {}), "hosts": [r.to_json() for r in results]},
                indent=2,
            )
        )
    elif not quiet:
        for result in results:
            click.echo(_summary(result, dry_run))
    if failed:
        reasons = "; ".join(f"{r.host}: {_strip_host(r)}" for r in failed)
        if len(results) == 1:
            raise SealiftError(f"{verb} failed: {reasons}")
        raise SealiftError(f"{verb} failed for {len(failed)} of {len(results)} hosts: {reasons}")


def _strip_host(result: HostResult) -> str:
    error = result.error or "unknown error"
    return error.removeprefix(f"{result.host}: ")


def _summary(result: HostResult, dry_run: bool) -> str:
    if not result.ok:
        return f"{result.host}: FAILED: {_strip_host(result)}"
    images = ", ".join(
        f"{item.get('ref') or item.get('id')} ({item.get('status')})" for item in result.images
    )
    if dry_run:
        lines = [
            f"{result.host} [{result.mode}]: would send {result.layers_sent} layers "
            f"(up to {human_size(result.bytes_to_send)} before compression), skip "
            f"{result.layers_skipped}; images: {images or 'none'}"
        ]
        lines.extend(f"  {LayerDelta(**item).describe()}" for item in result.deltas)
        return "\n".join(lines)
    patched = sum(1 for item in result.deltas if item.get("sent") == "patch")
    return (
        f"{result.host} [{result.mode}]: {images or 'no images'}; "
        f"{result.layers_sent} layers sent"
        f"{f' ({patched} as patches)' if patched else ''}, {result.layers_skipped} skipped, "
        f"{human_size(result.bytes_sent)} on the wire, {result.seconds:.1f}s"
    )
