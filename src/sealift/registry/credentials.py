"""The logins docker and podman users already have, found the way those tools find them.

Looked up in this order, the first match winning:

1. ``REGISTRY_AUTH_FILE`` (podman's and skopeo's override), when set;
2. docker's ``config.json`` (``$DOCKER_CONFIG`` or ``~/.docker``): ``credHelpers[host]``, then
   ``credsStore``, then ``auths`` (base64 ``user:password``, or an identity token);
3. containers' ``auth.json``: ``$XDG_RUNTIME_DIR/containers/auth.json``, then
   ``~/.config/containers/auth.json``.

In ``auth.json`` a key may name a repository namespace (``host/team``); the longest key that
contains the repository wins, as in containers/image.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealift.reference import DEFAULT_DOMAIN
from sealift.registry.errors import BadCredentialsError, RegistryError

_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io")
TOKEN_USERNAME = "<token>"
_HELPER_TIMEOUT = 60


@dataclass(frozen=True)
class Credentials:
    """A login: user and password, or an identity (OAuth2 refresh) token."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)
    origin: str = ""
    """Where it was found, for messages: ``~/.docker/config.json``."""


def find_credentials(
    host: str, repository: str | None = None, env: Mapping[str, str] | None = None
) -> Credentials | None:
    """The login configured for ``host`` (``127.0.0.1:5000``, ``docker.io``), or None."""
    env = os.environ if env is None else env
    auth_file = env.get("REGISTRY_AUTH_FILE")
    if auth_file:
        found = _from_auth_file(Path(auth_file), host, repository)
        if found is not None:
            return found
    found = _from_docker_config(_docker_config_path(env), host, env)
    if found is not None:
        return found
    for path in _containers_auth_files(env):
        found = _from_auth_file(path, host, repository)
        if found is not None:
            return found
    return None


def searched_files(env: Mapping[str, str] | None = None) -> list[str]:
    """The files :func:`find_credentials` reads, for a "no credentials" message."""
    env = os.environ if env is None else env
    paths = [Path(env["REGISTRY_AUTH_FILE"])] if env.get("REGISTRY_AUTH_FILE") else []
    paths += [_docker_config_path(env), *_containers_auth_files(env)]
    return [str(path) for path in paths]


def _docker_config_path(env: Mapping[str, str]) -> Path:
    directory = env.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else _home(env) / ".docker/config.json"


def _containers_auth_files(env: Mapping[str, str]) -> list[Path]:
    paths = []
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(Path(env["XDG_RUNTIME_DIR"]) / "containers/auth.json")
    paths.append(_home(env) / ".config/containers/auth.json")
    return paths


def _home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read credentials from {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise RegistryError(f"cannot read credentials from {path}: not a JSON object")
    return document


def _from_docker_config(path: Path, host: str, env: Mapping[str, str]) -> Credentials | None:
    document = _read_json(path)
    if document is None:
        return None
    helpers = document.get("credHelpers") or {}
    for key in _host_keys(host):
        if isinstance(helpers, dict) and isinstance(helpers.get(key), str):
            return run_helper(helpers[key], _helper_server(host), env)
    store = document.get("credsStore")
    if isinstance(store, str) and store:
        found = run_helper(store, _helper_server(host), env)
        if found is not None:
            return found
    return _from_auths(document.get("auths"), _host_keys(host), path)


def _from_auth_file(path: Path, host: str, repository: str | None) -> Credentials | None:
    document = _read_json(path)
    if document is None:
        return None
    keys = [f"{host}/{repository}"] if repository else []
    if repository:
        parts = repository.split("/")
        keys += [f"{host}/{'/'.join(parts[:i])}" for i in range(len(parts) - 1, 0, -1)]
    return _from_auths(document.get("auths"), [*keys, *_host_keys(host)], path)


def _host_keys(host: str) -> list[str]:
    return [DEFAULT_DOMAIN, *_DOCKER_HUB_KEYS] if host == DEFAULT_DOMAIN else [host]


def _helper_server(host: str) -> str:
    return _DOCKER_HUB_KEYS[0] if host == DEFAULT_DOMAIN else host


def _from_auths(auths: Any, keys: list[str], path: Path) -> Credentials | None:
    if not isinstance(auths, dict):
        return None
    normalised = {_normalise_key(key): value for key, value in auths.items()}
    for key in keys:
        entry = auths.get(key) if key in auths else normalised.get(_normalise_key(key))
        if isinstance(entry, dict):
            found = _decode_entry(entry, key, path)
            if found is not None:
                return found
    return None


def _normalise_key(key: str) -> str:
    """``https://host:5000/v1/`` -> ``host:5000``, as docker matches its ``auths`` keys."""
    for scheme in ("https://", "http://"):
        if key.startswith(scheme):
            return key[len(scheme) :].partition("/")[0]
    return key


def _decode_entry(entry: dict[str, Any], key: str, path: Path) -> Credentials | None:
    token = entry.get("identitytoken") or None
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            username, colon, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, ValueError) as exc:
            raise BadCredentialsError(f"{path}: the 'auth' of {key!r} is not base64") from exc
        if not colon:
            raise BadCredentialsError(f"{path}: the 'auth' of {key!r} is not user:password")
        return Credentials(username, password, token if isinstance(token, str) else None, str(path))
    if isinstance(token, str):
        return Credentials(TOKEN_USERNAME, "", token, str(path))
    return None


def run_helper(name: str, server: str, env: Mapping[str, str]) -> Credentials | None:
    """Ask ``docker-credential-NAME get`` for ``server``'s login (None when it has none)."""
    program = f"docker-credential-{name}"
    executable = shutil.which(program, path=env.get("PATH"))
    if executable is None:
        raise RegistryError(
            f"credential helper {program} (named in docker's config) is not installed"
        )
    try:
        result = subprocess.run(
            [executable, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=_HELPER_TIMEOUT,
            env=dict(env),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(f"credential helper {program} failed: {exc}") from exc
    output = result.stdout.decode(errors="replace").strip()
    if result.returncode != 0:
        if "credentials not found" in output.lower():
            return None
        detail = output or result.stderr.decode(errors="replace").strip()
        first_line = (detail.splitlines() or ["no output"])[0]
        raise RegistryError(f"credential helper {program} failed: {first_line}")
    try:
        answer = json.loads(output)
        username, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"credential helper {program} gave an unreadable answer") from exc
    if not isinstance(username, str) or not isinstance(secret, str):
        raise RegistryError(f"credential helper {program} gave an unreadable answer")
    if username == TOKEN_USERNAME:
        return Credentials(username, "", secret, program)
    return Credentials(username, secret, None, program)
