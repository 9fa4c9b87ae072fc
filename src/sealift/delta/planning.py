"""Which base to patch each missing layer against: pure, from what the destination holds.

For every layer of the target image the destination lacks (each distinct diff_id once, at its
first position), the plan names a base the destination holds, or none, and says why:

1. the layer at the same position of another image of the same repository (an older tag, or an
   older image under the same tag): a release usually rebuilds its top layers from the same
   Dockerfile, so that layer is the previous version of this one. Images that share the longest
   run of bottom layers with the target come first (the same lineage), then the newest.
2. else the held layer with the most paths in common with it (path sets from
   :mod:`sealift.delta.tarpaths`); ties go to the closer match (fewer paths in the union).
3. else none: the layer crosses whole.

A base whose size is known and too large for a patch's window (:func:`can_patch`) is skipped.
Whether the patch then pays is measured when it is made (``patch_budget``), not guessed here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from sealift.delta.patch import DEFAULT_SEGMENT_SIZE, can_patch
from sealift.digest import Digest
from sealift.progress import human_size


@dataclass(frozen=True)
class ImageLayers:
    """An image by name and its layers' diff_ids, bottom first."""

    repository: str
    tag: str
    layers: tuple[Digest, ...]
    created: str = ""
    """The config's ``created`` (RFC 3339, so it sorts as text): the newer wins a tie."""

    @property
    def name(self) -> str:
        return f"{self.repository}:{self.tag}"


class BaseReason(StrEnum):
    SAME_POSITION = "same-position"
    MOST_PATHS_IN_COMMON = "most-paths-in-common"
    NO_HELD_LAYER = "no-held-layer"
    NO_PATH_LISTING = "no-path-listing"
    NO_COMMON_PATH = "no-common-path"


@dataclass(frozen=True)
class LayerPlan:
    """The base chosen for one missing layer, or None, and why."""

    index: int
    diff_id: Digest
    base: Digest | None
    reason: BaseReason
    detail: str

    def describe(self) -> str:
        """One line for ``--dry-run``."""
        layer = f"layer {self.index} {self.diff_id.short}"
        if self.base is None:
            return f"{layer}: whole ({self.detail})"
        return f"{layer}: patch against {self.base.short} ({self.detail})"


@dataclass(frozen=True)
class Holdings:
    """What the destination holds: images by name, and every layer it can read as a base
    (those of its images and any others, e.g. in sealift's layer cache)."""

    images: Sequence[ImageLayers] = ()
    layers: Collection[Digest] = frozenset()
    paths: Mapping[Digest, frozenset[str]] = field(default_factory=dict)
    """Path sets of layers, where known: the target's and the held ones'."""
    sizes: Mapping[Digest, int] = field(default_factory=dict)
    """Uncompressed sizes of layers, where known."""

    def held(self) -> frozenset[Digest]:
        return frozenset(self.layers).union(*(image.layers for image in self.images))


def plan_bases(
    target: ImageLayers, holdings: Holdings, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> list[LayerPlan]:
    """A plan for each layer of ``target`` the destination lacks, in the image's order."""
    held = holdings.held()
    chooser = _Chooser(target, holdings, held, segment_size)
    return [chooser.plan(index, diff_id) for index, diff_id in _missing(target.layers, held)]


def _missing(layers: Sequence[Digest], held: frozenset[Digest]) -> Iterator[tuple[int, Digest]]:
    seen: set[Digest] = set()
    for index, diff_id in enumerate(layers):
        if diff_id not in held and diff_id not in seen:
            seen.add(diff_id)
            yield index, diff_id


class _Chooser:
    def __init__(
        self,
        target: ImageLayers,
        holdings: Holdings,
        held: frozenset[Digest],
        segment_size: int,
    ) -> None:
        self._target = target
        self._holdings = holdings
        self._held = held
        self._segment_size = segment_size
        self._relatives = sorted(
            (image for image in holdings.images if image.repository == target.repository),
            key=lambda image: (
                -_shared_bottom(image.layers, target.layers),
                _descending(image.created),
                image.tag,
                image.layers,
            ),
        )

    def plan(self, index: int, diff_id: Digest) -> LayerPlan:
        for image in self._relatives:
            if index < len(image.layers) and self._usable(image.layers[index], diff_id):
                base = image.layers[index]
                detail = f"layer {index} of {image.name}"
                return LayerPlan(index, diff_id, base, BaseReason.SAME_POSITION, detail)
        return self._by_paths(index, diff_id)

    def _by_paths(self, index: int, diff_id: Digest) -> LayerPlan:
        def whole(reason: BaseReason, detail: str) -> LayerPlan:
            return LayerPlan(index, diff_id, None, reason, detail)

        candidates = [base for base in self._held if self._usable(base, diff_id)]
        if not candidates:
            return whole(BaseReason.NO_HELD_LAYER, "the destination holds no usable layer")
        paths = self._holdings.paths.get(diff_id)
        if paths is None:
            return whole(BaseReason.NO_PATH_LISTING, "its paths are not known")
        best = _most_in_common(paths, candidates, self._holdings.paths)
        if best is None:
            return whole(BaseReason.NO_COMMON_PATH, "no held layer shares a path with it")
        base, common = best
        detail = f"{common} of {len(paths)} paths in common"
        return LayerPlan(index, diff_id, base, BaseReason.MOST_PATHS_IN_COMMON, detail)

    def _usable(self, base: Digest, diff_id: Digest) -> bool:
        if base == diff_id or base not in self._held:
            return False
        base_size = self._holdings.sizes.get(base)
        target_size = self._holdings.sizes.get(diff_id, self._segment_size)
        return base_size is None or can_patch(base_size, target_size, self._segment_size)


def _most_in_common(
    paths: frozenset[str], candidates: list[Digest], known: Mapping[Digest, frozenset[str]]
) -> tuple[Digest, int] | None:
    """The candidate sharing the most paths (then the smaller union, then the lower digest)."""
    scored = [
        (len(paths & base_paths), len(paths | base_paths), str(base), base)
        for base in candidates
        if (base_paths := known.get(base)) is not None
    ]
    sharing = [score for score in scored if score[0]]
    if not sharing:
        return None
    common, _, _, base = min(sharing, key=lambda score: (-score[0], score[1], score[2]))
    return base, common


def _shared_bottom(layers: Sequence[Digest], others: Sequence[Digest]) -> int:
    count = 0
    for mine, theirs in zip(layers, others, strict=False):
        if mine != theirs:
            break
        count += 1
    return count


def _descending(text: str) -> tuple[int, ...]:
    """A key that sorts ``text`` in reverse order (for use inside ascending sorts)."""
    return (*(-ord(character) for character in text), 1)


@dataclass
class LayerChoice:
    """What a transfer did (or, in a dry run, would do) with one layer the destination lacks:
    send it whole or as a patch against a base, for ``--dry-run`` and ``--json``."""

    diff_id: str
    layer_bytes: int
    """The layer's size as it would go whole (compressed)."""
    sent: str = "whole"
    """``patch`` or ``whole``."""
    base: str | None = None
    patch_bytes: int | None = None
    reason: str = ""
    """Why this base, or why no patch."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for ``--dry-run``."""
        layer = f"layer {Digest.parse(self.diff_id).short} ({human_size(self.layer_bytes)})"
        if self.patch_bytes is not None and self.base is not None:
            return (
                f"{layer}: patch of {human_size(self.patch_bytes)} against "
                f"{Digest.parse(self.base).short} ({self.reason})"
            )
        return f"{layer}: whole ({self.reason})"
