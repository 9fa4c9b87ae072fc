"""``sealift compose save`` and ``sealift compose load``: a compose stack in one archive."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sealift import compression, progress, space
from sealift.cli import errors_to_exit
from sealift.cli_airgap import SPLIT, check_signature, output_size, signature_options
from sealift.compose.commands import (
    check_images,
    check_project_dir,
    compose_environment,
    compose_up,
    find_compose,
    load_images,
    open_service_images,
    read_archive_bundle,
    require_compose,
    service_images,
    unique_layer_bytes,
    write_bundle,
    write_project,
)
from sealift.compose.resolve import ComposeOptions, resolve
from sealift.ends.archive import ArchiveSource
from sealift.errors import SealiftError, UsageError
from sealift.inventory import read_inventory
from sealift.transfer import CopyOptions

if TYPE_CHECKING:
    from sealift.ends.engine import EngineSource

ENGINE_HOST = click.option(
    "-H",
    "--host",
    metavar="HOST",
    help="Engine address (unix:///path.sock, tcp://host:port). Default: DOCKER_HOST, then the "
    "current docker context, then /var/run/docker.sock.",
)
LEVEL = click.option(
    "--level", type=int, help="Compression level: gzip 0-9 (default 3), zstd 1-22 (default 3)."
)


@click.group(name="compose")
def compose() -> None:
    """Carry a compose project: its images and its resolved compose file in one archive.

    \b
    Examples:
      sealift compose save -o stack.tar                       # ./compose.yaml (+ override)
      sealift compose save -f compose.yaml -f prod.yaml --profile debug -o stack.tar
      sealift compose load stack.tar --up                     # on the far side, never pulls
    """


@compose.command(name="save")
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    metavar="FILE",
    help="Compose file (repeatable, merged in order). Default: COMPOSE_FILE, else compose.yaml "
    "and its override file, as docker compose finds them.",
)
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    help="Profile to enable (repeatable). Default: COMPOSE_PROFILES.",
)
@click.option(
    "--env-file",
    "env_files",
    multiple=True,
    metavar="FILE",
    help="Variables for interpolation instead of the project directory's .env (repeatable).",
)
@click.option("-p", "--project-name", help="Project name (default as docker compose names it).")
@click.option(
    "--project-directory", metavar="DIR", help="Project directory (default: the first file's)."
)
@click.option("-o", "--output", required=True, metavar="FILE|-", help="Archive to write.")
@click.option(
    "--compression",
    "codec",
    type=click.Choice(list(compression.LAYER_CODECS)),
    default="gzip",
    show_default=True,
    help="Layer compression (zstd: Docker >= 23, containerd, podman).",
)
@LEVEL
@ENGINE_HOST
@SPLIT
@click.option(
    "--since",
    metavar="INVENTORY",
    type=click.Path(dir_okay=False, path_type=Path),
    help="An update for the site whose `sealift inventory` this is: only the layers it lacks.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def save_command(
    files: tuple[str, ...],
    profiles: tuple[str, ...],
    env_files: tuple[str, ...],
    project_name: str | None,
    project_directory: str | None,
    output: str,
    codec: str,
    level: int | None,
    host: str | None,
    split: int | None,
    since: Path | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Save a compose project's images and its resolved compose file into one archive.

    The project is resolved as `docker compose config` resolves it (variables from .env and the
    environment, several -f files merged, profiles applied). Every service needs an `image:`
    the engine has; sealift never pulls or builds. The archive is a normal sealift archive:
    `docker load`, `podman load` and skopeo read its images.
    """
    from sealift.ends.engine import Engine

    with errors_to_exit():
        if output == "-" and (as_json or split is not None or sys.stdout.isatty()):
            raise UsageError("-o - needs stdout redirected, and no --json or --split")
        project = resolve(
            ComposeOptions(files, profiles, env_files, project_name, project_directory)
        )
        images = service_images(project)
        engine = Engine(host)
        source = open_service_images(engine, images)
        try:
            # as `sealift save`: layers an engine holds compressed (containerd store) stay as
            # they are unless --compression was given
            given = click.get_current_context().get_parameter_source("codec")
            keep = given is not click.core.ParameterSource.COMMANDLINE
            copy_options = CopyOptions(codec, level, keep_compressed=keep)
            image_ids = [str(found["Id"]) for found in source.found.values()]
            unique_bytes = unique_layer_bytes(engine, image_ids)
            with progress.byte_progress(
                "saving",
                lambda: _bytes_read(source),
                unique_bytes if unique_bytes is not None else source.total_size,
                show=progress.enabled(quiet),
                detail=source.current_member,
            ):
                bundle, result = write_bundle(
                    project,
                    images,
                    source,
                    output,
                    copy_options,
                    split=split,
                    since=read_inventory(since) if since is not None else None,
                )
        finally:
            source.close()
        if as_json:
            summary = {
                "output": output,
                "project": bundle.project,
                "profiles": list(bundle.profiles),
                "services": {
                    name: {"image": s.image, "image_id": s.image_id}
                    for name, s in sorted(bundle.services.items())
                },
                "compression": codec,
                "unique_layer_bytes": unique_bytes,
                "bytes": output_size(output),
                "layers_written": result.layers_sent,
                "layers_left_out": result.layers_skipped if since is not None else 0,
            }
            click.echo(json.dumps(summary))


def _input_size(archive: str) -> int | None:
    try:
        return None if archive == "-" else output_size(archive)
    except (OSError, SealiftError):
        return None


def _bytes_read(source: EngineSource | ArchiveSource) -> int:
    counter = source.input_counter
    return counter.count if counter is not None else 0


@compose.command(name="load")
@click.argument("archive", metavar="FILE|-")
@click.option(
    "--project-dir",
    metavar="DIR",
    help="Where to write the compose file and .env (default: ./PROJECT_NAME).",
)
@click.option(
    "--up",
    is_flag=True,
    help="Then start the project with the host's compose (docker compose, else "
    "docker-compose), never pulling.",
)
@ENGINE_HOST
@signature_options
@click.option("--platform", help="Load one platform of multi-platform images.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def load_command(
    archive: str,
    project_dir: str | None,
    up: bool,
    host: str | None,
    allowed_signers: Path | None,
    signer: str | None,
    platform: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Load a compose bundle: its images into the engine, its project into a directory.

    Only what the engine lacks is sent, every digest is checked, and nothing runs unless every
    service's image has the image ID the bundle records. FILE may be the first part of a split
    bundle. With --allowed-signers (or SEALIFT_ALLOWED_SIGNERS set) nothing is loaded unless
    FILE.sig is a valid signature by a listed key (see `sealift sign`).
    """
    from sealift.ends.engine import Engine

    with errors_to_exit():
        if archive == "-" and sys.stdin.isatty():
            raise UsageError("stdin is a terminal: name the bundle FILE or pipe one in")
        engine = Engine(host)
        # before any work: the spool and the engine's disk must hold what the bundle brings
        space.check(space.load_needs(archive, space.engine_data_root(engine)), f"loading {archive}")
        check_signature(archive, allowed_signers, signer)
        tool = find_compose(compose_environment(engine))
        if up:
            require_compose(tool)
        source = ArchiveSource(archive)
        try:
            bundle = read_archive_bundle(source)
            directory = Path(project_dir or bundle.project).absolute()
            check_project_dir(directory)
            with progress.byte_progress(
                "loading",
                lambda: _bytes_read(source),
                _input_size(archive),
                show=progress.enabled(quiet),
            ):
                result = load_images(source, engine, platform)
        finally:
            source.close()
        check_images(engine, bundle)
        written = write_project(bundle, directory, for_v1=tool is not None and tool.is_v1)
        if up:
            compose_up(engine, bundle, directory, require_compose(tool))
        if as_json:
            summary = {
                "project": bundle.project,
                "project_dir": str(directory),
                "files": [str(path) for path in written],
                "services": {
                    name: {"image": s.image, "image_id": s.image_id}
                    for name, s in sorted(bundle.services.items())
                },
                "loaded": result.names,
                "layers_sent": result.layers_sent,
                "layers_skipped": result.layers_skipped,
                "bytes_sent": result.bytes_sent,
                "compose": " ".join(tool.command) if tool is not None else None,
                "compose_version": tool.version if tool is not None else None,
                "up": up,
            }
            click.echo(json.dumps(summary))
        elif not quiet:
            for line in result.names:
                click.echo(line)
            click.echo(f"Project {bundle.project} written to {directory}")
