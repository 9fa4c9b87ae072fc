"""One service in compose v2's canonical form, as ``docker compose config`` prints it.

``command``/``entrypoint`` as lists; ``environment``/``labels``/``sysctls`` as maps of strings;
``ports``, ``volumes``, ``devices``, ``secrets``, ``configs`` in long syntax; ``depends_on`` as a
map with condition and required; byte sizes as strings of bytes (``50m`` -> ``"52428800"``);
durations as Go prints them (``90s`` -> ``1m30s``); a string healthcheck test as ``CMD-SHELL``;
relative paths made absolute. Keys not named here are kept as written.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

from sealift.errors import UsageError

_LIST_KEYS = ("dns", "dns_search", "tmpfs", "env_file")


def canonical_service(service: dict[str, Any], directory: Path, where: str) -> None:
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
    if "sysctls" in service:
        service["sysctls"] = _mapping(service["sysctls"], "", f"{where}: sysctls")
    if "devices" in service:
        service["devices"] = [_device(device) for device in service["devices"] or []]
    if "secrets" in service:
        service["secrets"] = [_secret(item, "/run/secrets/") for item in service["secrets"] or []]
    if "configs" in service:
        service["configs"] = [_secret(item, None) for item in service["configs"] or []]
    if isinstance(service.get("healthcheck"), dict):
        service["healthcheck"] = _healthcheck(service["healthcheck"], where)
    if "stop_grace_period" in service:
        service["stop_grace_period"] = go_duration(service["stop_grace_period"], where)
    for key in _BYTE_KEYS:
        if service.get(key) is not None:
            service[key] = byte_size(service[key], f"{where}: {key}")
    _canonical_deploy(service.get("deploy"), where)


_BYTE_KEYS = ("mem_limit", "memswap_limit", "mem_reservation", "shm_size")
_DURATION_KEYS = ("interval", "timeout", "start_period", "start_interval")


def _device(item: Any) -> Any:
    if not isinstance(item, str):
        return item
    parts = item.split(":")
    target = parts[1] if len(parts) > 1 else parts[0]
    permissions = parts[2] if len(parts) > 2 else "rwm"
    return {"source": parts[0], "target": target, "permissions": permissions}


def _secret(item: Any, directory: str | None) -> Any:
    """A service's secret or config reference in long syntax; secrets get their default
    target under ``/run/secrets``."""
    long_form = {"source": item} if isinstance(item, str) else dict(item)
    if directory is not None and "target" not in long_form and "source" in long_form:
        long_form["target"] = f"{directory}{long_form['source']}"
    return long_form


def _healthcheck(check: dict[str, Any], where: str) -> dict[str, Any]:
    check = dict(check)
    if isinstance(check.get("test"), str):
        check["test"] = ["CMD-SHELL", check["test"]]
    if check.get("disable") is False:
        del check["disable"]
    for key in _DURATION_KEYS:
        if check.get(key) is not None:
            check[key] = go_duration(check[key], f"{where}: healthcheck {key}")
    return check


def _canonical_deploy(deploy: Any, where: str) -> None:
    resources = deploy.get("resources") if isinstance(deploy, dict) else None
    for kind in ("limits", "reservations"):
        amounts = resources.get(kind) if isinstance(resources, dict) else None
        if not isinstance(amounts, dict):
            continue
        if amounts.get("memory") is not None:
            amounts["memory"] = byte_size(amounts["memory"], f"{where}: deploy memory")
        if isinstance(amounts.get("cpus"), str):
            amounts["cpus"] = float(amounts["cpus"])


_BYTES = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_BINARY = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def byte_size(value: Any, where: str) -> str:
    """A size (``50m``, ``1.5k``, ``1024``) as the string of bytes compose prints."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    match = _BYTES.match(str(value))
    if match is None:
        raise UsageError(f"{where}: invalid size {value!r}")
    unit = match[2].lower() if match[2] else None
    return str(int(float(match[1]) * _BINARY[unit]))


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_NANOSECONDS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


def go_duration(value: Any, where: str) -> str:
    """A duration (``90s``, ``1m``, ``1h30m``) written as Go's ``time.Duration`` prints it."""
    text = str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = f"{value}s"
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise UsageError(f"{where}: invalid duration {value!r}")
    total = round(sum(float(number) * _NANOSECONDS[unit] for number, unit in parts))
    return _format_nanoseconds(total)


def _format_nanoseconds(total: int) -> str:
    if total == 0:
        return "0s"
    if total < 1_000:
        return f"{total}ns"
    if total < 1_000_000:
        return f"{_trimmed(total / 1_000)}µs"
    if total < 10**9:
        return f"{_trimmed(total / 1_000_000)}ms"
    hours, rest = divmod(total, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = f"{_trimmed(rest / 10**9)}s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    return f"{minutes}m{seconds}" if minutes else seconds


def _trimmed(number: float) -> str:
    return f"{number:.9f}".rstrip("0").rstrip(".")


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
            long_form["source"] = str(host_path(long_form["source"], directory))
        tmpfs = long_form.get("tmpfs")
        if isinstance(tmpfs, dict) and tmpfs.get("size") is not None:
            long_form["tmpfs"] = {**tmpfs, "size": byte_size(tmpfs["size"], f"{where}: tmpfs")}
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
        "source": str(host_path(source, directory)) if is_path else source,
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


def host_path(path: str, directory: Path) -> Path:
    expanded = Path(path).expanduser() if path.startswith("~") else Path(path)
    return Path(os.path.normpath(directory / expanded))


def _build(value: Any, directory: Path) -> dict[str, Any]:
    build = {"context": value} if isinstance(value, str) else dict(value or {})
    context = str(build.get("context", "."))
    if "://" not in context and not context.startswith("git@"):
        build["context"] = str(host_path(context, directory))
    build.setdefault("dockerfile", "Dockerfile")
    return build
