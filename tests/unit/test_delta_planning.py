"""Choosing bases for missing layers: properties over random holdings, and the usual update."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from sealift.delta import BaseReason, Holdings, ImageLayers, LayerPlan, can_patch, plan_bases
from sealift.delta.patch import DEFAULT_SEGMENT_SIZE
from sealift.digest import Digest, sha256_of

LAYERS = [sha256_of(f"layer {n}".encode()) for n in range(10)]
PATHS = [f"usr/lib/{n}" for n in range(6)]
TOO_LARGE = 1 << 31

layer = st.sampled_from(LAYERS)
images = st.builds(
    ImageLayers,
    repository=st.sampled_from(["app", "other"]),
    tag=st.sampled_from(["1.0", "1.1", "latest"]),
    layers=st.lists(layer, max_size=5).map(tuple),
    created=st.sampled_from(["", "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"]),
)
holdings = st.builds(
    Holdings,
    images=st.lists(images, max_size=4),
    layers=st.frozensets(layer, max_size=4),
    paths=st.dictionaries(layer, st.frozensets(st.sampled_from(PATHS))),
    sizes=st.dictionaries(layer, st.sampled_from([1000, TOO_LARGE])),
)
targets = st.builds(
    ImageLayers,
    repository=st.just("app"),
    tag=st.just("2.0"),
    layers=st.lists(layer, min_size=1, max_size=5).map(tuple),
)


def usable(base: Digest, plan: LayerPlan, held: Holdings) -> bool:
    size = held.sizes.get(base)
    target_size = held.sizes.get(plan.diff_id, DEFAULT_SEGMENT_SIZE)
    fits = size is None or can_patch(size, target_size)
    return base != plan.diff_id and base in held.held() and fits


def overlap(base: Digest, plan: LayerPlan, held: Holdings) -> int:
    return len(held.paths.get(base, frozenset()) & held.paths.get(plan.diff_id, frozenset()))


def same_position_bases(plan: LayerPlan, target: ImageLayers, held: Holdings) -> list[Digest]:
    return [
        image.layers[plan.index]
        for image in held.images
        if image.repository == target.repository
        and plan.index < len(image.layers)
        and usable(image.layers[plan.index], plan, held)
    ]


@settings(max_examples=100)
@given(target=targets, held=holdings)
def test_every_missing_layer_is_planned_once_in_order(target: ImageLayers, held: Holdings) -> None:
    plans = plan_bases(target, held)
    missing = [d for d in dict.fromkeys(target.layers) if d not in held.held()]
    assert [plan.diff_id for plan in plans] == missing
    assert all(target.layers.index(plan.diff_id) == plan.index for plan in plans)


@settings(max_examples=100)
@given(target=targets, held=holdings)
def test_a_base_is_a_held_layer_that_fits_a_patch_window(
    target: ImageLayers, held: Holdings
) -> None:
    for plan in plan_bases(target, held):
        assert (plan.base is None) == (plan.reason.startswith("no-"))
        if plan.base is not None:
            assert usable(plan.base, plan, held)


@settings(max_examples=100)
@given(target=targets, held=holdings)
def test_the_same_position_in_another_image_of_the_repository_comes_first(
    target: ImageLayers, held: Holdings
) -> None:
    for plan in plan_bases(target, held):
        candidates = same_position_bases(plan, target, held)
        assert (plan.reason == BaseReason.SAME_POSITION) == bool(candidates)
        if candidates:
            assert plan.base in candidates


@settings(max_examples=100)
@given(target=targets, held=holdings)
def test_otherwise_the_base_shares_the_most_paths(target: ImageLayers, held: Holdings) -> None:
    for plan in plan_bases(target, held):
        if plan.reason == BaseReason.SAME_POSITION:
            continue
        usable_known = [b for b in held.held() if usable(b, plan, held) and b in held.paths]
        best = max((overlap(b, plan, held) for b in usable_known), default=0)
        if plan.diff_id not in held.paths:
            best = 0
        if plan.base is None:
            assert best == 0
        else:
            assert plan.reason == BaseReason.MOST_PATHS_IN_COMMON
            assert overlap(plan.base, plan, held) == best > 0


@settings(max_examples=100)
@given(target=targets, held=holdings, data=st.data())
def test_the_plan_does_not_depend_on_the_order_of_what_is_held(
    target: ImageLayers, held: Holdings, data: st.DataObject
) -> None:
    shuffled = replace(
        held,
        images=data.draw(st.permutations(list(held.images))),
        layers=data.draw(st.permutations(sorted(held.layers))),
    )
    assert plan_bases(target, shuffled) == plan_bases(target, held)


def test_an_update_patches_its_changed_top_layer_against_the_previous_release() -> None:
    base, lib, old_top, new_top, unrelated = LAYERS[:5]
    previous = ImageLayers("myapp", "1.3", (base, lib, old_top), "2026-01-01T00:00:00Z")
    older = ImageLayers("myapp", "1.2", (base, LAYERS[6], LAYERS[7]), "2025-01-01T00:00:00Z")
    held = Holdings(images=[older, previous, ImageLayers("other", "1", (unrelated,))])
    target = ImageLayers("myapp", "1.4", (base, lib, new_top))
    [plan] = plan_bases(target, held)
    assert (plan.diff_id, plan.base, plan.reason) == (new_top, old_top, BaseReason.SAME_POSITION)
    assert plan.describe() == (
        f"layer 2 {new_top.short}: patch against {old_top.short} (layer 2 of myapp:1.3)"
    )


def test_a_new_image_patches_against_the_layer_sharing_most_paths() -> None:
    target_layer, close, far = LAYERS[:3]
    held = Holdings(
        layers={close, far},
        paths={
            target_layer: frozenset({"app/main.py", "app/util.py", "etc/conf"}),
            close: frozenset({"app/main.py", "app/util.py"}),
            far: frozenset({"etc/conf", "var/log"}),
        },
    )
    [plan] = plan_bases(ImageLayers("new", "1", (target_layer,)), held)
    assert (plan.base, plan.detail) == (close, "2 of 3 paths in common")


def test_a_layer_nothing_resembles_crosses_whole() -> None:
    target_layer, held_layer = LAYERS[:2]
    held = Holdings(
        layers={held_layer},
        paths={target_layer: frozenset({"a"}), held_layer: frozenset({"b"})},
    )
    [plan] = plan_bases(ImageLayers("new", "1", (target_layer,)), held)
    assert plan.base is None
    assert plan.describe().endswith("whole (no held layer shares a path with it)")
