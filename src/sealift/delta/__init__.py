"""Binary deltas between versions of a layer (issue 14): patches and the choice of their bases.

- :mod:`sealift.delta.patch`: make a patch of a layer's uncompressed tar against an older
  layer's, and rebuild (verified) the layer from the patch and that base.
"""

from sealift.delta.errors import BadPatchError, PatchError, RebuildMismatchError, WrongBaseError
from sealift.delta.patch import (
    DEFAULT_LEVEL,
    DEFAULT_SEGMENT_SIZE,
    LayerInput,
    PatchedReader,
    PatchHeader,
    PatchInfo,
    apply_patch,
    can_patch,
    is_worth_it,
    make_patch,
    open_patched,
    patch_budget,
    read_patch_header,
)

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_SEGMENT_SIZE",
    "BadPatchError",
    "LayerInput",
    "PatchError",
    "PatchHeader",
    "PatchInfo",
    "PatchedReader",
    "RebuildMismatchError",
    "WrongBaseError",
    "apply_patch",
    "can_patch",
    "is_worth_it",
    "make_patch",
    "open_patched",
    "patch_budget",
    "read_patch_header",
]
