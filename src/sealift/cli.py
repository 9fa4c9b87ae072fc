"""The ``sealift`` command: a thin layer over the library.

Exit codes: 0 success, 1 an error (one line on stderr, ``sealift: error: ...``), 2 a usage error,
130 interrupted (Ctrl-C), 143 / 129 stopped by SIGTERM / SIGHUP (temp files removed either way).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, cast

import click

from sealift import __version__, compression, progress
from sealift.cli_airgap import (
    SPLIT,
    check_signature,
    inventory,
    output_size,
    sign,
    signature_options,
)
from sealift.cli_cache import NO_CACHE, cache, cache_summary, layer_cache
from sealift.ends import open as ends
from sealift.ends.base import Sink, Source, WriteResult
from sealift.errors import SealiftError, UsageError
from sealift.inspection import describe
from sealift.progress import human_size
from sealift.reference import Reference
from sealift.split import find_split
from sealift.transfer import ALL_PLATFORMS, CopyOptions, Selection, copy, left_out, verify

if TYPE_CHECKING:
    from sealift.cache import LayerCache
    from sealift.update_patches import EngineBases

LEVEL = click.option(
    "--level",
    type=int,
    help="Compression level: gzip 0-9 (default 3; 4 and up are denser for twice the CPU), "
    "zstd 1-22 (default 3).",
)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"sealift: error: {message}", err=True)
    sys.exit(code)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Turn library errors into one line on stderr and a meaningful exit code."""
    try:
        yield
    except UsageError as exc:
        fail(str(exc), 2)
    except SealiftError as exc:
        fail(str(exc))
    except KeyboardInterrupt as exc:
        fail(str(exc) or "interrupted", _exit_code(exc))
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        fail("output pipe closed")
    except MemoryError:
        fail("out of memory")
    except OSError as exc:
        fail(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")


def open_source(spec: str, *, keep_layers: bool = True) -> Source:
    """The source a SOURCE argument names (see sealift.ends.open)."""
    return ends.open_source(spec, ends.EndOptions(keep_layers=keep_layers))


def open_sink(spec: str, split: int | None = None) -> Sink:
    return ends.open_sink(spec, ends.EndOptions(split=split))


ENGINE_HOST = click.option(
    "-H",
    "--host",
    envvar=None,
    metavar="HOST",
    help="Engine address (unix:///path.sock, tcp://host:port). Default: DOCKER_HOST, then the "
    "current docker context, then /var/run/docker.sock.",
)
COMPRESSION = click.Choice(list(compression.LAYER_CODECS))


class _LazyGroup(click.Group):
    """A group whose larger commands are imported only when asked for by name (or listed for
    help): `save` and `load` start without the code of compose, push/pull and serve."""

    LAZY: ClassVar[dict[str, tuple[str, str]]] = {
        "agent": ("sealift.cli_remote", "agent"),
        "compose": ("sealift.cli_compose", "compose"),
        "pull": ("sealift.cli_remote", "pull"),
        "push": ("sealift.cli_remote", "push"),
        "serve": ("sealift.cli_serve", "serve"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY and cmd_name not in self.commands:
            module, name = self.LAZY[cmd_name]
            command = getattr(importlib.import_module(module), name)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sealift")
def cli() -> None:
    """Move container images between hosts without a registry.

    sealift writes one clean archive that plain `docker load`, `podman load`, `ctr images
    import` and skopeo all read, with layers compressed, every blob stored once and every
    digest checked.

    \b
    Examples:
      sealift save myapp:1.0 -o myapp.tar              # engine -> archive
      sealift load myapp.tar                            # archive -> engine
      sealift convert docker-save.tar small.tar --compression zstd
      sealift inspect myapp.tar
      sealift verify myapp.tar
    """


@cli.command()
@click.argument("source")
@click.argument("destination")
@click.option(
    "--compression",
    "codec",
    type=COMPRESSION,
    default="gzip",
    show_default=True,
    help="Layer compression inside the output. gzip loads on every engine; zstd is "
    "smaller and faster (Docker >= 23, containerd, podman).",
)
@LEVEL
@click.option(
    "--platform", help="Keep one platform (os/arch[/variant]) of multi-platform images, or 'all'."
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="NAME:TAG",
    help="Take only this image (repeatable). OCI ref names work too.",
)
@SPLIT
@NO_CACHE
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def convert(
    source: str,
    destination: str,
    codec: str,
    level: int | None,
    platform: str | None,
    tags: tuple[str, ...],
    split: int | None,
    no_cache: bool,
    quiet: bool,
) -> None:
    """Convert SOURCE to DESTINATION.

    SOURCE is any image archive (docker save output of any Docker version, skopeo or podman
    archives, compressed with gzip, zstd or xz or not) or an OCI layout directory.
    DESTINATION is written as sealift's dual-format archive, or as an OCI layout.

    \b
    Use archive:PATH or oci:DIR to be explicit; a bare directory means an OCI layout,
    anything else an archive; - is stdin or stdout.
    """
    with errors_to_exit(), layer_cache(no_cache) as cache:
        src = open_source(source)
        try:
            sink = open_sink(destination, split)
            options = CopyOptions(codec, level, Selection(tags, platform), cache=cache)
            with _progress("converting", src, source, quiet=quiet or destination == "-"):
                copy(src, sink, options)
        finally:
            src.close()


KEEP = "keep"


@cli.command(name="copy")
@click.argument("source")
@click.argument("destination")
@click.option(
    "--compression",
    "codec",
    type=click.Choice([KEEP, *compression.LAYER_CODECS]),
    default=KEEP,
    show_default=True,
    help="Layer compression at the destination. keep moves every blob as it is, so manifest "
    "digests survive wherever the destination can hold the blobs.",
)
@LEVEL
@click.option("--platform", help="Keep one platform (os/arch[/variant]) or 'all'.")
@click.option(
    "--tag", "tags", multiple=True, metavar="NAME:TAG", help="Take only this image (repeatable)."
)
@ENGINE_HOST
@click.option(
    "--src-daemon-host", metavar="HOST", help="The source's engine, when it differs from -H."
)
@click.option(
    "--dest-daemon-host", metavar="HOST", help="The destination's engine, when it differs from -H."
)
@click.option("--ssh-command", metavar="CMD", help="The ssh client (default: ssh).")
@click.option(
    "--parallel",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Registry: blobs checked, uploaded or downloaded at once.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Registry: allow plain HTTP and unchecked certificates (loopback allows HTTP anyway).",
)
@click.option(
    "--ca-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Registry: also trust this CA (besides the system's and /etc/docker/certs.d/HOST/).",
)
@click.option(
    "--chunk-size",
    metavar="SIZE",
    help="Registry: largest upload request (e.g. 50MiB), for proxies that cap request bodies.",
)
@NO_CACHE
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def copy_command(
    source: str,
    destination: str,
    codec: str,
    level: int | None,
    platform: str | None,
    tags: tuple[str, ...],
    host: str | None,
    src_daemon_host: str | None,
    dest_daemon_host: str | None,
    ssh_command: str | None,
    parallel: int,
    insecure: bool,
    ca_cert: Path | None,
    chunk_size: str | None,
    no_cache: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Copy images from SOURCE to DESTINATION: any two of an engine, an archive, an OCI layout,
    a host over SSH and a registry.

    \b
    Ends (skopeo's transport names where skopeo has one):
      docker-daemon:IMAGE[,IMAGE...]   the engine at -H / DOCKER_HOST / the docker context
                                       (as a destination: load; docker-daemon:NAME:TAG retags)
      docker-archive:PATH, archive:PATH, oci-archive:PATH, PATH, -
                                       an archive file (any format sealift reads), stdin/stdout
      oci:DIR[:REF]                    an OCI image layout directory
      ssh://[user@]host[:port][/IMAGE[,IMAGE...]]
                                       the engine of a host over SSH
      docker://HOST[:PORT]/REPO[:TAG|@DIGEST]   an image on a registry
      docker://HOST[:PORT]/            (destination) every image, under its own repository

    \b
    Only what the destination lacks is read and sent. With --compression keep (the default)
    blobs arrive byte for byte, so image IDs and manifest digests survive; a destination that
    cannot hold a blob as it is (zstd into Docker < 23, a classic-store engine) gets it adapted,
    and --json says so per image.

    \b
    Examples:
      sealift copy docker-daemon:myapp:1.4 myapp.tar
      sealift copy stack.tar ssh://deploy@web1
      sealift copy ssh://build-box/myapp:1.4 oci:./layout
      sealift copy oci:./layout:myapp-1.4 docker-daemon:
      sealift copy stack.tar docker://registry.site:5000/
    """
    from sealift.ends.ssh import ssh_command as ssh_words
    from sealift.registry.options import RegistryOptions, parse_size

    with errors_to_exit(), layer_cache(no_cache) as cache:
        if destination == "-" and sys.stdout.isatty():
            raise UsageError("refusing to write an archive to a terminal: redirect stdout")
        if destination == "-" and as_json:
            raise UsageError("--json needs a destination other than stdout")
        options = ends.EndOptions(
            engine_host=host,
            ssh_command=tuple(ssh_words(ssh_command)),
            platform=platform if platform != ALL_PLATFORMS else None,
            registry=RegistryOptions(
                parallel=parallel,
                chunk_size=parse_size(chunk_size) if chunk_size else None,
                insecure=insecure,
                ca_cert=ca_cert,
            ),
        )
        src = ends.open_source(source, replace(options, engine_host=src_daemon_host or host))
        try:
            sink = ends.open_sink(
                destination, replace(options, engine_host=dest_daemon_host or host)
            )
            copy_options = CopyOptions(
                None if codec == KEEP else codec,
                level,
                Selection(tags, platform or ends.platform_for(sink)),
                cache=cache,
            )
            with _progress("copying", src, source, quiet=quiet or destination == "-", sink=sink):
                result = copy(src, sink, copy_options)
        finally:
            src.close()
        _print_result(result, as_json=as_json, quiet=quiet or destination == "-")


def _print_result(result: WriteResult, *, as_json: bool, quiet: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "names": result.names,
                    "images": result.images,
                    "layers_sent": result.layers_sent,
                    "layers_skipped": result.layers_skipped,
                    "bytes_sent": result.bytes_sent,
                    **({"details": result.details} if result.details else {}),
                },
                indent=2,
            )
        )
    elif not quiet:
        for line in result.names:
            click.echo(line if line.startswith("Loaded image") else f"Copied: {_familiar(line)}")


def _familiar(name: str) -> str:
    """``docker.io/library/app:1`` as docker prints it (``app:1``); other names as they are."""
    try:
        return Reference.parse(name).familiar
    except UsageError:
        return name


def _progress(
    verb: str, source: Source, spec: str | None, *, quiet: bool, sink: Sink | None = None
) -> contextlib.AbstractContextManager[object]:
    """A progress bar over what is read from ``source`` (of ``spec``'s size when known)."""
    total = getattr(source, "total_size", None) or (_size_of(spec) if spec else None)

    def detail() -> str | None:
        current = getattr(sink, "current_blob", None)
        return (current() if callable(current) else None) or _current_member(source)

    return progress.byte_progress(
        verb, _input_counter(source), total, show=progress.enabled(quiet), detail=detail
    )


def _input_counter(source: Source) -> Callable[[], int]:
    """Bytes read so far from an archive source (0 for sources that are not streams)."""

    def count() -> int:
        counter = getattr(source, "input_counter", None)
        return counter.count if counter is not None else 0

    return count


def _current_member(source: Source) -> str | None:
    current = getattr(source, "current_member", None)
    return current() if callable(current) else None


def _size_of(spec: str) -> int | None:
    end = ends.parse_end(spec)
    path = Path(end.location)
    try:
        if end.kind != ends.ARCHIVE or end.is_stdio:
            return None
        if find_split(end.location) is not None:
            return output_size(end.location)
        return path.stat().st_size if path.is_file() else None
    except (OSError, SealiftError):
        return None


@cli.command()
@click.argument("archive")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(archive: str, as_json: bool) -> None:
    """Show the images, tags, platforms and layers in ARCHIVE (an archive or OCI layout).

    Layers shared between images are marked. This reads metadata and does not check layer
    contents; use `sealift verify` for that.
    """
    with errors_to_exit():
        source = open_source(archive, keep_layers=False)
        try:
            report = describe(source.entries())
            omitted = left_out(source)
        finally:
            source.close()
        if omitted is not None:
            report["update"] = {
                "inventory_created": omitted.inventory_created,
                "inventory_source": omitted.inventory_source,
                "layers_left_out": [str(diff_id) for diff_id in omitted.layers.values()],
                "layers_patched": [patched.to_json() for patched in omitted.patched.values()],
                "needs_sealift_load": bool(omitted.patched),
            }
        if as_json:
            click.echo(json.dumps(report, indent=2))
        else:
            _print_inspection(report)


def _print_inspection(report: dict[str, Any]) -> None:
    for image in report["images"]:
        tags = [Reference.parse(tag).familiar for tag in image["tags"]]
        names = ", ".join(tags or image["ref_names"]) or "<untagged>"
        click.echo(f"{names}")
        click.echo(f"  id        {image['id']}")
        if image.get("manifest_digest"):
            click.echo(f"  manifest  {image['manifest_digest']}")
        if image.get("index_digest"):
            click.echo(f"  index     {image['index_digest']}")
        click.echo(f"  platform  {image['platform']}")
        click.echo(f"  size      {human_size(image['size'])} in {len(image['layers'])} layers")
        for layer in image["layers"]:
            shared = "  (shared)" if layer["shared"] else ""
            size = human_size(layer["size"])
            click.echo(f"    {layer['digest'][:19]}  {size:>9}  {layer['compression']:<4}{shared}")
        for attestation in image["attestations"]:
            click.echo(f"  attestation {attestation['manifest_digest'][:19]}")
    for attestation in report["attestations"]:
        click.echo(f"attestation {attestation['manifest_digest'][:19]} of {attestation['attests']}")
    click.echo(
        f"{len(report['images'])} images, {report['unique_layers']} unique layers, "
        f"{human_size(report['total_size'])}"
    )
    update = report.get("update")
    if update:
        click.echo(
            f"update for the inventory of {update['inventory_source']} taken "
            f"{update['inventory_created']}: {len(update['layers_left_out'])} layers left out "
            "(load it with `sealift load` into that engine)"
        )
        for patched in update["layers_patched"]:
            click.echo(
                f"  layer {patched['diff_id'][:19]} is a patch of "
                f"{human_size(patched['patch']['size'])} against {patched['base_diff_id'][:19]} "
                f"(the layer: {human_size(patched['size'])})"
            )
        if update["needs_sealift_load"]:
            click.echo(
                "this bundle carries layers as patches: it needs `sealift load` "
                "(plain `docker load` refuses it)"
            )


@cli.command(name="verify")
@click.argument("archive")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@signature_options
def verify_command(
    archive: str, as_json: bool, quiet: bool, allowed_signers: Path | None, signer: str | None
) -> None:
    """Check every digest in ARCHIVE; exit 0 only if it is whole and untampered.

    Each blob is checked against its digest and size, each uncompressed layer against the
    diff_id in its image config, and every referenced blob must be present. With
    --allowed-signers, ARCHIVE.sig must also be a valid signature by an allowed key.
    """
    with errors_to_exit():
        signed_by = check_signature(archive, allowed_signers, signer)
        source = open_source(archive, keep_layers=False)
        try:
            report = verify(source)
        finally:
            source.close()
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "ok": True,
                        "images": report.images,
                        "layers": report.layers,
                        "bytes_checked": report.bytes_checked,
                        "layers_left_out": report.left_out,
                        "layers_patched": report.patched,
                        "signer": str(signed_by) if signed_by else None,
                    }
                )
            )
        elif not quiet:
            if signed_by is not None:
                click.echo(f"Good signature from {signed_by}")
            click.echo(f"OK: {report.images} images, {report.layers} layers verified")
            if report.left_out:
                click.echo(
                    f"({report.left_out} layers are left out of this update bundle: it loads "
                    "into the site it was made for, with `sealift load`)"
                )
            if report.patched:
                click.echo(
                    f"({report.patched} layers are patches: their sha256 is checked, but they "
                    "cannot be rebuilt without the bases the site's engine holds; "
                    "`sealift load` there rebuilds and verifies them)"
                )


TARGET_ENGINES = ("docker", "docker23", "containerd", "podman")


@cli.command()
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("-o", "--output", metavar="FILE|-", help="Archive to write ('-' for stdout).")
@click.option(
    "--compression",
    "codec",
    type=click.Choice([*compression.LAYER_CODECS, "auto"]),
    default="gzip",
    show_default=True,
    help="Layer compression. 'auto' picks zstd when --target says the loading side "
    "reads it, gzip otherwise. Unless this is given, layers the engine already holds "
    "compressed (containerd image store) are kept as they are.",
)
@click.option(
    "--target",
    type=click.Choice(TARGET_ENGINES),
    default="docker",
    show_default=True,
    help="What will load the archive (docker = any Docker; docker23 = Docker >= 23).",
)
@LEVEL
@click.option("--platform", help="Keep one platform (os/arch[/variant]).")
@ENGINE_HOST
@SPLIT
@click.option(
    "--since",
    metavar="INVENTORY",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write an update for the site whose `sealift inventory` this is: layers it holds are "
    "left out (and named in the bundle, so a load checks the site still holds them).",
)
@click.option(
    "--no-delta",
    is_flag=True,
    help="With --since: carry every layer the site lacks whole, never as a binary patch against "
    "an older version the site holds (such a bundle loads with plain `docker load` too).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="With --since: show, per layer the site lacks, whether it would cross whole or as a "
    "patch (base chosen, patch size, layer size); write nothing.",
)
@NO_CACHE
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def save(
    images: tuple[str, ...],
    output: str | None,
    codec: str,
    target: str,
    level: int | None,
    platform: str | None,
    host: str | None,
    split: int | None,
    since: Path | None,
    no_delta: bool,
    dry_run: bool,
    no_cache: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Save IMAGEs from a Docker engine into one archive.

    IMAGE is name[:tag], name@digest or an image ID. Layers shared between images are stored
    once. The archive loads with plain `docker load`, `podman load`, `ctr images import` or
    `sealift load`. sealift never pulls: an image missing from the engine is an error.

    \b
    Examples:
      sealift save nginx:1.27 postgres:16 -o stack.tar
      sealift save myapp:1.0 -o - | ssh host sealift load -
      sealift save myapp:1.4 --since site.json -o update.tar    # only what the site lacks

    With --since, a layer the site lacks whose older version it holds (the same position in
    an image of the same repository) is carried as a binary patch when that saves at least
    half of it and 64 KiB; such a bundle loads only with `sealift load` (--no-delta: never).
    """
    with errors_to_exit(), layer_cache(no_cache) as cache:
        if dry_run and since is None:
            raise UsageError("--dry-run needs --since (it shows what an update would carry)")
        if dry_run:
            output = output or "(dry run)"
        if output is None:
            if sys.stdout.isatty():
                raise UsageError(
                    "refusing to write an archive to a terminal: use -o FILE or redirect stdout"
                )
            output = "-"
        if output == "-" and (as_json or split is not None):
            option = "--json" if as_json else "--split"
            raise UsageError(f"{option} needs -o FILE (stdout carries the archive)")
        if codec == "auto":
            codec = compression.codec_for_target(target)
        engine_end = ends.End(ends.ENGINE, images=images)
        source = ends.open_source(engine_end, ends.EndOptions(engine_host=host))
        bases = _engine_bases(source, cache) if since is not None and not no_delta else None
        try:
            # layers the engine holds compressed (containerd store) stay as they are unless
            # --compression was given: their digests then match the engine's
            given = click.get_current_context().get_parameter_source("codec")
            options = CopyOptions(
                codec,
                level,
                Selection((), platform),
                keep_compressed=given is not click.core.ParameterSource.COMMANDLINE,
                cache=cache,
            )
            sink = (
                open_sink(output, split)
                if since is None
                else update_sink(output, since, split, bases, dry_run=dry_run)
            )
            with _progress("saving", source, None, quiet=quiet):
                result = copy(source, sink, options)
        finally:
            if bases is not None:
                bases.close()
            source.close()
        if dry_run:
            _report_update_plan(images, result, as_json=as_json)
        elif as_json:
            click.echo(
                json.dumps(
                    {
                        "output": output,
                        "images": list(images),
                        "compression": codec,
                        "bytes": output_size(output),
                        "layers_written": result.layers_sent,
                        "layers_left_out": result.layers_skipped if since else 0,
                        "layers_patched": result.details.get("patched", []),
                        **({"cache": cache_summary(cache)} if cache is not None else {}),
                    }
                )
            )


def _engine_bases(source: Source, cache: LayerCache | None) -> EngineBases | None:
    """Where a patch's base is read on the build box: the layer cache, else the engine the
    images are saved from."""
    from sealift.ends.engine import EngineSource
    from sealift.update_patches import EngineBases

    return EngineBases(source.engine, cache) if isinstance(source, EngineSource) else None


def update_sink(
    output: str,
    inventory: Path,
    split: int | None,
    bases: EngineBases | None,
    *,
    dry_run: bool = False,
) -> Sink:
    """An archive for the site ``inventory`` describes: only the layers it lacks, as patches
    where it holds an older version (``bases``: the build box's engine; None: no patches)."""
    from sealift.inventory import read_inventory
    from sealift.update import UpdateSink

    if output == "-":
        raise UsageError("--since needs -o FILE")
    return UpdateSink(
        output,
        read_inventory(inventory),
        split=split,
        delta=bases is not None,
        find_base=bases,
        dry_run=dry_run,
    )


def _report_update_plan(images: tuple[str, ...], result: WriteResult, *, as_json: bool) -> None:
    """What ``save --since --dry-run`` found: per layer the site lacks, how it would cross."""
    from sealift.delta import LayerChoice

    layers = cast(list[dict[str, Any]], result.details.get("layers", []))
    if as_json:
        document = {
            "dry_run": True,
            "images": list(images),
            "bytes": result.bytes_sent,
            "layers_left_out": result.layers_skipped,
            "layers": layers,
        }
        click.echo(json.dumps(document))
        return
    patched = sum(1 for layer in layers if layer["sent"] == "patch")
    click.echo(
        f"would write {human_size(result.bytes_sent)}: {result.layers_skipped} layers left out "
        f"(the site holds them), {len(layers) - patched} whole, {patched} as patches"
    )
    for layer in layers:
        click.echo(f"  {LayerChoice(**layer).describe()}")


@cli.command()
@click.argument("archive", default="-", required=False, metavar="FILE|-")
@click.option(
    "-i",
    "--input",
    "input_path",
    metavar="FILE",
    help="Same as the FILE argument (as docker load -i).",
)
@ENGINE_HOST
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON summary instead of 'Loaded image' lines."
)
@click.option(
    "--platform", help="Load one platform of multi-platform images (default: the engine's)."
)
@signature_options
def load(
    archive: str,
    input_path: str | None,
    host: str | None,
    quiet: bool,
    as_json: bool,
    platform: str | None,
    allowed_signers: Path | None,
    signer: str | None,
) -> None:
    """Load an archive (any format sealift reads, compressed or not) into a Docker engine.

    Every digest is checked while the archive streams to the engine, and the engine sees the end
    of the archive only after all checks pass: a corrupt archive loads and tags nothing. Layers
    the engine already has are not sent; images it already has are only tagged. zstd layers are
    decompressed for engines older than Docker 23.

    With --allowed-signers (or SEALIFT_ALLOWED_SIGNERS set) nothing is loaded unless FILE.sig is
    a valid signature by a listed key (see `sealift sign`).
    """
    with errors_to_exit():
        path = input_path or archive
        if path == "-" and sys.stdin.isatty():
            raise UsageError("no archive given and stdin is a terminal: name a FILE or pipe one in")
        sink = ends.open_sink(ends.End(ends.ENGINE), ends.EndOptions(engine_host=host))
        if path != "-":
            from sealift import space
            from sealift.ends.engine import EngineSink

            engine = sink.engine if isinstance(sink, EngineSink) else None
            data_root = space.engine_data_root(engine) if engine is not None else None
            space.check(space.load_needs(path, data_root), f"loading {path}")
        check_signature(path, allowed_signers, signer)
        source = open_source(path)
        try:
            selection = Selection((), platform or ends.platform_for(sink))
            with _progress("loading", source, path, quiet=quiet, sink=sink):
                result = copy(source, sink, CopyOptions(None, None, selection))
        finally:
            source.close()
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "loaded": result.names,
                        "images": result.images,
                        "layers_sent": result.layers_sent,
                        "layers_skipped": result.layers_skipped,
                        "bytes_sent": result.bytes_sent,
                    }
                )
            )
        else:
            for line in result.names:
                click.echo(line)


cli.add_command(sign)
cli.add_command(inventory)
cli.add_command(cache)


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, unwound like Ctrl-C so that spool directories and partial outputs
    are removed; the exit code is the shell's 128 + signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.code = 128 + signum


def _exit_code(interrupt: BaseException | None) -> int:
    return interrupt.code if isinstance(interrupt, _Stopped) else 130


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signum)


def main() -> None:
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _raise_stopped)
    try:
        cli.main(prog_name="sealift", standalone_mode=False)
    except click.exceptions.Abort as exc:
        fail(str(exc.__cause__ or "") or "interrupted", _exit_code(exc.__cause__))
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
