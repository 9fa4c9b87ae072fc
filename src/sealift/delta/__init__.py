"""Binary deltas between versions of a layer (issue 14): patches and the choice of their bases.

- :mod:`sealift.delta.patch`: make a patch of a layer's uncompressed tar against an older
  layer's, and rebuild (verified) the layer from the patch and that base.
- :mod:`sealift.delta.planning`: for each layer a destination lacks, the base it holds to patch
  against, or none, and why.
- :mod:`sealift.delta.tarpaths`: a layer's path set from its tar headers, for that choice.
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
    make_patch_file,
    open_patched,
    patch_budget,
    read_patch_header,
)
from sealift.delta.planning import (
    BaseReason,
    Holdings,
    ImageLayers,
    LayerChoice,
    LayerPlan,
    plan_bases,
)
from sealift.delta.tarpaths import TarPaths, list_tar_paths

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_SEGMENT_SIZE",
    "BadPatchError",
    "BaseReason",
    "Holdings",
    "ImageLayers",
    "LayerChoice",
    "LayerInput",
    "LayerPlan",
    "PatchError",
    "PatchHeader",
    "PatchInfo",
    "PatchedReader",
    "RebuildMismatchError",
    "TarPaths",
    "WrongBaseError",
    "apply_patch",
    "can_patch",
    "is_worth_it",
    "list_tar_paths",
    "make_patch",
    "make_patch_file",
    "open_patched",
    "patch_budget",
    "plan_bases",
    "read_patch_header",
]
