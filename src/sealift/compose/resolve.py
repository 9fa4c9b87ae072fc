"""Compose files -> the project model ``docker compose config`` prints (compose v2's rules).

The steps, in compose's order: find the files (``-f``, else ``COMPOSE_FILE``, else
``compose.yaml`` & co. and their override file, in the working directory or a parent); read the
environment (``.env`` in the project directory or the ``--env-file`` files, then the process
environment, which wins); interpolate each file; bring its services into canonical form
(``canonical.py``) and apply ``extends``; merge the files in order; add the dependencies links,
``volumes_from`` and ``network_mode: service:X`` imply; keep the services the active profiles
enable; resolve ``environment``/``env_file``; name the project and the networks, volumes, secrets
and configs the services use (unused ones are dropped, as compose does).

Not supported (refused with a clear error rather than resolved differently): top-level
``include``.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealift.compose import yamlio
from sealift.compose.canonical import canonical_service, host_path
from sealift.compose.interpolate import escape, interpolate, read_env_file
from sealift.errors import UsageError

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_FILES = (
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
)
_PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_REPLACED_LISTS = {"command", "entrypoint"}
_MAX_EXTENDS_DEPTH = 8


@dataclass(frozen=True)
class ComposeOptions:
    """What ``docker compose`` takes on its command line, and the environment it runs in."""

    files: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()
    project_name: str | None = None
    project_directory: str | None = None
    working_dir: Path = field(default_factory=Path.cwd)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass(frozen=True)
class Project:
    """A resolved compose project: ``model`` is what ``docker compose config`` prints, with
    strings unescaped (``to_yaml`` escapes ``$`` again)."""

    name: str
    directory: Path
    files: tuple[Path, ...]
    model: dict[str, Any]

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        services: dict[str, dict[str, Any]] = self.model.get("services") or {}
        return services

    @property
    def profiles(self) -> list[str]:
        """Every profile a kept service belongs to (what must be active to run them all)."""
        return sorted({p for s in self.services.values() for p in s.get("profiles") or ()})

    def to_yaml(self) -> str:
        return yamlio.dump(_escaped(self.model))


def resolve(options: ComposeOptions) -> Project:
    """The project ``docker compose [-f ...] [--profile ...] config`` would print."""
    cwd = options.working_dir
    cwd_env = _environment(options, cwd) if not options.files else {}
    files = _compose_files(options, cwd, cwd_env)
    directory = Path(options.project_directory or files[0].parent).absolute()
    environ = _environment(options, directory)
    merged: dict[str, Any] = {}
    for path in files:
        merged = _merge(merged, _load_file(path, environ, directory))
    merged.pop("version", None)
    if not isinstance(merged.get("services"), dict) or not merged["services"]:
        raise UsageError(f"{files[0]}: no services defined")
    name = _project_name(options, environ, merged, directory)
    profiles = options.profiles or tuple(
        p.strip() for p in environ.get("COMPOSE_PROFILES", "").split(",") if p.strip()
    )
    _add_implicit_dependencies(merged["services"])
    merged["services"] = _enabled_services(merged["services"], set(profiles))
    for service_name, service in merged["services"].items():
        _finish_service(service_name, service, environ, directory)
    model = {"name": name, **{k: v for k, v in merged.items() if k != "name"}}
    _name_resources(model, name, directory)
    return Project(name, directory, tuple(files), model)


# ----------------------------------------------------------------------------------- inputs
def _compose_files(options: ComposeOptions, cwd: Path, env: Mapping[str, str]) -> list[Path]:
    if options.files:
        names: list[str] = list(options.files)
    elif env.get("COMPOSE_FILE"):
        separator = env.get("COMPOSE_PATH_SEPARATOR", os.pathsep)
        names = [n for n in env["COMPOSE_FILE"].split(separator) if n]
    else:
        return _default_files(cwd)
    paths = [(cwd / name).absolute() for name in names]
    for path in paths:
        if not path.is_file():
            raise UsageError(f"compose file {path} not found")
    return paths


def _default_files(cwd: Path) -> list[Path]:
    for directory in (cwd.absolute(), *cwd.absolute().parents):
        found = next((directory / n for n in DEFAULT_FILES if (directory / n).is_file()), None)
        if found is not None:
            override = next(
                (directory / n for n in OVERRIDE_FILES if (directory / n).is_file()), None
            )
            return [found] if override is None else [found, override]
    raise UsageError(
        f"no compose file in {cwd} or its parents (looked for {', '.join(DEFAULT_FILES)}): "
        "name one with -f"
    )


def _environment(options: ComposeOptions, directory: Path) -> dict[str, str]:
    """Variables for interpolation: the env files (or ``.env``), then the process's, which win."""
    if options.env_files:
        paths = [options.working_dir / f for f in options.env_files]
    else:
        paths = [p for p in [directory / ".env"] if p.is_file()]
    environ: dict[str, str] = {}
    for path in paths:
        environ.update(read_env_file(path, {**environ, **options.environ}))
    environ.update(options.environ)
    return environ


def _load_file(
    path: Path, environ: Mapping[str, str], directory: Path, depth: int = 0
) -> dict[str, Any]:
    if depth > _MAX_EXTENDS_DEPTH:
        raise UsageError(f"{path}: extends files nest deeper than {_MAX_EXTENDS_DEPTH}")
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read compose file {path}: {exc.strerror}") from exc
    document = yamlio.load(text, str(path))
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise UsageError(f"{path}: the top level must be a mapping")
    if "include" in document:
        raise UsageError(
            f"{path}: `include:` is not supported by sealift compose yet: merge the included "
            "files with -f instead"
        )
    document = dict(_interpolated(document, environ, str(path)))
    services = document.get("services") or {}
    if not isinstance(services, dict):
        raise UsageError(f"{path}: services must be a mapping")
    for service_name, service in services.items():
        if service is None:
            services[service_name] = service = {}
        if not isinstance(service, dict):
            raise UsageError(f"{path}: service {service_name!r} must be a mapping")
        canonical_service(service, directory, f"{path}: service {service_name!r}")
    _apply_extends(services, path, environ, depth)
    return document


def _apply_extends(
    services: dict[str, dict[str, Any]], path: Path, environ: Mapping[str, str], depth: int
) -> None:
    """Each service that ``extends`` another becomes that service merged with its own keys."""
    resolving: list[str] = []

    def resolved(name: str) -> dict[str, Any]:
        service = services.get(name)
        if service is None:
            raise UsageError(f"{path}: cannot extend service {name!r}, which is not defined")
        extends = service.get("extends")
        if extends is None:
            return service
        if name in resolving:
            cycle = " -> ".join([*resolving, name])
            raise UsageError(f"{path}: services extend each other in a cycle: {cycle}")
        resolving.append(name)
        base = _extended(extends, path, environ, depth, resolved)
        resolving.pop()
        own = {key: value for key, value in service.items() if key != "extends"}
        services[name] = _merge(copy.deepcopy(base), own, ("services", name))
        return services[name]

    for name in list(services):
        resolved(name)


def _extended(
    extends: Any,
    path: Path,
    environ: Mapping[str, str],
    depth: int,
    resolved: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    spec = {"service": extends} if isinstance(extends, str) else extends
    if not isinstance(spec, dict) or not isinstance(spec.get("service"), str):
        raise UsageError(f"{path}: extends needs a service name")
    if not spec.get("file"):
        return resolved(spec["service"])
    other = (path.parent / str(spec["file"])).absolute()
    if not other.is_file():
        raise UsageError(f"{path}: extends file {other} not found")
    services = _load_file(other, environ, other.parent, depth + 1).get("services") or {}
    if spec["service"] not in services:
        raise UsageError(f"{other}: no service {spec['service']!r} to extend")
    base: dict[str, Any] = services[spec["service"]]
    return base


def _interpolated(value: Any, environ: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        return interpolate(value, environ.get, where)
    if isinstance(value, dict):
        return {k: _interpolated(v, environ, f"{where}: {k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolated(v, environ, where) for v in value]
    return value


def _project_name(
    options: ComposeOptions, environ: Mapping[str, str], model: dict[str, Any], directory: Path
) -> str:
    if options.project_name:
        if not _PROJECT_NAME.fullmatch(options.project_name):
            raise UsageError(
                f"invalid project name {options.project_name!r}: use lowercase letters, digits, "
                "'-' and '_', starting with a letter or digit"
            )
        return options.project_name
    for candidate in (environ.get("COMPOSE_PROJECT_NAME"), model.get("name"), directory.name):
        if candidate:
            name = re.sub(r"[^a-z0-9_-]", "", str(candidate).lower()).lstrip("_-")
            if name:
                return name
    raise UsageError(f"cannot name the project from {directory}: use -p NAME")


def _enabled_services(
    services: dict[str, dict[str, Any]], active: set[str]
) -> dict[str, dict[str, Any]]:
    def enabled(service: dict[str, Any]) -> bool:
        wanted = service.get("profiles") or []
        return not wanted or "*" in active or bool(active & set(wanted))

    kept = {name: s for name, s in services.items() if enabled(s)}
    for name, service in kept.items():
        for dependency, detail in (service.get("depends_on") or {}).items():
            if dependency in kept or not (detail or {}).get("required", True):
                continue
            why = "is not defined" if dependency not in services else "is in an inactive profile"
            raise UsageError(f"service {name!r} depends on service {dependency!r}, which {why}")
    return kept


# ------------------------------------------------------------------------------------ merge
def _merge(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """Compose's merge of ``override`` onto ``base`` (both already canonical)."""
    if isinstance(base, dict) and isinstance(override, dict):
        result = dict(base)
        for key, value in override.items():
            result[key] = _merge(base[key], value, (*path, key)) if key in base else value
        return result
    if isinstance(base, list) and isinstance(override, list):
        return _merge_lists(base, override, path)
    return override


def _merge_lists(base: list[Any], override: list[Any], path: tuple[str, ...]) -> list[Any]:
    key = path[-1] if path else ""
    in_service = len(path) == 3 and path[0] == "services"
    if key in _REPLACED_LISTS or path[-2:] == ("healthcheck", "test") or not in_service:
        return override
    if key == "volumes":
        by_target = {v.get("target"): i for i, v in enumerate(base) if isinstance(v, dict)}
        merged = list(base)
        for volume in override:
            index = by_target.get(volume.get("target")) if isinstance(volume, dict) else None
            if index is None:
                merged.append(volume)
            else:
                merged[index] = volume
        return merged
    return [*base, *(item for item in override if item not in base)]


# ------------------------------------------------------------------------------ final steps
def _add_implicit_dependencies(services: dict[str, dict[str, Any]]) -> None:
    """Links, ``volumes_from`` and ``network_mode: service:X`` make a service depend on X."""
    for service in services.values():
        needed = [str(link).split(":")[0] for link in service.get("links") or []]
        needed += [
            str(source).split(":")[0]
            for source in service.get("volumes_from") or []
            if not str(source).startswith("container:")
        ]
        mode = service.get("network_mode")
        if isinstance(mode, str) and mode.startswith("service:"):
            needed.append(mode.removeprefix("service:"))
        for dependency in needed:
            service.setdefault("depends_on", {}).setdefault(
                dependency, {"condition": "service_started", "restart": True, "required": True}
            )


def _finish_service(
    name: str, service: dict[str, Any], environ: Mapping[str, str], directory: Path
) -> None:
    if not service.get("image") and not service.get("build"):
        raise UsageError(f"service {name!r} has neither an image nor a build context")
    environment = _env_file_values(service.pop("env_file", None), environ, directory)
    for key, value in (service.get("environment") or {}).items():
        environment[key] = environ.get(key) if value is None else value
    if environment:
        service["environment"] = environment
    else:
        service.pop("environment", None)
    for key in ("command", "entrypoint"):
        if service.get(key) is None:
            service.pop(key, None)
    if "network_mode" not in service and not service.get("networks"):
        service["networks"] = {"default": None}


def _env_file_values(
    files: list[Any] | None, environ: Mapping[str, str], directory: Path
) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for item in files or []:
        spec = item if isinstance(item, dict) else {"path": item}
        path = host_path(str(spec["path"]), directory)
        if not path.is_file() and not spec.get("required", True):
            continue
        values.update(read_env_file(path, environ))
    return values


def _name_resources(model: dict[str, Any], project: str, directory: Path) -> None:
    """Keep the networks, volumes, secrets and configs services use, each with its name."""
    services = model["services"].values()
    used = {
        "networks": {n for s in services for n in (s.get("networks") or {})},
        "volumes": {
            v.get("source")
            for s in services
            for v in s.get("volumes") or []
            if isinstance(v, dict) and v.get("type") == "volume" and v.get("source")
        },
        "secrets": {r.get("source") for s in services for r in s.get("secrets") or []},
        "configs": {r.get("source") for s in services for r in s.get("configs") or []},
    }
    for section, names in used.items():
        declared = dict(model.pop(section, None) or {})
        if section == "networks" and "default" in names:
            declared.setdefault("default", None)
        undefined = sorted(str(n) for n in names - set(declared))
        if undefined:
            singular = section.removesuffix("s")
            raise UsageError(
                f"services use {singular} {', '.join(undefined)}, which is not defined"
            )
        kept = {key: _named(key, spec, project, directory) for key, spec in declared.items()}
        kept = {key: spec for key, spec in kept.items() if key in names}
        if kept:
            model[section] = kept


def _named(key: str, spec: Any, project: str, directory: Path) -> dict[str, Any]:
    resource = dict(spec or {})
    resource.setdefault("name", key if resource.get("external") else f"{project}_{key}")
    if isinstance(resource.get("file"), str):
        resource["file"] = str(host_path(resource["file"], directory))
    return resource


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value
