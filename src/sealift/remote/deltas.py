"""Binary deltas over the push protocol (version 2): layers cross as patches against a base the
receiver holds, when the patch is clearly smaller than the layer.

Sending side (:class:`PatchMaker`, shared by every host of one push): the receiver's ``need``
lists the images it holds of the offered repositories (:class:`~sealift.remote.protocol.HeldImage`);
:func:`~sealift.delta.plan_bases` picks a base for each layer it lacks; the base's bytes come from
the images being sent, else from sealift's layer cache (the layer compressed by an earlier save,
decompressed and checked against its diff_id), else from the local engine (``docker save`` of
the held image, at most once per image, and only when the layer is large enough for a patch to
pay); the patch is made
with the budget of :func:`~sealift.delta.patch_budget` against the layer's size on the wire, so a
patch that would not save half the layer is abandoned as soon as it grows past that.

Receiving side (:class:`ReceiverBases`, :func:`receive_patch`): the base is read from staging, else
from the engine (``docker save`` of an image holding it, at most once per image); the layer is
rebuilt with :func:`~sealift.delta.open_patched` into staging, where its diff_id is checked as for
a layer received whole. A base that cannot be had or does not match answers ``patched`` with
``ok: false`` and the sender sends the whole layer; a corrupt patch fails the push.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from sealift import compression
from sealift.cache import LayerCache
from sealift.delta import (
    BadPatchError,
    BaseReason,
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
from sealift.digest import Digest
from sealift.ends.engine import Engine, EngineSource
from sealift.errors import DigestMismatchError, InvalidArchiveError, NotFoundError, SealiftError
from sealift.model import Entry, Layer
from sealift.progress import human_size
from sealift.reference import Reference
from sealift.remote.protocol import (
    MAX_FRAME,
    Channel,
    HeldImage,
    LayerStream,
    Need,
    OfferedImage,
    ProtocolError,
)
from sealift.remote.recompress import BlobRecipe, library_of, recipe_for, write_blob
from sealift.remote.sender import (
    WIRE_CHUNK,
    compressed_frames,
    layers_by_diff_id,
    send_needed_layer,
    uncompressed_content,
)
from sealift.remote.staging import Staging

MAX_HELD = 100
"""At most this many held images are listed in ``need`` (the newest first)."""
_CHUNK = 1024 * 1024
EXACT_BLOB_REASON = (
    "crosses as its compressed blob, so the host keeps the manifest digest "
    "(sealift's compressors do not rewrite this blob)"
)
"""Why a layer is not patched for a receiver that keeps blobs (protocol 3): a patch rebuilds
the layer's content, and no recipe of :mod:`sealift.remote.recompress` turns that content into
the very blob (one another tool compressed, such as Docker's own gzip)."""


# ------------------------------------------------------------------------------ the report
@dataclass
class LayerDelta(LayerChoice):
    """What became of one layer the receiver lacked, for ``--dry-run`` and ``--json``.
    ``layer_bytes`` is its size as it would cross whole (compressed with the wire codec) when a
    base was chosen, else its size as the sender holds it (not compressed again just to say);
    ``sent`` is what was sent (in a dry run, what would be)."""

    base_image: str | None = None
    fallback: str | None = None
    """Why the receiver refused the patch and took the whole layer instead."""


@dataclass(frozen=True)
class PlannedPatch:
    """A patch made for one layer, in a file of the :class:`PatchMaker`'s spool."""

    diff_id: Digest
    base: Digest
    path: Path
    size: int


@dataclass
class DeltaPlan:
    patches: dict[Digest, PlannedPatch] = field(default_factory=dict)
    reports: dict[Digest, LayerDelta] = field(default_factory=dict)
    candidates: dict[Digest, _Candidate] = field(default_factory=dict)
    """Layers with a base and a budget, whose patch is yet to be made (:meth:`PatchMaker.make`)."""
    recipes: dict[Digest, BlobRecipe] = field(default_factory=dict)
    """For a receiver that keeps blobs: how it recompresses a patched layer into its blob."""

    @property
    def bases(self) -> list[Digest]:
        """The bases the patches will be made against, in order, each once."""
        return list(dict.fromkeys(candidate.base for candidate in self.candidates.values()))


@dataclass(frozen=True)
class _Candidate:
    layer: Layer
    base: Digest
    holders: tuple[HeldImage, ...]
    budget: int


# ---------------------------------------------------------------------------- sending side
class PatchMaker:
    """Plans and makes the patches of one push, for every host (thread-safe).

    ``engine`` (the local engine, if the images come from one) is where bases not among the
    images sent nor in ``cache`` are exported from. Patches, bases and exports are kept until
    :meth:`close`.
    """

    def __init__(
        self, engine: Engine | None, codec: str, level: int | None, cache: LayerCache | None = None
    ) -> None:
        self._engine = engine
        self._codec = codec
        self._level = level
        self._cache = cache
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        if cache is not None:
            self._stack.callback(cache.close)  # its pins: the maker owns the cache
        self._dir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="sealift-")))
        self._exports: dict[str, dict[Digest, Layer]] = {}
        self._bases: dict[Digest, Path | None] = {}
        self._patches: dict[tuple[Digest, Digest], PlannedPatch | None] = {}
        self._wire_sizes: dict[Digest, int] = {}
        self._recipes: dict[Digest, BlobRecipe | None] = {}

    def close(self) -> None:
        self._stack.close()

    def plan(self, entries: list[Entry], offer: Sequence[OfferedImage], need: Need) -> DeltaPlan:
        """:meth:`choose` then :meth:`make`."""
        plan = self.choose(entries, offer, need)
        self.make(plan, entries)
        return plan

    def choose(self, entries: list[Entry], offer: Sequence[OfferedImage], need: Need) -> DeltaPlan:
        """A report for each needed layer, and the base and budget of each that may be patched
        (no base is exported yet: the receiver can be told which bases to get ready)."""
        with self._lock:
            plan = DeltaPlan()
            layers = layers_by_diff_id(entries)
            held = need.held or ()
            for layer_plan in _layer_plans(offer, need, held):
                layer = layers.get(layer_plan.diff_id)
                if layer is None or layer_plan.diff_id in plan.reports:
                    continue
                blob = need.blobs and layer.digest != layer.diff_id
                self._consider(plan, layer, layer_plan, held, blob=blob)
                if blob:
                    self._need_recipe(plan, layer)
            return plan

    def _need_recipe(self, plan: DeltaPlan, layer: Layer) -> None:
        """A compressed blob is patched only when its recipe is known (else it crosses whole)."""
        if layer.diff_id not in plan.candidates:
            return
        recipe = self._recipe(layer)
        if recipe is None:
            del plan.candidates[layer.diff_id]
            plan.reports[layer.diff_id].reason = EXACT_BLOB_REASON
        else:
            plan.recipes[layer.diff_id] = recipe

    def _recipe(self, layer: Layer) -> BlobRecipe | None:
        """sealift's default level for the blob's codec, and the push's own level."""
        if layer.digest not in self._recipes:
            levels = [compression.DEFAULT_LEVEL.get(layer.codec, 0)]
            if self._level is not None and self._codec == layer.codec:
                levels.append(self._level)
            self._recipes[layer.digest] = recipe_for(layer, levels)
        return self._recipes[layer.digest]

    def _consider(
        self,
        plan: DeltaPlan,
        layer: Layer,
        layer_plan: LayerPlan,
        held: Sequence[HeldImage],
        *,
        blob: bool = False,
    ) -> None:
        """``blob``: the layer would cross as its stored blob (its size on the wire)."""
        report = LayerDelta(str(layer.diff_id), layer.size, reason=layer_plan.detail)
        plan.reports[layer.diff_id] = report
        base = layer_plan.base
        if base is None:
            return
        wire_size = report.layer_bytes = layer.size if blob else self._wire_size(layer)
        report.base = str(base)
        holders = tuple(image for image in held if base in image.diff_ids)
        report.base_image = _name_of(holders)
        budget = patch_budget(wire_size)
        if budget <= 0:
            report.reason = f"{human_size(wire_size)} is too small for a patch to pay"
            return
        plan.candidates[layer.diff_id] = _Candidate(layer, base, holders, budget)

    def make(self, plan: DeltaPlan, entries: list[Entry]) -> None:
        """Make the patch of each candidate, where this side holds its base and it pays."""
        with self._lock:
            sent = layers_by_diff_id(entries)
            for diff_id, candidate in plan.candidates.items():
                report = plan.reports[diff_id]
                base_path = self._base(candidate.base, candidate.holders, sent)
                if base_path is None:
                    holder = report.base_image or candidate.base.short
                    report.reason = f"this side does not hold the base ({holder})"
                    continue
                planned = self._patch(candidate.layer, candidate.base, base_path, candidate.budget)
                if planned is None:
                    report.reason = f"a patch would not be under {human_size(candidate.budget)}"
                    continue
                report.patch_bytes = planned.size
                report.sent = "patch"
                plan.patches[diff_id] = planned

    def _wire_size(self, layer: Layer) -> int:
        if layer.diff_id not in self._wire_sizes:
            with uncompressed_content(layer, 0) as content:
                size = sum(
                    len(frame) for frame in compressed_frames(content, self._codec, self._level)
                )
            self._wire_sizes[layer.diff_id] = size
        return self._wire_sizes[layer.diff_id]

    def _base(
        self, base: Digest, holders: Sequence[HeldImage], sent: dict[Digest, Layer]
    ) -> Path | None:
        """The base's uncompressed tar in the spool: from the images sent, else the layer
        cache, else exported."""
        if base not in self._bases:
            try:
                layer = sent.get(base)
                cached = self._cached_base(base) if layer is None else None
                if cached is None and layer is None:
                    layer = self._exported_layer(base, holders)
                self._bases[base] = cached or (None if layer is None else self._spool(layer))
            except SealiftError:  # the engine failed to export it: send the layer whole
                self._bases[base] = None
        return self._bases[base]

    def _cached_base(self, base: Digest) -> Path | None:
        """The base decompressed from the layer cache, checked against its diff_id; None when
        the cache lacks it (or holds something else under its name)."""
        path = self._dir / f"base-{base.hex}"
        if self._cache is None or not self._cache.write_uncompressed(base, path):
            return None
        return path

    def _exported_layer(self, base: Digest, holders: Sequence[HeldImage]) -> Layer | None:
        """The base from a local image that has it: the receiver's image by ID, else by tag
        (engines on the containerd store name one image by different manifest digests)."""
        if self._engine is None:
            return None
        for holder in holders:
            for ref in (holder.id, *holder.tags):
                local_id = _local_image_with(self._engine, ref, base)
                if local_id is not None:
                    return self._export(self._engine, local_id).get(base)
        return None

    def _export(self, engine: Engine, image_id: str) -> dict[Digest, Layer]:
        """The layers of a local image, from one ``docker save`` per image."""
        if image_id not in self._exports:
            self._exports[image_id] = _export(engine, image_id, self._stack)
        return self._exports[image_id]

    def _spool(self, layer: Layer) -> Path:
        path = self._dir / f"base-{layer.diff_id.hex}"
        with uncompressed_content(layer, 0) as content, path.open("wb") as out:
            shutil.copyfileobj(cast(IO[bytes], content), out, _CHUNK)
        return path

    def _patch(
        self, layer: Layer, base: Digest, base_path: Path, budget: int
    ) -> PlannedPatch | None:
        key = (layer.diff_id, base)
        if key not in self._patches:
            self._patches[key] = self._make(layer, base, base_path, budget)
        return self._patches[key]

    def _make(
        self, layer: Layer, base: Digest, base_path: Path, budget: int
    ) -> PlannedPatch | None:
        path = self._dir / f"patch-{layer.diff_id.hex}-{base.hex}"
        with uncompressed_content(layer, 0) as content:
            info = make_patch_file(
                base_path,
                cast(IO[bytes], content),
                path,
                size_limit=budget,
                base_diff_id=base,
                spool_dir=self._dir,
            )
        if info is None:
            return None
        return PlannedPatch(layer.diff_id, base, path, info.size)


def _layer_plans(
    offer: Sequence[OfferedImage], need: Need, held: Sequence[HeldImage]
) -> Iterator[LayerPlan]:
    """A base plan for each layer asked for from offset 0 (a resumed layer goes on whole).

    A layer the receiver holds and still asks for (an engine on the containerd store takes no
    thin archive) is planned against itself: its patch is nearly empty.
    """
    holdings = Holdings(images=[_image_layers(image, tag) for image in held for tag in image.tags])
    fresh = {diff_id for diff_id, offset in need.layers.items() if offset == 0}
    held_layers = holdings.held()
    for image in offer:
        if str(image.id) not in need.configs:
            continue
        target = _image_layers(HeldImage(str(image.id), image.tags, image.diff_ids), None)
        for layer_plan in plan_bases(target, holdings):
            if layer_plan.diff_id in fresh:
                yield layer_plan
        for index, diff_id in enumerate(image.diff_ids):
            if diff_id in fresh and diff_id in held_layers:
                detail = "the host holds it, its engine takes only whole images"
                yield LayerPlan(index, diff_id, diff_id, BaseReason.SAME_POSITION, detail)


def _image_layers(image: HeldImage, tag: str | None) -> ImageLayers:
    name = tag if tag is not None else (image.tags[0] if image.tags else None)
    if name is None:
        return ImageLayers("", "", image.diff_ids, image.created)
    reference = Reference.parse(name)
    return ImageLayers(
        reference.familiar_repository, reference.tag or "", image.diff_ids, image.created
    )


def _name_of(holders: Sequence[HeldImage]) -> str | None:
    for image in holders:
        return Reference.parse(image.tags[0]).familiar if image.tags else image.id
    return None


def _local_image_with(engine: Engine, ref: str, layer: Digest) -> str | None:
    """The ID of the local image ``ref`` names, if it has ``layer`` (one inspect)."""
    try:
        info = engine.inspect(ref)
    except NotFoundError:
        return None
    layers = (info.get("RootFS") or {}).get("Layers") or ()
    return str(info["Id"]) if str(layer) in layers else None


def _export(engine: Engine, image_id: str, stack: contextlib.ExitStack) -> dict[Digest, Layer]:
    """Every layer of ``image_id`` read from the engine's save stream (spooled until ``stack``
    closes); empty when the engine does not hold the image."""
    try:
        source = EngineSource(engine, [image_id])
    except NotFoundError:
        return {}
    stack.callback(source.close)
    entries = source.entries()
    return {
        layer.diff_id: layer
        for entry in entries
        for image in entry.images()
        for layer in image.layers
    }


def send_layers_or_patches(
    channel: Channel,
    entries: list[Entry],
    need: Need,
    plan: DeltaPlan,
    codec: str,
    level: int | None = None,
    on_bytes: Callable[[int, int], None] | None = None,
) -> int:
    """Stream every needed layer, as its patch where one was made (the whole layer if the
    receiver refuses the patch); return how many layers were sent."""
    layers = layers_by_diff_id(entries)
    for diff_id, offset in need.layers.items():
        layer = layers.get(diff_id)
        if layer is None:
            raise InvalidArchiveError(f"the receiver asked for layer {diff_id}, never offered")
        planned = plan.patches.get(diff_id)
        recipe = plan.recipes.get(diff_id) if need.blobs else None
        if planned is not None and send_patch(
            channel, planned, plan.reports[diff_id], on_bytes, recipe
        ):
            if on_bytes is not None:
                on_bytes(0, layer.size)  # the layer's data is there: progress counts it done
            continue
        send_needed_layer(channel, layer, offset, need.blobs, codec, level, on_bytes)
    return len(need.layers)


def send_patch(
    channel: Channel,
    planned: PlannedPatch,
    report: LayerDelta,
    on_bytes: Callable[[int, int], None] | None = None,
    recipe: BlobRecipe | None = None,
) -> bool:
    """Send one patch; whether the receiver rebuilt the layer from it (else it wants it whole).
    With ``recipe`` (protocol 3) the receiver recompresses the layer into that blob."""
    header: dict[str, Any] = {
        "t": "patch",
        "diff_id": str(planned.diff_id),
        "base": str(planned.base),
        "size": planned.size,
    }
    if recipe is not None:
        header["blob"] = recipe.to_json()
    channel.send(header)
    with planned.path.open("rb") as patch:
        while chunk := patch.read(WIRE_CHUNK):
            channel.send({"t": "c"}, chunk)
            if on_bytes is not None:
                on_bytes(len(chunk), 0)
    channel.send({"t": "end", "size": planned.size})
    channel.flush()
    answer = channel.expect("patched")
    if answer.get("ok") is True:
        report.sent = "patch"
        return True
    report.sent = "whole"
    report.fallback = str(answer.get("reason") or "the receiver refused the patch")
    return False


# -------------------------------------------------------------------------- receiving side
def held_images(engine: Engine, repositories: set[str]) -> list[HeldImage]:
    """The engine's images tagged in ``repositories`` (newest first, at most MAX_HELD): one
    image list and one inspect per such image, no layer data."""
    held = []
    for summary in engine.call(engine.api.images):
        tags = [str(Reference.parse(t)) for t in summary.get("RepoTags") or () if _named(t)]
        tags = [t for t in tags if Reference.parse(t).repository in repositories]
        if not tags:
            continue
        try:
            info = engine.inspect(str(summary["Id"]))
            diff_ids = tuple(
                Digest.parse(d) for d in (info.get("RootFS") or {}).get("Layers") or ()
            )
        except (NotFoundError, InvalidArchiveError):
            continue  # removed meanwhile, or layers not reported: not a base
        held.append(
            HeldImage(str(summary["Id"]), tuple(tags), diff_ids, str(info.get("Created") or ""))
        )
    held.sort(key=lambda image: image.created, reverse=True)
    return held[:MAX_HELD]


def _named(tag: str) -> bool:
    return tag != "<none>:<none>"


class BaseUnavailableError(SealiftError):
    """The receiver cannot produce the base a patch was made against."""


class ReceiverBases:
    """Where a receiver reads patch bases: staging, else its engine (``docker save`` of a held
    image that has the layer, at most once per image). Spools live in staging until close."""

    def __init__(self, engine: Engine, staging: Staging, held: Sequence[HeldImage]) -> None:
        self._engine = engine
        self._staging = staging
        self._held = held
        self._stack = contextlib.ExitStack()
        self._exports: dict[str, dict[Digest, Layer]] = {}
        self._spools: dict[Digest, Path] = {}
        self._lock = threading.Lock()
        self._prefetch: threading.Thread | None = None

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.join()
        self._stack.close()

    def prefetch(self, bases: Sequence[Digest]) -> None:
        """Get these bases ready in the background (the sender's ``bases`` hint), so the
        engine's export overlaps the sender's work; :meth:`path` waits for what is under way."""
        wanted = [base for base in bases if any(base in image.diff_ids for image in self._held)]
        if self._prefetch is not None or not wanted:
            return
        self._prefetch = threading.Thread(target=self._get_ready, args=(wanted,), daemon=True)
        self._prefetch.start()

    def _get_ready(self, bases: list[Digest]) -> None:
        for base in bases:
            with contextlib.suppress(SealiftError, OSError):
                self.path(base)  # a failure is met again, and reported, when the patch comes

    def path(self, base: Digest) -> Path:
        with self._lock:
            staged = self._staging.complete_path(base)
            if staged.is_file() and self._staging.hold(base):
                return staged
            if base not in self._spools:
                self._spools[base] = self._spool(self._exported(base), base)
            return self._spools[base]

    def _exported(self, base: Digest) -> Layer:
        for image in self._held:
            if base not in image.diff_ids:
                continue
            if image.id not in self._exports:
                try:
                    self._exports[image.id] = _export(self._engine, image.id, self._stack)
                except SealiftError:
                    self._exports[image.id] = {}
            layer = self._exports[image.id].get(base)
            if layer is not None:
                return layer
        raise BaseUnavailableError(f"the engine no longer holds the base layer {base.short}")

    def _spool(self, layer: Layer, base: Digest) -> Path:
        spool = Path(self._stack.enter_context(tempfile.TemporaryDirectory(dir=self._staging.root)))
        path = spool / base.hex
        with uncompressed_content(layer, 0) as content, path.open("wb") as out:
            shutil.copyfileobj(cast(IO[bytes], content), out, _CHUNK)
        return path


def receive_patch(
    staging: Staging,
    bases: ReceiverBases | None,
    channel: Channel,
    header: dict[str, Any],
    blob_keys: dict[Digest, Digest] | None = None,
) -> str | None:
    """Rebuild a layer from a ``patch`` and the frames after it into staging.

    Returns None when the layer is staged, or why the whole layer is wanted instead (the base
    is not here, or is not the one the patch was made against, or recompressing it does not
    give its blob). A corrupt patch raises. ``blob_keys`` (a receiver that keeps blobs): the
    blob each layer is staged as, which a patch then names with the recipe that rewrites it.
    """
    diff_id, base, size = _patch_header(header)
    recipe = _patch_recipe(header, diff_id, blob_keys or {})
    stream = LayerStream(channel)
    with tempfile.TemporaryFile(dir=staging.ensure().root) as patch:
        _copy_capped(cast(IO[bytes], stream), patch, size)
        stream.finish()
        patch.seek(0)
        if bases is None:
            return "no patch was asked for"
        try:
            base_path = bases.path(base)
            with open_patched(patch, base_path, expected_target=diff_id) as rebuilt:
                if recipe is not None:
                    return _stage_blob(staging, cast(IO[bytes], rebuilt), recipe)
                staging.receive(diff_id, 0, compression.NONE, cast(IO[bytes], rebuilt))
        except BaseUnavailableError as exc:
            return str(exc)
        except BadPatchError as exc:
            staging.partial_path(diff_id).unlink(missing_ok=True)
            raise BadPatchError(f"layer {diff_id.short}: the patch is refused: {exc}") from exc
        except PatchError as exc:
            staging.partial_path(diff_id).unlink(missing_ok=True)
            return f"the patch did not rebuild the layer: {exc}"
    return None


def _patch_recipe(
    header: dict[str, Any], diff_id: Digest, blob_keys: dict[Digest, Digest]
) -> BlobRecipe | None:
    """The recipe a patch for a blob must carry; ProtocolError where it is missing or names
    another blob than the one offered."""
    blob = blob_keys.get(diff_id, diff_id)
    value = header.get("blob")
    if value is None:
        if blob != diff_id:
            raise ProtocolError(f"a patch for layer {diff_id.short} names no recipe for its blob")
        return None
    try:
        recipe = BlobRecipe.parse(value)
    except SealiftError as exc:
        raise ProtocolError(f"invalid patch header: {exc}") from exc
    if recipe.digest != blob:
        raise ProtocolError(f"a patch for layer {diff_id.short} names blob {recipe.digest}")
    return recipe


def _stage_blob(staging: Staging, content: IO[bytes], recipe: BlobRecipe) -> str | None:
    """Recompress rebuilt content by ``recipe`` and stage it as the blob, once its digest
    checks; else why the blob is wanted whole."""
    ours = library_of(recipe.codec, recipe.level)
    if ours != recipe.library:
        return f"this side compresses with {ours}, the blob was written with {recipe.library}"
    with tempfile.TemporaryFile(dir=staging.ensure().root) as blob:
        write_blob(content, recipe.codec, recipe.level, blob)
        blob.seek(0)
        try:
            staging.receive(recipe.digest, 0, compression.NONE, blob)
        except DigestMismatchError:
            return "recompressing the rebuilt layer did not give its blob"
    return None


def _patch_header(header: dict[str, Any]) -> tuple[Digest, Digest, int]:
    size = header.get("size")
    try:
        diff_id = Digest.parse(header.get("diff_id"))
        base = Digest.parse(header.get("base"))
    except SealiftError as exc:
        raise ProtocolError(f"invalid patch header: {exc}") from exc
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(f"invalid patch size {size!r}")
    return diff_id, base, size


def _copy_capped(stream: IO[bytes], out: IO[bytes], size: int) -> None:
    copied = 0
    while chunk := stream.read(MAX_FRAME):
        copied += len(chunk)
        if copied > size:
            raise ProtocolError(f"the patch is longer than the {size} bytes announced")
        out.write(chunk)
    if copied != size:
        raise ProtocolError(f"the patch is {copied} bytes, {size} were announced")
