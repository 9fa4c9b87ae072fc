"""What can go wrong talking to a registry, one class per thing a user must do differently.

All derive from :class:`RegistryError` (a :class:`sealift.errors.SealiftError`); messages are
one line naming the registry. ``ManifestUnknownError`` is also a ``NotFoundError``.
"""

from __future__ import annotations

from sealift.errors import NotFoundError, SealiftError


class RegistryError(SealiftError):
    """A registry could not be reached, or refused or failed a request."""


class NoCredentialsError(RegistryError):
    """The registry wants a login and none is configured for it."""


class BadCredentialsError(RegistryError):
    """The registry (or its token service) refused the configured login."""


class AccessDeniedError(RegistryError):
    """Logged in (or anonymous), but not allowed to do this to this repository."""


class CertificateError(RegistryError):
    """The registry's TLS certificate is not trusted, or plain HTTP was refused."""


class ManifestUnknownError(RegistryError, NotFoundError):
    """No manifest under that tag or digest."""


class MediaTypeRefusedError(RegistryError):
    """The registry does not accept a media type (zstd layers on an old registry, say)."""


class UploadError(RegistryError):
    """A blob upload failed in a way a retry in a new session did not fix."""
