"""Errors raised by sealift.

Every error the library raises derives from :class:`SealiftError`, so a caller (the CLI among them)
can catch one type. The hierarchy::

    SealiftError
    ├── UsageError            the request is impossible (bad reference, unknown option)
    ├── NotFoundError         an image, tag or platform the caller named is not in the source
    ├── InvalidArchiveError   input that is broken or hostile: bad tar, bad JSON, unsafe paths
    │   ├── DigestMismatchError  content does not hash to the digest that names it
    │   └── LimitExceededError   a size or expansion cap was hit (decompression bombs)
    ├── EngineError           the Docker engine refused, failed or could not be reached
    └── TransportError        an SSH or other transport failed

Lower-level exceptions (OSError, tarfile.TarError, json errors, docker SDK errors) are translated
into these at the boundary where they happen, with ``raise ... from exc``.
"""

from __future__ import annotations


class SealiftError(Exception):
    """Root of every error sealift raises on purpose."""


class UsageError(SealiftError):
    """The request itself is wrong: a malformed reference, an unknown platform, a bad option."""


class NotFoundError(SealiftError):
    """Something the caller named (image, tag, platform) is not where they said it is."""


class InvalidArchiveError(SealiftError):
    """Input that cannot be trusted or cannot be read as an image archive."""


class DigestMismatchError(InvalidArchiveError):
    """Content does not match the digest (or size) that names it."""


class LimitExceededError(InvalidArchiveError):
    """A safety cap was exceeded: a member too large, a decompression ratio too high."""


class EngineError(SealiftError):
    """The container engine could not be reached, or refused or failed a request."""


class TransportError(SealiftError):
    """A transport (SSH, a pipe to a remote process) failed."""
