"""The library behind ``sealift compose save`` and ``sealift compose load``.

Saving: resolve the project, map each service to its image, read those images from the engine
(``EngineSource``, never pulling) and write one sealift archive whose ``sealift/`` part is the
bundle. Loading: read the bundle, load the images (``EngineSink``: only what the engine lacks),
check that every service's image has the bundle's image ID, write the project directory, and
optionally run the host's compose with pulling disabled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealift.compose import yamlio
from sealift.compose.bundle import COMPOSE_FILE, Bundle, read_bundle, service_image
from sealift.compose.resolve import Project
from sealift.compose.v1 import for_compose_v1
from sealift.ends.archive import ArchiveSink, ArchiveSource
from sealift.ends.base import Sink, WriteResult
from sealift.errors import EngineError, NotFoundError, SealiftError, UsageError
from sealift.inventory import Inventory
from sealift.model import Entry
from sealift.reference import Reference
from sealift.transfer import CopyOptions, copy
from sealift.update import UpdateSink

if TYPE_CHECKING:
    from sealift.ends.engine import Engine, EngineSource

MARKER = "# written by sealift compose load"
ENV_FILE = ".env"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


# ------------------------------------------------------------------------------------- save
def service_images(project: Project) -> dict[str, str]:
    """Each service's image reference; a service that only builds is an error naming it."""
    images: dict[str, str] = {}
    for name, service in project.services.items():
        image = service.get("image")
        if not image:
            raise UsageError(
                f"service {name!r} is built (build:) but names no image: add `image: NAME:TAG` "
                "to it, build it (docker compose build), then save again"
            )
        images[name] = str(image)
    return images


def open_service_images(engine: Engine, images: Mapping[str, str]) -> EngineSource:
    """The engine's save stream of every service's image; a missing one names its service."""
    from sealift.ends.engine import EngineSource

    try:
        return EngineSource(engine, list(dict.fromkeys(map(save_name, images.values()))))
    except NotFoundError:
        missing = [(s, ref) for s, ref in images.items() if not _engine_has(engine, ref)]
        if not missing:
            raise
        described = "; ".join(f"service {s!r} uses image {ref!r}" for s, ref in missing)
        raise NotFoundError(
            f"{described}, which the engine at {engine.host} does not have: build or pull it "
            "there first (sealift never pulls)"
        ) from None


def save_name(ref: str) -> str:
    """The name to ask the engine to save for a service's image: compose means ``:latest`` by a
    bare name, where ``docker save NAME`` would save every tag of NAME."""
    try:
        reference = Reference.parse(ref, default_tag=False)
    except UsageError:
        return ref  # an image ID
    return f"{ref}:latest" if reference.tag is None and reference.digest is None else ref


def unique_layer_bytes(engine: Engine, image_ids: Iterable[str]) -> int | None:
    """About the bytes the engine's save stream carries for the images: every distinct layer
    once, a base shared by several services counted once. None when an image's history does
    not line up with its layers (a zero-sized layer, an engine that reports no sizes)."""
    sizes: dict[str, int] = {}
    for image_id in dict.fromkeys(image_ids):
        inspected = engine.inspect(image_id)
        layers = inspected.get("RootFS", {}).get("Layers") or []
        history = engine.call(engine.api.history, image_id) or []
        # newest first; steps that made no layer have size 0
        layer_sizes = [size for step in reversed(history) if (size := int(step.get("Size") or 0))]
        if not layers or len(layer_sizes) != len(layers):
            return None
        # the image's Size is in the stream's unit: uncompressed layers on the classic store
        # (where it is the history's sum), compressed blobs on the containerd store (where the
        # history gives unpacked sizes): each layer gets its share of it
        scale = int(inspected.get("Size") or 0) / sum(layer_sizes) or 1.0
        sizes.update(
            (layer, round(size * scale)) for layer, size in zip(layers, layer_sizes, strict=True)
        )
    return sum(sizes.values())


def _engine_has(engine: Engine, ref: str) -> bool:
    try:
        engine.inspect(ref)
    except NotFoundError:
        return False
    return True


def write_bundle(
    project: Project,
    images: Mapping[str, str],
    source: EngineSource,
    output: str,
    options: CopyOptions,
    *,
    split: int | None = None,
    since: Inventory | None = None,
) -> tuple[Bundle, WriteResult]:
    """Copy the images into the archive ``output`` (in parts of ``split`` bytes, if given) with
    the bundle as its ``sealift/`` part; with ``since``, only the layers that site lacks."""
    engine_ids = {s: str(source.found[save_name(ref)]["Id"]) for s, ref in images.items()}
    written: list[Bundle] = []

    def bundle_files(entries: list[Entry]) -> dict[str, bytes]:
        services = {
            service: service_image(ref, engine_ids[service], entries)
            for service, ref in images.items()
        }
        bundle = Bundle(project.name, tuple(project.profiles), services, project.to_yaml().encode())
        written.append(bundle)
        return bundle.files()

    sink: Sink = (
        ArchiveSink(output, split=split, extra_files=bundle_files)
        if since is None
        else UpdateSink(output, since, split=split, extra_files=bundle_files)
    )
    result = copy(source, sink, options)
    return written[0], result


# ------------------------------------------------------------------------------------- load
def read_archive_bundle(source: ArchiveSource) -> Bundle:
    return read_bundle(source.extra_files(), source.what)


def check_images(engine: Engine, bundle: Bundle) -> None:
    """Refuse unless every service's image is in the engine with the bundle's image ID."""
    wrong: list[str] = []
    for service, expected in sorted(bundle.services.items()):
        try:
            found = str(engine.inspect(expected.image)["Id"])
        except NotFoundError:
            found = "missing"
        if found not in expected.engine_ids:
            wrong.append(f"service {service!r} image {expected.image} is {_short(found)}")
    if wrong:
        raise SealiftError(
            f"refusing to run the project: {'; '.join(wrong)} in the engine at {engine.host}, "
            "not what the bundle says"
        )


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def write_project(bundle: Bundle, directory: Path, *, for_v1: bool = False) -> list[Path]:
    """The project directory: ``compose.yaml`` (the resolved file; in compose v1's form with
    ``for_v1``) and ``.env`` naming the project and its profiles, which both composes read.
    Files sealift did not write there are never replaced."""
    model = yamlio.load(bundle.compose_yaml, "the bundle's compose file")
    if not isinstance(model, dict):
        raise SealiftError("the bundle's compose file is not a mapping")
    if for_v1:
        model = for_compose_v1(model)
    compose = f"{MARKER} from project {bundle.project}\n{yamlio.dump(model)}"
    env = (
        f"{MARKER}: the project's name and profiles for docker compose\n"
        f"COMPOSE_PROJECT_NAME={bundle.project}\n"
        f"COMPOSE_PROFILES={','.join(bundle.profiles)}\n"
    )
    files = {directory / COMPOSE_FILE: compose, directory / ENV_FILE: env}
    check_project_dir(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SealiftError(f"cannot create {directory}: {exc.strerror}") from exc
    for path, text in files.items():
        _write_text(path, text)
    return list(files)


def check_project_dir(directory: Path) -> None:
    """Refuse a project directory holding a compose.yaml or .env that sealift did not write."""
    for name in (COMPOSE_FILE, ENV_FILE):
        _refuse_foreign(directory / name)


def _refuse_foreign(path: Path) -> None:
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            first = file.readline()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SealiftError(f"cannot read {path}: {exc.strerror}") from exc
    if not first.startswith(MARKER):
        raise UsageError(
            f"{path} exists and was not written by sealift: move it away or choose another "
            "--project-dir"
        )


def _write_text(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        Path(temp).chmod(0o644)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------- up
@dataclass(frozen=True)
class ComposeTool:
    """The compose a host has: ``docker compose`` (v2) or ``docker-compose`` (v1 or v2)."""

    command: tuple[str, ...]
    version: str

    @property
    def is_v1(self) -> bool:
        return self.version.lstrip("v").startswith("1.")

    def up_command(self, bundle: Bundle, directory: Path) -> list[str]:
        profiles = [flag for p in bundle.profiles for flag in ("--profile", p)]
        # v1 has no switch that forbids pulling; it pulls only an image the engine lacks, and
        # the caller checks every image's ID just before and every container's image after
        never_pull = [] if self.is_v1 else ["--pull", "never"]
        return [
            *self.command,
            "--project-name",
            bundle.project,
            "--project-directory",
            str(directory),
            "--file",
            str(directory / COMPOSE_FILE),
            *profiles,
            "up",
            "--detach",
            "--no-build",
            *never_pull,
        ]


def compose_environment(engine: Engine) -> dict[str, str]:
    """The environment the host's compose runs in: this process's, aimed at ``engine``."""
    environ = {**os.environ, "DOCKER_HOST": engine.host}
    environ.pop("DOCKER_CONTEXT", None)
    return environ


def find_compose(environ: Mapping[str, str]) -> ComposeTool | None:
    """``docker compose`` (v2) if the host has it, else ``docker-compose``, else None."""
    for command in (("docker", "compose"), ("docker-compose",)):
        if shutil.which(command[0], path=environ.get("PATH")) is None:
            continue
        try:
            done = subprocess.run(
                [*command, "version", "--short"],
                capture_output=True,
                text=True,
                env=dict(environ),
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = done.stdout.strip()
        if done.returncode == 0 and version:
            return ComposeTool(command, version)
    return None


def require_compose(tool: ComposeTool | None) -> ComposeTool:
    if tool is None:
        raise SealiftError(
            "--up needs docker compose (v2) or docker-compose (v1) on this host, and neither works"
        )
    return tool


def compose_up(engine: Engine, bundle: Bundle, directory: Path, tool: ComposeTool) -> None:
    """Run ``up`` with ``tool`` against ``engine``, never pulling; compose's own output goes to
    stderr."""
    environ = compose_environment(engine)
    check_images(engine, bundle)
    command = tool.up_command(bundle, directory)
    try:
        done = subprocess.run(command, env=environ, stdout=sys.stderr, check=False)
    except OSError as exc:
        raise SealiftError(f"cannot run {' '.join(tool.command)}: {exc.strerror}") from exc
    if done.returncode != 0:
        raise SealiftError(
            f"{' '.join(tool.command)} up failed (exit {done.returncode}); its output is above"
        )
    check_containers(engine, bundle)


def check_containers(engine: Engine, bundle: Bundle) -> None:
    """Every container of the project runs its service's image from the bundle."""
    containers: list[dict[str, Any]] = engine.call(
        engine.api.containers,
        all=True,
        filters={"label": f"{PROJECT_LABEL}={bundle.project}"},
    )
    for container in containers:
        service = (container.get("Labels") or {}).get(SERVICE_LABEL)
        expected = bundle.services.get(str(service))
        if expected is not None and container.get("ImageID") not in expected.engine_ids:
            raise EngineError(
                f"service {service!r} runs image {_short(str(container.get('ImageID')))}, "
                f"not the bundle's {_short(expected.image_id)}"
            )


def load_images(source: ArchiveSource, engine: Engine, platform: str | None) -> WriteResult:
    """Load the archive's images (only what the engine lacks), as ``sealift load`` does."""
    from sealift.ends.engine import EngineSink
    from sealift.transfer import Selection

    selection = Selection((), platform or f"linux/{engine.version.get('Arch', 'amd64')}")
    return copy(source, EngineSink(engine), CopyOptions(None, None, selection))
