"""One registry's HTTP: a pooled, thread-safe session that retries, authenticates and
translates failures into one-line errors.

The scheme is found once, by asking ``/v2/``: HTTPS, or plain HTTP where that is allowed
(loopback, ``insecure``) and the registry does not speak TLS. A loopback registry is asked over
plain HTTP first, as most are. Requests whose body can be sent
again (none, or bytes) are retried on connection failures, 429 and 5xx, with exponential backoff
that honours ``Retry-After``; streamed bodies are resumed by their caller instead
(:mod:`sealift.registry.upload`).
"""

from __future__ import annotations

import email.utils
import functools
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urljoin

import requests
import requests.adapters
import urllib3

from sealift import __version__
from sealift.registry.auth import CLIENT_ID, Authenticator
from sealift.registry.credentials import Credentials, find_credentials, searched_files
from sealift.registry.errors import CertificateError, RegistryError
from sealift.registry.names import api_host, is_loopback
from sealift.registry.tls import TlsOptions, allows_plain_http, hint, ssl_context

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0
_MAX_AUTH_ROUNDS = 3  # the challenge, a token, a new token
_TIMEOUT = (30.0, 300.0)
_PROBE_TIMEOUT = (5.0, 10.0)
USER_AGENT = f"sealift/{__version__}"
_SEND_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class TransportOptions:
    tls: TlsOptions = field(default_factory=TlsOptions)
    connections: int = 4
    retries: int = 5
    backoff: float = 0.5
    """First wait between attempts, doubled each time (with jitter)."""
    credentials: Credentials | None = None
    """A login to use instead of looking one up."""


Body = bytes | IO[bytes] | None


class _Adapter(requests.adapters.HTTPAdapter):
    """Pooled connections that send bodies in large blocks (http.client's 16 KiB costs a
    Python call per block). For HTTPS, sealift's TLS context (extra CAs, client certificates)
    is made on the first request: loading the system's CAs is a tenth of a second that a
    plain-HTTP registry never needs."""

    def __init__(self, connections: int, make_context: Callable[[], Any] | None = None) -> None:
        self._context: Any = None
        self._make_context = make_context
        self._context_lock = threading.Lock()
        self._connections = connections
        super().__init__(pool_connections=2, pool_maxsize=connections, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["blocksize"] = _SEND_BLOCK
        if self._context is not None:
            kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        if self._make_context is not None:
            with self._context_lock:
                if self._make_context is not None:
                    self._context = self._make_context()
                    self._make_context = None
                    self.init_poolmanager(2, self._connections)
        return super().send(request, *args, **kwargs)


class Transport:
    """HTTP to one registry (``host`` as in references: ``127.0.0.1:5000``, ``docker.io``)."""

    def __init__(self, host: str, options: TransportOptions | None = None) -> None:
        options = options or TransportOptions()
        self.host = host
        self.api_host = api_host(host)
        self.options = options
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        pool = max(options.connections, 1) + 2
        context = functools.partial(ssl_context, self.api_host, options.tls)
        self.session.mount("https://", _Adapter(pool, context))
        self.session.mount("http://", _Adapter(pool))
        # given on every request: a session-wide False loses to REQUESTS_CA_BUNDLE
        self._verify = not options.tls.insecure
        if options.tls.insecure:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        credentials = options.credentials or find_credentials(host)
        self.auth = Authenticator(host, credentials, searched_files, self._get_token)
        self._base: str | None = None
        self._base_lock = threading.Lock()

    # ------------------------------------------------------------------------------- base URL
    @property
    def base(self) -> str:
        """``https://host/`` or ``http://host/``, found by asking ``/v2/`` once."""
        with self._base_lock:
            if self._base is None:
                self._base = self._find_base()
            return self._base

    def _find_base(self) -> str:
        secure, plain = f"https://{self.api_host}/", f"http://{self.api_host}/"
        if is_loopback(self.api_host) and self._speaks_plain_http(plain):
            return plain  # a local registry is mostly plain: spare the TLS attempt
        try:
            self._ping(secure)
            return secure
        except requests.exceptions.SSLError as exc:
            if _is_certificate_problem(exc):
                raise self._certificate_error(exc) from exc
            if not allows_plain_http(self.api_host, self.options.tls):
                raise CertificateError(
                    f"registry {self.host} does not speak TLS; pass --insecure to use plain HTTP"
                ) from exc
        except requests.exceptions.ConnectionError as exc:
            if not allows_plain_http(self.api_host, self.options.tls):
                raise self._unreachable(exc) from exc
        try:
            self._ping(plain)
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc) from exc
        return plain

    def _speaks_plain_http(self, plain: str) -> bool:
        """Whether ``/v2/`` answers as a registry over plain HTTP (200 or 401): a TLS server
        answers 400 or drops the connection."""
        try:
            probe = self._attempt("GET", plain + "v2/", {}, None, None, timeout=_PROBE_TIMEOUT)
            with probe as response:
                return response.status_code in (200, 401)
        except requests.exceptions.RequestException:
            return False

    def _ping(self, base: str) -> None:
        """Any HTTP answer to ``/v2/`` will do (401 included): the scheme works."""
        self._attempt("GET", base + "v2/", {}, None, None).close()

    def url(self, path_or_url: str) -> str:
        return urljoin(self.base, path_or_url)

    # -------------------------------------------------------------------------------- requests
    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scopes: frozenset[str] = frozenset(),
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        stream: bool = False,
        params: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send a request, authenticating and retrying as needed; any status is returned.

        A body of bytes is sent again when needed; a streamed body only once.
        """
        url = self.url(path_or_url)
        resendable = body is None or isinstance(body, bytes)
        attempt = auth_rounds = 0
        token_retried = False
        while True:
            sent = {**(headers or {}), **self.auth.headers(scopes)}
            try:
                response = self._attempt(method, url, sent, body, params, stream=stream)
            except requests.exceptions.SSLError as exc:
                raise self._certificate_error(exc) from exc
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                if not resendable or attempt >= self.options.retries:
                    raise self._unreachable(exc) from exc
                attempt += 1
                time.sleep(self._backoff(attempt, None))
                continue
            if response.status_code == 401 and auth_rounds < _MAX_AUTH_ROUNDS:
                response.close()
                token_retried = self._reauthenticate(response, scopes, sent, token_retried)
                if not resendable:
                    raise RegistryError(f"registry {self.host} asked for a login mid-upload")
                auth_rounds += 1
                continue
            if (
                response.status_code in RETRY_STATUSES
                and resendable
                and attempt < self.options.retries
            ):
                response.close()
                attempt += 1
                time.sleep(self._backoff(attempt, response.headers.get("Retry-After")))
                continue
            return response

    def _reauthenticate(
        self,
        response: requests.Response,
        scopes: frozenset[str],
        sent: Mapping[str, str],
        token_retried: bool,
    ) -> bool:
        """Let the authenticator learn from a 401; whether a token has now been refused."""
        bearer = sent.get("Authorization", "").startswith("Bearer ")
        challenge = response.headers.get("WWW-Authenticate", "")
        self.auth.unauthorized(challenge, scopes, dict(sent), retried=bearer and token_retried)
        return token_retried or bearer

    def _attempt(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
        params: Mapping[str, str] | None,
        *,
        stream: bool = False,
        timeout: tuple[float, float] = _TIMEOUT,
    ) -> requests.Response:
        return self.session.request(
            method,
            url,
            headers=dict(headers),
            data=body,
            params=params,
            stream=stream,
            timeout=timeout,
            allow_redirects=True,
            verify=self._verify,
        )

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        asked = _parse_retry_after(retry_after)
        if asked is not None:
            return min(asked, MAX_RETRY_AFTER)
        base = self.options.backoff * (2 ** (attempt - 1))
        return float(base * (0.5 + random.random() / 2))

    def _get_token(
        self, realm: str, params: dict[str, Any], credentials: Credentials | None
    ) -> requests.Response:
        if not realm.startswith("https://") and not allows_plain_http(
            realm.partition("://")[2].partition("/")[0], self.options.tls
        ):
            raise CertificateError(
                f"registry {self.host} sends logins to {realm}, which is not HTTPS; "
                "pass --insecure to allow it"
            )
        try:
            if credentials is not None and credentials.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": credentials.identity_token,
                    "client_id": CLIENT_ID,
                    "service": params.get("service", ""),
                    "scope": " ".join(params.get("scope", [])),
                }
                return self.session.post(realm, data=form, timeout=_TIMEOUT, verify=self._verify)
            auth = (credentials.username, credentials.password) if credentials else None
            return self.session.get(
                realm, params=params, auth=auth, timeout=_TIMEOUT, verify=self._verify
            )
        except requests.exceptions.SSLError as exc:
            raise self._certificate_error(exc) from exc
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"token service {realm} of registry {self.host}: {exc}") from exc

    # ---------------------------------------------------------------------------------- errors
    def _certificate_error(self, exc: Exception) -> CertificateError:
        return CertificateError(
            f"TLS certificate of registry {self.host} is not trusted ({_ssl_reason(exc)}); "
            f"{hint(self.api_host)}"
        )

    def _unreachable(self, exc: Exception) -> RegistryError:
        return RegistryError(f"cannot reach registry {self.host}: {_connection_reason(exc)}")

    def close(self) -> None:
        self.session.close()


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _is_certificate_problem(exc: Exception) -> bool:
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "hostname" in text.lower()


def _ssl_reason(exc: Exception) -> str:
    text = re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc))
    found = re.search(r"certificate verify failed: ([^)\]]+)", text)
    if found:
        return found.group(1).strip()
    return text.splitlines()[0][:200] if text else "TLS handshake failed"


def _connection_reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "reset by peer"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200] if text else type(exc).__name__
