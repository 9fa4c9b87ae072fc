"""Compose files -> the project model ``docker compose config`` prints (compose v2's rules).

The steps, in compose's order: find the files (``-f``, else ``COMPOSE_FILE``, else
``compose.yaml`` & co. and their override file); read the environment (``.env`` in the project
directory or the ``--env-file`` files, then the process environment, which wins); interpolate
each file; bring each file's services into canonical form; merge the files in order; keep the
services the active profiles enable; resolve ``environment``/``env_file``; name the project,
its networks and volumes.

Canonical forms follow compose v2 (compose-go): ``command``/``entrypoint`` as lists,
``environment``/``labels`` as maps of strings, ``ports``/``volumes`` in long syntax,
``depends_on`` as a map with condition and required, a ``default`` network for services without
networks or a network mode, relative paths made absolute. Other keys are kept as written.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealift.compose import yamlio
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
_LIST_KEYS = ("dns", "dns_search", "tmpfs", "env_file")
_REPLACED_LISTS = {"command", "entrypoint"}


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

    def to_yaml(self, *, with_name: bool = True) -> str:
        model = (
            dict(self.model) if with_name else {k: v for k, v in self.model.items() if k != "name"}
        )
        return yamlio.dump(_escaped(model))


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


def _load_file(path: Path, environ: Mapping[str, str], directory: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read compose file {path}: {exc.strerror}") from exc
    document = yamlio.load(text, str(path))
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise UsageError(f"{path}: the top level must be a mapping")
    document = dict(_interpolated(document, environ, str(path)))
    services = document.get("services") or {}
    if not isinstance(services, dict):
        raise UsageError(f"{path}: services must be a mapping")
    for service_name, service in services.items():
        if service is None:
            services[service_name] = service = {}
        if not isinstance(service, dict):
            raise UsageError(f"{path}: service {service_name!r} must be a mapping")
        _canonical_service(service, directory, f"{path}: service {service_name!r}")
    return document


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


# ---------------------------------------------------------------------------- canonical form
def _canonical_service(service: dict[str, Any], directory: Path, where: str) -> None:
    for key in ("command", "entrypoint"):
        if isinstance(service.get(key), str):
            service[key] = _shell_split(service[key], f"{where}: {key}")
    for key in _LIST_KEYS:
        if isinstance(service.get(key), str):
            service[key] = [service[key]]
    if "environment" in service:
        service["environment"] = _mapping(service["environment"], None, f"{where}: environment")
    if "labels" in service:
        service["labels"] = _mapping(service["labels"], "", f"{where}: labels")
    if "extra_hosts" in service:
        service["extra_hosts"] = _extra_hosts(service["extra_hosts"])
    if "expose" in service:
        service["expose"] = [str(port) for port in service["expose"] or []]
    if "ports" in service:
        service["ports"] = [p for item in service["ports"] or [] for p in _ports(item, where)]
    if "volumes" in service:
        service["volumes"] = [_volume(v, directory, where) for v in service["volumes"] or []]
    if isinstance(service.get("depends_on"), list):
        service["depends_on"] = {name: {} for name in service["depends_on"]}
    for detail in (service.get("depends_on") or {}).values():
        detail.setdefault("condition", "service_started")
        detail.setdefault("required", True)
    if isinstance(service.get("networks"), list):
        service["networks"] = dict.fromkeys(service["networks"])
    if "build" in service:
        service["build"] = _build(service["build"], directory)


def _shell_split(text: str, where: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"{where}: cannot split {text!r}: {exc}") from exc


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _mapping(value: Any, bare: str | None, where: str) -> dict[str, str | None]:
    """``[K=V, K]`` or ``{K: V}`` as ``{K: "V"}``; a bare ``K`` maps to ``bare``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): None if v is None else _scalar_text(v) for k, v in value.items()}
    if not isinstance(value, list):
        raise UsageError(f"{where} must be a list or a mapping")
    result: dict[str, str | None] = {}
    for item in value:
        key, equals, text = str(item).partition("=")
        result[key] = text if equals else bare
    return result


def _extra_hosts(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [f"{host}={address}" for host, address in value.items()]
    return [re.sub(r"^([^=:]+):", r"\1=", str(item)) for item in value or []]


_PORT = re.compile(
    r"^(?:(?:\[?(?P<ip>[0-9a-fA-F.:]+?)\]?:)?(?P<published>[0-9]*(?:-[0-9]+)?):)?"
    r"(?P<target>[0-9]+(?:-[0-9]+)?)(?:/(?P<protocol>[a-z]+))?$"
)


def _ports(item: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(item, dict):
        long_form = {"mode": "ingress", "protocol": "tcp", **item}
        if long_form.get("published") is not None:
            long_form["published"] = str(long_form["published"])
        return [long_form]
    match = _PORT.match(str(item))
    if match is None:
        raise UsageError(f"{where}: invalid port {item!r}")
    targets = _port_range(match["target"])
    published = _port_range(match["published"]) if match["published"] else []
    if published and len(published) != len(targets) and len(published) == 1:
        published = published * len(targets)
    if published and len(published) != len(targets):
        raise UsageError(f"{where}: port ranges of different sizes in {item!r}")
    result = []
    for i, target in enumerate(targets):
        port: dict[str, Any] = {"mode": "ingress", "target": target}
        if match["ip"]:
            port["host_ip"] = match["ip"]
        if published:
            port["published"] = str(published[i])
        port["protocol"] = match["protocol"] or "tcp"
        result.append(port)
    return result


def _port_range(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


_BIND_OPTIONS = {"z", "Z", "shared", "rshared", "slave", "rslave", "private", "rprivate"}


def _volume(item: Any, directory: Path, where: str) -> dict[str, Any]:
    if isinstance(item, dict):
        long_form = dict(item)
        if long_form.get("type") == "bind" and isinstance(long_form.get("source"), str):
            long_form["source"] = str(_host_path(long_form["source"], directory))
        return long_form
    parts = str(item).split(":")
    if len(parts) == 1:
        return {"type": "volume", "target": parts[0], "volume": {}}
    if len(parts) > 3:
        raise UsageError(f"{where}: invalid volume {item!r}")
    source, target, options = parts[0], parts[1], parts[2].split(",") if len(parts) == 3 else []
    is_path = source.startswith((".", "/", "~"))
    volume: dict[str, Any] = {
        "type": "bind" if is_path else "volume",
        "source": str(_host_path(source, directory)) if is_path else source,
        "target": target,
    }
    if "ro" in options:
        volume["read_only"] = True
    if is_path:
        bind: dict[str, Any] = {"create_host_path": True}
        for option in options:
            if option in ("z", "Z"):
                bind["selinux"] = option
            elif option in _BIND_OPTIONS:
                bind["propagation"] = option
        volume["bind"] = bind
    else:
        volume["volume"] = {"nocopy": True} if "nocopy" in options else {}
    return volume


def _host_path(path: str, directory: Path) -> Path:
    expanded = Path(path).expanduser() if path.startswith("~") else Path(path)
    return Path(os.path.normpath(directory / expanded))


def _build(value: Any, directory: Path) -> dict[str, Any]:
    build = {"context": value} if isinstance(value, str) else dict(value or {})
    context = str(build.get("context", "."))
    if "://" not in context and not context.startswith("git@"):
        build["context"] = str(_host_path(context, directory))
    build.setdefault("dockerfile", "Dockerfile")
    return build


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
        path = _host_path(str(spec["path"]), directory)
        if not path.is_file() and not spec.get("required", True):
            continue
        values.update(read_env_file(path, environ))
    return values


def _name_resources(model: dict[str, Any], project: str, directory: Path) -> None:
    used = {n for s in model["services"].values() for n in (s.get("networks") or {})}
    networks = dict(model.get("networks") or {})
    if "default" in used:
        networks.setdefault("default", None)
    volumes = dict(model.get("volumes") or {})
    for section, values in (("networks", networks), ("volumes", volumes)):
        for key, spec in list(values.items()):
            resource = dict(spec or {})
            external = resource.get("external")
            resource.setdefault("name", key if external else f"{project}_{key}")
            values[key] = resource
        if values:
            model[section] = values
    for section in ("secrets", "configs"):
        for spec in (model.get(section) or {}).values():
            if isinstance(spec, dict) and isinstance(spec.get("file"), str):
                spec["file"] = str(_host_path(spec["file"], directory))


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value
