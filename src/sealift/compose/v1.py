"""The resolved model in the form compose v1 (docker-compose 1.29) accepts, same meaning.

v1 validates against an older schema: no top-level ``name``, no ``required`` or ``restart`` in
``depends_on`` (v1 neither skips optional dependencies nor restarts dependents), devices as
strings, long-syntax ports without ``host_ip`` and with integer ``published``, bind mounts without
``create_host_path`` or ``selinux``; and it reads ``extra_hosts`` as ``host:ip``. Secrets from
``environment`` and configs from ``content`` have no v1 form and are left for v1 to refuse.
Short syntax says the same to v1 (which always creates a missing bind source, and ignores the
swarm-only port ``mode``), so ports and binds are written short.
"""

from __future__ import annotations

from typing import Any


def for_compose_v1(model: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``model`` that compose v1 reads with the same meaning (name: see ``-p``)."""
    converted = {key: value for key, value in model.items() if key != "name"}
    converted["services"] = {
        name: _service(dict(service)) for name, service in model.get("services", {}).items()
    }
    return converted


def _service(service: dict[str, Any]) -> dict[str, Any]:
    if isinstance(service.get("depends_on"), dict):
        service["depends_on"] = {
            name: {k: v for k, v in (detail or {}).items() if k not in ("required", "restart")}
            for name, detail in service["depends_on"].items()
        }
    if isinstance(service.get("ports"), list):
        service["ports"] = [_port(port) for port in service["ports"]]
    if isinstance(service.get("volumes"), list):
        service["volumes"] = [_volume(volume) for volume in service["volumes"]]
    if isinstance(service.get("devices"), list):
        service["devices"] = [_device(device) for device in service["devices"]]
    if isinstance(service.get("extra_hosts"), list):
        service["extra_hosts"] = [str(h).replace("=", ":", 1) for h in service["extra_hosts"]]
    return service


def _port(port: Any) -> Any:
    if not isinstance(port, dict) or set(port) - {
        "mode",
        "host_ip",
        "target",
        "published",
        "protocol",
    }:
        return port
    text = str(port["target"])
    if port.get("published"):
        text = f"{port['published']}:{text}"
        if port.get("host_ip"):
            text = f"{port['host_ip']}:{text}"
    return f"{text}/{port.get('protocol') or 'tcp'}"


def _device(device: Any) -> Any:
    if not isinstance(device, dict) or set(device) - {"source", "target", "permissions"}:
        return device
    return ":".join(str(device[k]) for k in ("source", "target", "permissions") if device.get(k))


def _volume(volume: Any) -> Any:
    if not isinstance(volume, dict) or volume.get("type") != "bind":
        return volume
    bind = volume.get("bind") or {}
    if set(volume) - {"type", "source", "target", "read_only", "bind"} or set(bind) - {
        "create_host_path",
        "selinux",
        "propagation",
    }:
        return volume
    options = ["ro"] if volume.get("read_only") else []
    options += [str(bind[key]) for key in ("selinux", "propagation") if bind.get(key)]
    suffix = f":{','.join(options)}" if options else ""
    return f"{volume['source']}:{volume['target']}{suffix}"
