"""Binary patches in update bundles (issue 14, offline): a layer the site lacks crosses as a
patch against a layer it holds, when that pays.

This module is the bundle's side of the patch library (:mod:`sealift.delta`):

- :class:`PatchedLayer`: how ``sealift/update.json`` describes one patched layer (the target
  layer's blob digest, diff_id, size and media type, the base's diff_id, the patch's sha256 and
  size); the patch itself is stored as ``sealift/patches/<target diff_id hex>.patch``.
- :func:`plan_patches`: on the build box, the base for each layer the site lacks, chosen with
  :func:`~sealift.delta.plan_bases` over the inventory's tagged images.
- :class:`BundlePatcher`: makes each planned patch where the build box holds the base too, under
  :func:`~sealift.delta.patch_budget` of the layer's stored size.
- :class:`EngineBases`: a base's uncompressed tar read from an engine (one export of an image
  that holds it, at most once per image), on either side.
- :func:`check_patch` and :func:`rebuild_layer`: on the site, a patch checked against its
  recorded sha256 and size, and the layer rebuilt from it and its base, its diff_id verified.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from sealift import compression, media
from sealift.delta import (
    Holdings,
    ImageLayers,
    LayerChoice,
    LayerPlan,
    PatchError,
    make_patch_file,
    open_patched,
    patch_budget,
    plan_bases,
)
from sealift.digest import Digest, Hasher
from sealift.ends.archive import PATCH_DIR
from sealift.errors import (
    DigestMismatchError,
    InvalidArchiveError,
    NotFoundError,
    SealiftError,
)
from sealift.inventory import HeldImage, Inventory
from sealift.model import Descriptor, Entry, Layer
from sealift.progress import human_size
from sealift.reference import Reference

if TYPE_CHECKING:
    from sealift.cache import LayerCache
    from sealift.ends.engine import Engine

_CHUNK: Final = 1024 * 1024

BaseFinder = Callable[[Digest, Sequence[HeldImage]], Path | None]
"""Where this side reads a base's uncompressed tar: its path, or None when it does not hold it."""


def patch_member(diff_id: Digest) -> str:
    """The patch's name under ``sealift/`` in the bundle."""
    return f"{PATCH_DIR}/{diff_id.hex}.patch"


@dataclass(frozen=True)
class PatchedLayer:
    """A layer an update bundle carries as a patch instead of its blob."""

    digest: Digest
    """The layer's blob digest, as the bundle's manifest names it: the uncompressed tar's, so
    the same as the diff_id (a patch rebuilds the tar; see :func:`rebuilt_layers`)."""
    diff_id: Digest
    size: int
    """The blob's size, as the manifest gives it."""
    media_type: str
    base: Digest
    """The diff_id of the layer the site holds that the patch was made against."""
    patch_digest: Digest
    patch_size: int

    @property
    def member(self) -> str:
        return patch_member(self.diff_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": str(self.digest),
            "diff_id": str(self.diff_id),
            "size": self.size,
            "media_type": self.media_type,
            "base_diff_id": str(self.base),
            "patch": {"sha256": str(self.patch_digest), "size": self.patch_size},
        }

    @classmethod
    def from_json(cls, item: Any) -> PatchedLayer:
        """Raises KeyError, TypeError, ValueError or SealiftError on a damaged description."""
        patch_digest = Digest.parse(item["patch"]["sha256"])
        if patch_digest.algorithm != "sha256":
            raise ValueError(f"a patch is named by sha256, not {patch_digest.algorithm}")
        sizes = (item["size"], item["patch"]["size"])
        if not all(isinstance(size, int) and size >= 0 for size in sizes):
            raise ValueError(f"bad sizes {sizes}")
        return cls(
            digest=Digest.parse(item["digest"]),
            diff_id=Digest.parse(item["diff_id"]),
            size=sizes[0],
            media_type=str(item["media_type"]),
            base=Digest.parse(item["base_diff_id"]),
            patch_digest=patch_digest,
            patch_size=sizes[1],
        )


# ------------------------------------------------------------------------------ build box
def holdings_of(inventory: Inventory) -> Holdings:
    """The site's tagged images, for :func:`~sealift.delta.plan_bases`."""
    images = [
        _image_layers(tag, image.diff_ids) for image in inventory.images for tag in image.tags
    ]
    return Holdings(images=images)


def _image_layers(name: str, diff_ids: tuple[Digest, ...]) -> ImageLayers:
    reference = Reference.parse(name)
    return ImageLayers(reference.familiar_repository, reference.tag or "", diff_ids)


def plan_patches(entries: list[Entry], inventory: Inventory) -> list[tuple[Layer, LayerPlan]]:
    """Each layer of ``entries`` the site lacks that has a base it holds, with that plan
    (each layer once; images saved without a tag have no older version to patch against)."""
    holdings = holdings_of(inventory)
    planned: dict[Digest, tuple[Layer, LayerPlan]] = {}
    for entry in entries:
        for image in entry.without_attestations().images():
            layers = {layer.diff_id: layer for layer in image.layers}
            for tag in entry.tags:
                target = _image_layers(str(tag), tuple(layers))
                for plan in plan_bases(target, holdings):
                    if plan.base is not None and plan.diff_id not in planned:
                        planned[plan.diff_id] = (layers[plan.diff_id], plan)
    return list(planned.values())


def holders_of(base: Digest, inventory: Inventory) -> tuple[HeldImage, ...]:
    return tuple(image for image in inventory.images if base in image.diff_ids)


@dataclass(frozen=True)
class MadePatch:
    """A patch made for a bundle: its description and where it waits to be stored."""

    layer: PatchedLayer
    path: Path
    stand_in: Layer
    """The layer as the bundle's manifest names it: its uncompressed tar (see
    :func:`rebuilt_layers` for why)."""
    layer_bytes: int
    """The layer's size as it would otherwise have been stored (compressed)."""


class BundlePatcher:
    """Makes the patches of one update bundle into a temp directory, kept until :meth:`close`."""

    def __init__(self, inventory: Inventory, find_base: BaseFinder, level: int = 3) -> None:
        self._inventory = inventory
        self._find_base = find_base
        self._level = level
        self._stack = contextlib.ExitStack()
        self._dir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="sealift-")))
        self.reports: dict[Digest, LayerChoice] = {}
        """What :meth:`make` did with each layer that has a base (diff_id -> report)."""

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> BundlePatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def make(self, entries: list[Entry]) -> dict[Digest, MadePatch]:
        """A patch for each layer the site lacks that has a base on both sides and pays
        (blob digest -> patch). Bases come from the images being saved, else ``find_base``.
        :attr:`reports` then says, for each layer with a base, what became of it and why."""
        self.reports = {}
        made: dict[Digest, MadePatch] = {}
        saved = {layer.diff_id: layer for entry in entries for layer in _layers(entry)}
        for layer, plan in plan_patches(entries, self._inventory):
            assert plan.base is not None
            report = LayerChoice(str(layer.diff_id), layer.size, base=str(plan.base))
            patch = self._make_one(layer, plan.base, saved.get(plan.base), report)
            if patch is not None:
                made[layer.digest] = patch
                report.sent, report.patch_bytes = "patch", patch.layer.patch_size
                report.reason = plan.detail
            self.reports[layer.diff_id] = report
        return made

    def _make_one(
        self, layer: Layer, base: Digest, saved_base: Layer | None, report: LayerChoice
    ) -> MadePatch | None:
        """The patch, or None with ``report.reason`` saying why not."""
        budget = patch_budget(layer.size)
        if budget <= 0:
            report.reason = "too small for a patch to pay"
            return None
        if saved_base is not None:
            base_path: Path | None = spool_layer(saved_base, self._dir / f"base-{base.hex}")
        else:
            base_path = self._find_base(base, holders_of(base, self._inventory))
        if base_path is None:
            report.reason = "the base is not on this side"
            return None
        path = self._dir / f"{layer.diff_id.hex}.patch"
        with layer_content(layer) as content:
            info = make_patch_file(
                base_path,
                content,
                path,
                level=self._level,
                size_limit=budget,
                base_diff_id=base,
                spool_dir=self._dir,
            )
        if info is None:
            report.reason = (
                f"no patch within {human_size(budget)}: it must save half the layer and 64 KiB"
            )
            return None
        described = PatchedLayer(
            digest=layer.diff_id,
            diff_id=layer.diff_id,
            size=info.header.target_size,
            media_type=media.OCI_LAYER,
            base=base,
            patch_digest=_file_digest(path),
            patch_size=info.size,
        )
        return MadePatch(described, path, _uncompressed(described, layer), layer.size)


def _layers(entry: Entry) -> Iterator[Layer]:
    for image in entry.without_attestations().images():
        yield from image.layers


def spool_layer(layer: Layer, path: Path) -> Path:
    """The layer's uncompressed tar written to ``path``."""
    if not path.exists():
        with layer_content(layer) as content, path.open("wb") as out:
            shutil.copyfileobj(content, out, _CHUNK)
    return path


@contextlib.contextmanager
def layer_content(layer: Layer) -> Iterator[IO[bytes]]:
    """The layer's uncompressed tar, as a stream."""
    what = layer.label or f"layer {layer.diff_id}"
    with layer.open() as stored:
        yield compression.open_decompressed(stored, layer.codec, what)


def _file_digest(path: Path) -> Digest:
    hasher = Hasher()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            hasher.update(chunk)
    return hasher.digest()


# ------------------------------------------------------------------------------ either side
class EngineBases:
    """Bases read from sealift's layer cache (``cache``, when given), else from an engine: one
    export of an image that holds the base (by the inventory's ID, else its tags), at most once
    per image, spooled until :meth:`close`."""

    def __init__(self, engine: Engine, cache: LayerCache | None = None) -> None:
        self._engine = engine
        self._cache = cache
        self._stack = contextlib.ExitStack()
        self._dir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="sealift-")))
        self._exports: dict[str, dict[Digest, Layer]] = {}
        self._spools: dict[Digest, Path | None] = {}

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> EngineBases:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __call__(self, base: Digest, holders: Sequence[HeldImage]) -> Path | None:
        if base not in self._spools:
            found = self._cached(base)
            if found is None:
                layer = self._exported(base, holders)
                found = None if layer is None else self._spool(layer)
            self._spools[base] = found
        return self._spools[base]

    def _cached(self, base: Digest) -> Path | None:
        path = self._dir / f"base-{base.hex}"
        if self._cache is None or not self._cache.write_uncompressed(base, path):
            return None
        return path

    def _exported(self, base: Digest, holders: Sequence[HeldImage]) -> Layer | None:
        for holder in holders:
            for ref in (holder.id, *holder.tags):
                image_id = self._local_image_with(ref, base)
                if image_id is not None:
                    return self._export(image_id).get(base)
        return None

    def _local_image_with(self, ref: str, base: Digest) -> str | None:
        try:
            info = self._engine.inspect(ref)
        except NotFoundError:
            return None
        layers = (info.get("RootFS") or {}).get("Layers") or ()
        return str(info["Id"]) if str(base) in layers else None

    def _export(self, image_id: str) -> dict[Digest, Layer]:
        if image_id not in self._exports:
            from sealift.ends.engine import EngineSource

            try:
                source = EngineSource(self._engine, [image_id])
                self._stack.callback(source.close)
                entries = source.entries()
            except SealiftError:
                entries = []
            self._exports[image_id] = {
                layer.diff_id: layer
                for entry in entries
                for image in entry.images()
                for layer in image.layers
            }
        return self._exports[image_id]

    def _spool(self, layer: Layer) -> Path:
        return spool_layer(layer, self._dir / f"base-{layer.diff_id.hex}")


# ------------------------------------------------------------------------------ site
def check_patch(patch: IO[bytes], patched: PatchedLayer, what: str) -> None:
    """Refuse a patch whose bytes are not the ones ``update.json`` records."""
    hasher = Hasher()
    while chunk := patch.read(_CHUNK):
        hasher.update(chunk)
    if hasher.size != patched.patch_size or hasher.digest() != patched.patch_digest:
        raise DigestMismatchError(
            f"{what}: the patch of layer {patched.diff_id} is damaged "
            f"(sha256 {hasher.digest()}, {hasher.size} bytes; expected {patched.patch_digest}, "
            f"{patched.patch_size} bytes)"
        )


def rebuild_layer(
    patch: IO[bytes], base: Path | None, patched: PatchedLayer, out: IO[bytes], what: str
) -> None:
    """Write the layer's uncompressed tar, rebuilt from ``patch`` and ``base``, to ``out``,
    its diff_id verified; ``patch`` must be checked first (:func:`check_patch`).

    A missing or wrong base, or a patch that does not rebuild the layer, raises one error that
    names the layer; what was written to ``out`` is then garbage.
    """
    if base is None:
        raise NotFoundError(
            f"{what}: layer {patched.diff_id} is a patch against {patched.base}, "
            "which the engine does not hold: load a bundle made from a new inventory"
        )
    try:
        with open_patched(patch, base, expected_target=patched.diff_id) as rebuilt:
            shutil.copyfileobj(rebuilt, out, _CHUNK)
    except PatchError as exc:
        raise type(exc)(f"{what}: cannot rebuild layer {patched.diff_id}: {exc}") from exc


PatchOpener = Callable[[str], IO[bytes] | None]
"""A patch of the bundle by its member name (:attr:`PatchedLayer.member`) as a stream, or None."""


def rebuilt_layers(
    patched: Mapping[Digest, PatchedLayer],
    open_patch: PatchOpener,
    engine: Engine,
    spool: Path,
    what: str,
) -> dict[Digest, Layer]:
    """Every patched layer rebuilt into ``spool`` from its patch and the base the engine
    holds (blob digest -> the layer, uncompressed and verified); the first that cannot be
    rebuilt raises, naming it, before anything is loaded. Patches are streamed from the
    bundle (read twice: checked, then applied), never held whole in memory.

    A patch rebuilds a layer's uncompressed tar, so a patch bundle's manifest names the
    uncompressed blob of each patched layer (digest = diff_id) rather than the compressed one:
    recompressing on the site could reproduce a compressed digest only with the very same
    compressor build and level, which nothing guarantees across sealift and zlib versions,
    while the uncompressed tar is exact by construction. The image's ID (its config's digest)
    does not depend on it; its manifest digest is the bundle's. On the containerd image store,
    where the engine shows the manifest digest as the image's ID, that ID is therefore the
    bundle's, not the build box's (the config digest and every diff_id are the build box's).
    """
    from sealift.inventory import of_engine

    held = of_engine(engine).images
    layers: dict[Digest, Layer] = {}
    with EngineBases(engine) as bases:
        for digest, layer in patched.items():
            with opened_patch(open_patch, layer, what) as patch:
                check_patch(patch, layer, what)
            base = bases(layer.base, [image for image in held if layer.base in image.diff_ids])
            path = spool / f"rebuilt-{layer.diff_id.hex}"
            with opened_patch(open_patch, layer, what) as patch, path.open("wb") as out:
                rebuild_layer(patch, base, layer, out, what)
            layers[digest] = _rebuilt(layer, path, what)
    return layers


@contextlib.contextmanager
def opened_patch(open_patch: PatchOpener, layer: PatchedLayer, what: str) -> Iterator[IO[bytes]]:
    """The patch of ``layer``, open; an error naming it when the bundle lacks it."""
    patch = open_patch(layer.member)
    if patch is None:
        raise InvalidArchiveError(
            f"{what}: the patch of layer {layer.diff_id} (sealift/{layer.member}) is missing"
        )
    with patch:
        yield patch


def _rebuilt(layer: PatchedLayer, path: Path, what: str) -> Layer:
    def open_rebuilt() -> IO[bytes]:
        return path.open("rb")

    label = f"{what}: layer {layer.diff_id} (rebuilt from its patch)"
    descriptor = Descriptor(layer.media_type, layer.digest, layer.size)
    return Layer(descriptor, layer.diff_id, compression.NONE, open_rebuilt, True, label=label)


def _uncompressed(layer: PatchedLayer, original: Layer) -> Layer:
    def open_uncompressed() -> IO[bytes]:
        return compression.open_decompressed(original.open(), original.codec, original.label)

    descriptor = Descriptor(layer.media_type, layer.digest, layer.size)
    return Layer(
        descriptor, layer.diff_id, compression.NONE, open_uncompressed, label=original.label
    )
