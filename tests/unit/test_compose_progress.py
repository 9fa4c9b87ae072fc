"""Progress totals for ``compose save``: each layer counted once, in the save stream's unit."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

from sealift.compose.commands import unique_layer_bytes
from sealift.ends.engine import Engine

History = list[dict[str, Any]]


class FakeEngine:
    """An engine that knows each image's layers, history (newest first) and Size."""

    def __init__(self, images: dict[str, tuple[list[str], History, int]]) -> None:
        self._images = images
        self.api = SimpleNamespace(history=lambda image_id: self._images[image_id][1])

    def inspect(self, ref: str) -> dict[str, Any]:
        layers, _, size = self._images[ref]
        return {"Id": ref, "RootFS": {"Layers": layers}, "Size": size}

    def call(self, method: Callable[..., Any], *args: Any) -> Any:
        return method(*args)


def steps(*sizes: int) -> History:
    """A history, given oldest first as a Dockerfile reads."""
    return [{"Size": size} for size in reversed(sizes)]


BASE = (["l1", "l2"], steps(1000, 0, 10, 0), 1010)
APP1 = (["l1", "l2", "a1"], steps(1000, 0, 10, 0, 5, 0), 1015)
APP2 = (["l1", "l2", "a2"], steps(1000, 0, 10, 0, 7, 0), 1017)


def as_engine(images: dict[str, tuple[list[str], History, int]]) -> Engine:
    return cast(Engine, FakeEngine(images))


def test_a_base_shared_by_services_is_counted_once() -> None:
    engine = as_engine({"base": BASE, "app1": APP1, "app2": APP2})
    assert unique_layer_bytes(engine, ["base", "app1", "app2", "app1"]) == 1000 + 10 + 5 + 7


def test_sizes_are_scaled_to_the_images_size_when_the_history_counts_unpacked_bytes() -> None:
    # the containerd store: history in unpacked bytes, Size in compressed blobs
    engine = as_engine({"app": (["l1", "a"], steps(3000, 1000), 400)})
    assert unique_layer_bytes(engine, ["app"]) == 400


def test_a_history_that_does_not_match_the_layers_gives_no_total() -> None:
    engine = as_engine({"odd": (["l1", "empty"], steps(1000, 0), 1000)})
    assert unique_layer_bytes(engine, ["odd"]) is None
