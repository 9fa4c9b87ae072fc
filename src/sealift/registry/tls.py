"""Which certificates a registry connection trusts, and when plain HTTP is allowed.

Trusted: the system's CAs, every ``*.crt`` in docker's (and containers') per-registry directory
``/etc/docker/certs.d/HOST:PORT/`` and the CA file the user names (``--ca-cert``). A client
certificate there (``*.cert`` with its ``*.key``) is presented, as docker does.

Plain HTTP is used only for a loopback registry or when ``insecure`` is asked; ``insecure``
also stops checking certificates (docker's "insecure registry"). A loopback registry that does
speak TLS still has its certificate checked.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from sealift.registry.errors import CertificateError
from sealift.registry.names import is_loopback

CERTS_DIRS = (Path("/etc/docker/certs.d"), Path("/etc/containers/certs.d"))


@dataclass(frozen=True)
class TlsOptions:
    ca_file: Path | None = None
    insecure: bool = False
    certs_dirs: tuple[Path, ...] = CERTS_DIRS


def allows_plain_http(host: str, options: TlsOptions) -> bool:
    return options.insecure or is_loopback(host)


def ssl_context(host: str, options: TlsOptions) -> ssl.SSLContext:
    """The TLS context for ``host``: system CAs plus the certs.d and explicit CAs."""
    context = ssl.create_default_context()
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    for ca_file in _extra_cas(host, options):
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(f"cannot use CA certificate {ca_file}: {exc}") from exc
    for cert, key in _client_certificates(host, options):
        try:
            context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(f"cannot use client certificate {cert}: {exc}") from exc
    return context


def _host_dirs(host: str, options: TlsOptions) -> list[Path]:
    return [root / host for root in options.certs_dirs if (root / host).is_dir()]


def _extra_cas(host: str, options: TlsOptions) -> list[Path]:
    found = [
        path for directory in _host_dirs(host, options) for path in sorted(directory.glob("*.crt"))
    ]
    if options.ca_file is not None:
        if not options.ca_file.is_file():
            raise CertificateError(f"CA certificate file {options.ca_file} does not exist")
        found.append(options.ca_file)
    return found


def _client_certificates(host: str, options: TlsOptions) -> list[tuple[Path, Path]]:
    pairs = []
    for directory in _host_dirs(host, options):
        for cert in sorted(directory.glob("*.cert")):
            key = cert.with_suffix(".key")
            if not key.is_file():
                raise CertificateError(f"client certificate {cert} has no key {key.name} beside it")
            pairs.append((cert, key))
    return pairs


def hint(host: str) -> str:
    """How a user makes sealift trust a registry's certificate."""
    return f"pass --ca-cert FILE, or put the CA in /etc/docker/certs.d/{host}/ca.crt"
