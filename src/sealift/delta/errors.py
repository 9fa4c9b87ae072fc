"""Why a patch was refused.

::

    InvalidArchiveError (sealift.errors)
    └── PatchError              a patch that cannot be used
        ├── BadPatchError       not a patch, an unknown version, corrupt or truncated data
        ├── WrongBaseError      the base offered is not the one the patch was made against
        └── RebuildMismatchError  the rebuilt layer does not match the patch's target
                                  (also a DigestMismatchError)

A receiver falls back to the whole layer on any of them; none leaves a result to trust.
"""

from __future__ import annotations

from sealift.errors import DigestMismatchError, InvalidArchiveError


class PatchError(InvalidArchiveError):
    """A patch that cannot be used to rebuild its layer."""


class BadPatchError(PatchError):
    """The patch itself is broken: not a patch, an unknown version, corrupt or truncated."""


class WrongBaseError(PatchError):
    """The base offered is not the layer the patch was made against."""


class RebuildMismatchError(PatchError, DigestMismatchError):
    """The rebuilt layer does not hash to the patch's target diff_id or has another size."""
