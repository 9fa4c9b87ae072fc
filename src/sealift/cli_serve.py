"""``sealift serve``: a read-only registry straight from an archive or OCI layout."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from sealift import progress
from sealift.errors import UsageError
from sealift.progress import human_size
from sealift.serving import (
    Content,
    ListenAddress,
    RegistryServer,
    exposure_warning,
    open_served_source,
    tls_context,
    verify_blobs,
)
from sealift.serving.content import REPOSITORY_NAME

_SHOWN_TAGS = 8


@click.command()
@click.argument("source", metavar="SOURCE")
@click.option(
    "--listen",
    default="127.0.0.1:5000",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to listen on ([::1]:PORT for IPv6; port 0 picks a free one).",
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM certificate (chain) to serve HTTPS with.",
)
@click.option(
    "--tls-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM private key of --tls-cert (default: inside the --tls-cert file).",
)
@click.option(
    "--repository",
    metavar="NAME",
    help="Serve images that have only an OCI ref name (app-1, latest) as NAME:REF.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress and no access log.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the start-up information as one JSON line."
)
def serve(
    source: str,
    listen: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    repository: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Serve SOURCE as a read-only registry, for docker/podman/ctr pull and skopeo copy.

    SOURCE is any archive sealift reads or an OCI layout (oci:DIR). An image tagged
    myorg/api:1.2 is served as 127.0.0.1:5000/myorg/api:1.2; Docker Hub names such as
    nginx:1.27 also as library/nginx. Untagged images and every platform of a multi-platform
    image are served by digest. Every blob is checked against its digest (and a layer against
    its diff_id) before the server starts, and only those bytes are served. Ctrl-C or SIGTERM
    stops it (exit 0).

    \b
    Examples:
      sealift serve stack.tar                                  # http://127.0.0.1:5000
      docker pull 127.0.0.1:5000/myorg/api:1.2                 # 127.0.0.0/8 needs no TLS
      sealift serve stack.tar --listen 0.0.0.0:5443 --tls-cert site.pem --tls-key site.key
    """
    from sealift.cli import errors_to_exit

    with errors_to_exit():
        address = ListenAddress.parse(listen)
        if tls_key is not None and tls_cert is None:
            raise UsageError("--tls-key needs --tls-cert")
        if repository is not None and not REPOSITORY_NAME.fullmatch(repository):
            raise UsageError(f"invalid repository name {repository!r}")
        tls = tls_context(tls_cert, tls_key) if tls_cert is not None else None
        opened = open_served_source(source)
        try:
            content = Content.from_entries(opened.entries(), repository)
            server = RegistryServer(
                address, content, tls=tls, access_log=None if quiet else _stderr_line
            )
            try:
                _verify(content, quiet)
                _announce(server, content, source, as_json, quiet)
                _serve_until_stopped(server, quiet)
            finally:
                server.server_close()
        finally:
            opened.close()


def _verify(content: Content, quiet: bool) -> None:
    """Check every blob not checked yet, in parallel: a bar on a terminal, then one line."""
    blobs = content.blobs_to_verify()
    if not blobs:
        return
    total = sum(blob.size for blob in blobs)
    done = [0]

    def add(count: int) -> None:
        done[0] += count

    started = time.monotonic()
    description = f"verifying {len(blobs)} blobs"
    with progress.byte_progress(description, lambda: done[0], total, show=progress.enabled(quiet)):
        verify_blobs(blobs, add)
    if not quiet:
        elapsed = time.monotonic() - started
        _stderr_line(f"verified {len(blobs)} blobs ({human_size(total)}) in {elapsed:.1f} s")


def _announce(
    server: RegistryServer, content: Content, source: str, as_json: bool, quiet: bool
) -> None:
    for warning in content.warnings:
        _stderr_line(f"sealift: warning: {warning}")
    exposed = exposure_warning(server.bound, server.tls is not None)
    if exposed is not None:
        _stderr_line(f"sealift: warning: {exposed}")
    if as_json:
        click.echo(json.dumps(_startup_document(server, content, source)))
    else:
        click.echo(f"serving {source} at {server.url}: {_summary(content)}")
    sys.stdout.flush()
    if not quiet and not as_json:
        _stderr_line("Ctrl-C stops the server")


def _startup_document(server: RegistryServer, content: Content, source: str) -> dict[str, object]:
    return {
        "url": server.url,
        "listen": str(server.bound),
        "port": server.bound.port,
        "tls": server.tls is not None,
        "source": source,
        "repositories": {name: sorted(tags) for name, tags in sorted(content.repositories.items())},
        "untagged": [str(digest) for digest in content.untagged],
        "manifests": len(content.manifests),
        "blobs": len(content.blobs),
        "bytes": content.stored_bytes,
    }


def _summary(content: Content) -> str:
    tags = list(content.tags())
    shown = ", ".join(tags[:_SHOWN_TAGS])
    if len(tags) > _SHOWN_TAGS:
        shown += f" and {len(tags) - _SHOWN_TAGS} more"
    parts = [shown] if tags else ["no tags"]
    if content.untagged:
        parts.append(f"{len(content.untagged)} untagged (by digest)")
    parts.append(f"{human_size(content.stored_bytes)} in {len(content.blobs)} blobs")
    return "; ".join(parts)


def _serve_until_stopped(server: RegistryServer, quiet: bool) -> None:
    try:
        server.serve_forever()
    except KeyboardInterrupt as stop:
        if not quiet:
            _stderr_line(f"sealift serve: {str(stop) or 'stopped by Ctrl-C'}")


def _stderr_line(line: str) -> None:
    click.echo(line, err=True)
