"""HTTP basic and the bearer-token flow, as the distribution token spec describes them.

A registry says how it wants to be asked in its 401's ``WWW-Authenticate`` challenge. For
``Basic`` the login goes with every request. For ``Bearer`` sealift asks the token service
(``realm``) for a token covering the scopes a request needs (``repository:team/api:pull,push``,
plus ``repository:other:pull`` for a cross-repository mount), keeps it until shortly before it
expires, and asks again when the registry answers 401 to it (revoked, clock skew).
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sealift.registry.credentials import TOKEN_USERNAME, Credentials
from sealift.registry.errors import (
    AccessDeniedError,
    BadCredentialsError,
    NoCredentialsError,
    RegistryError,
)

if TYPE_CHECKING:
    import requests

_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')
_DEFAULT_TOKEN_LIFETIME = 60
_EXPIRY_MARGIN = 10
CLIENT_ID = "sealift"


@dataclass(frozen=True)
class Challenge:
    scheme: str
    """``basic`` or ``bearer`` (lower case)."""
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a ``WWW-Authenticate`` header, or None if there is none."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params = {}
    for name, value in _PARAM.findall(rest):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name.lower()] = value
    return Challenge(scheme.lower(), params)


def scope_text(repository: str, actions: Iterable[str]) -> str:
    return f"repository:{repository}:{','.join(actions)}"


@dataclass
class _Token:
    value: str
    expires: float


GetToken = Callable[[str, dict[str, Any], Credentials | None], "requests.Response"]
"""``get_token(realm, params, credentials)``: one request to the token service."""


class Authenticator:
    """The credentials and the current tokens of one registry; safe to share between threads."""

    def __init__(
        self,
        host: str,
        credentials: Credentials | None,
        searched: Callable[[], list[str]],
        get_token: GetToken,
    ) -> None:
        self.host = host
        self.credentials = credentials
        self._searched = searched
        self._get_token = get_token
        self._challenge: Challenge | None = None
        self._tokens: dict[frozenset[str], _Token] = {}
        self._lock = threading.Lock()

    def headers(self, scopes: frozenset[str]) -> dict[str, str]:
        """The Authorization header for a request needing ``scopes`` (none before a challenge)."""
        with self._lock:
            challenge = self._challenge
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            return self._basic()
        if challenge.scheme == "bearer":
            return {"Authorization": f"Bearer {self._token(challenge, scopes)}"}
        raise RegistryError(
            f"registry {self.host} asks for {challenge.scheme} authentication, "
            "which sealift does not speak"
        )

    def unauthorized(
        self, header: str, scopes: frozenset[str], sent: dict[str, str], *, retried: bool
    ) -> None:
        """Take a 401's challenge into account, so that the request can be sent again.

        A refused token is dropped, so the next attempt gets a new one; when that one is
        refused too (``retried``) or a login is refused, a retry cannot help: raise what is
        wrong (no login, wrong login, or no access).
        """
        challenge = parse_challenge(header)
        if challenge is None:
            raise RegistryError(f"registry {self.host} answered 401 without a challenge")
        authorization = sent.get("Authorization", "")
        if challenge.scheme == "basic" and authorization:
            raise self._login_refused()
        if challenge.scheme == "basic" and self.credentials is None:
            raise self._missing(scopes)
        if challenge.scheme == "bearer" and authorization.startswith("Bearer "):
            if retried:
                raise self._denied(challenge, scopes)
            with self._lock:
                current = self._tokens.get(scopes)
                if current is not None and current.value == authorization[7:]:
                    del self._tokens[scopes]
        with self._lock:
            self._challenge = challenge

    def _denied(self, challenge: Challenge, scopes: frozenset[str]) -> RegistryError:
        if self.credentials is None:
            return self._missing(scopes)
        wanted = ", ".join(sorted(scopes)) or "access"
        reason = f" ({challenge.params['error']})" if "error" in challenge.params else ""
        return AccessDeniedError(f"registry {self.host} denied {wanted} to {self._who()}{reason}")

    def _basic(self) -> dict[str, str]:
        if self.credentials is None:
            return {}
        pair = f"{self.credentials.username}:{self.credentials.password}".encode()
        return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}

    def _token(self, challenge: Challenge, scopes: frozenset[str]) -> str:
        with self._lock:
            current = self._tokens.get(scopes)
            if current is not None and current.expires > time.monotonic():
                return current.value
        token = self._fetch_token(challenge, scopes)
        with self._lock:
            self._tokens[scopes] = token
        return token.value

    def _fetch_token(self, challenge: Challenge, scopes: frozenset[str]) -> _Token:
        realm = challenge.params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.host} asks for a token but names no token service")
        params: dict[str, Any] = {"scope": sorted(scopes)} if scopes else {}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        started = time.monotonic()
        response = self._get_token(realm, params, self.credentials)
        if response.status_code in (401, 403):
            if self.credentials is None:
                raise self._missing(scopes)
            raise self._login_refused()
        if response.status_code != 200:
            raise RegistryError(
                f"token service {realm} of registry {self.host} answered {response.status_code}"
            )
        try:
            answer = response.json()
            value = answer.get("token") or answer.get("access_token")
            lifetime = int(answer.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError) as exc:
            raise RegistryError(f"token service {realm} gave an unreadable answer") from exc
        if not isinstance(value, str) or not value:
            raise RegistryError(f"token service {realm} gave no token")
        return _Token(value, started + max(lifetime - _EXPIRY_MARGIN, 1))

    def _who(self) -> str:
        if self.credentials is None:
            return "an anonymous client"
        if self.credentials.username == TOKEN_USERNAME:
            return f"the identity token from {self.credentials.origin}"
        return f"user {self.credentials.username!r}"

    def _login_refused(self) -> BadCredentialsError:
        assert self.credentials is not None
        return BadCredentialsError(
            f"registry {self.host} refused the login of {self._who()} "
            f"(from {self.credentials.origin}); check it with docker login {self.host}"
        )

    def _missing(self, scopes: frozenset[str]) -> NoCredentialsError:
        wanted = f" for {', '.join(sorted(scopes))}" if scopes else ""
        return NoCredentialsError(
            f"registry {self.host} wants a login{wanted} and none is configured "
            f"(looked in {', '.join(self._searched())}); run docker login {self.host}"
        )
