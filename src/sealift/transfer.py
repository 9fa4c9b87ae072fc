"""copy(source, sink): select images, bring their layers into the form the sink wants, write.

The one orchestration function every command uses. Layers that must change compression are
transcoded in parallel into a spool (verified as they are read); layers that stay as they are
pass through untouched and are verified while the sink copies them. Manifests and indexes are
rebuilt only when a layer under them changed; configs are never touched, so image IDs survive.
With a layer cache (``CopyOptions.cache``, see ``sealift.cache``) a layer compressed before with
the same codec and level is taken from the cache instead of being compressed again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sealift import compression, media
from sealift.blobs import BlobStore, make_spool_dir
from sealift.cache import CachedLayer, LayerCache
from sealift.digest import Digest
from sealift.ends.base import Sink, Source, WriteResult
from sealift.errors import NotFoundError, UsageError
from sealift.layers import LayerDigester, check_layer, copy_verified
from sealift.model import (
    Descriptor,
    Entry,
    Image,
    ImageIndex,
    Index,
    Layer,
    Manifest,
    Platform,
    relink_attestations,
)
from sealift.reference import Reference
from sealift.verify import CHUNK

if TYPE_CHECKING:
    from sealift.update import Omitted

ALL_PLATFORMS = "all"


@dataclass(frozen=True)
class Selection:
    """Which images to take: by tag (or OCI ref name), and by platform."""

    tags: tuple[str, ...] = ()
    platform: str | None = None

    def apply(self, entries: list[Entry]) -> list[Entry]:
        chosen = self._by_tag(entries) if self.tags else entries
        if self.platform is None or self.platform == ALL_PLATFORMS:
            return chosen
        wanted = Platform.parse(self.platform)
        return [_single_platform(entry, wanted) for entry in chosen]

    def _by_tag(self, entries: list[Entry]) -> list[Entry]:
        result: list[Entry] = []
        for wanted in self.tags:
            matches = [_narrow(e, wanted) for e in entries if _matches(e, wanted)]
            if not matches:
                raise NotFoundError(f"no image tagged {wanted!r} in the source")
            result.extend(m for m in matches if m not in result)
        return result


def _matches(entry: Entry, wanted: str) -> bool:
    if wanted in entry.ref_names:
        return True
    reference = _as_reference(wanted)
    return reference is not None and reference in entry.tags


def _narrow(entry: Entry, wanted: str) -> Entry:
    reference = _as_reference(wanted)
    if wanted in entry.ref_names:
        return Entry(entry.target, (), (wanted,))
    assert reference is not None
    return Entry(entry.target, (reference,), ())


def _as_reference(text: str) -> Reference | None:
    try:
        return Reference.parse(text)
    except UsageError:
        return None


def _single_platform(entry: Entry, wanted: Platform) -> Entry:
    if isinstance(entry.target, Image):
        return entry
    for descriptor, child in _flatten(entry.target):
        platform = descriptor.platform or child.config.platform
        if platform.matches(wanted):
            return Entry(replace(child, platform=platform), entry.tags, entry.ref_names)
    available = ", ".join(str(d.platform or c.config.platform) for d, c in _flatten(entry.target))
    raise NotFoundError(f"no {wanted} image in {_entry_name(entry)} (it has: {available})")


def _flatten(index: ImageIndex) -> list[tuple[Descriptor, Image]]:
    result: list[tuple[Descriptor, Image]] = []
    for descriptor, child in index.children:
        if isinstance(child, ImageIndex):
            result.extend(_flatten(child))
        else:
            result.append((descriptor, child))
    return result


def _entry_name(entry: Entry) -> str:
    if entry.tags:
        return entry.tags[0].familiar
    if entry.ref_names:
        return entry.ref_names[0]
    return "an untagged image"


@dataclass(frozen=True)
class CopyOptions:
    compression: str | None = compression.GZIP
    """Layer compression to write; None keeps each layer as it is."""
    level: int | None = None
    selection: Selection = Selection()
    workers: int = 2
    keep_compressed: bool = False
    """With ``compression`` set: apply it to uncompressed layers only; compressed ones stay as
    they are (``save`` from an engine that holds compressed blobs keeps them)."""
    cache: LayerCache | None = None
    """Where layers compressed before are taken from, and layers compressed now are kept."""


Progress = Callable[[str, int], None]


def copy(
    source: Source,
    sink: Sink,
    options: CopyOptions = CopyOptions(),
    *,
    spool: Path | None = None,
) -> WriteResult:
    """Copy the selected images from ``source`` to ``sink``."""
    target = options.compression
    if target is not None:
        compression.check_level(compression.check_layer_codec(target), options.level)
    use_cache = getattr(source, "use_cache", None)
    if options.cache is not None and callable(use_cache):
        use_cache(options.cache)
    entries = options.selection.apply(source.entries(want_codec=target, want_level=options.level))
    if not entries:
        raise NotFoundError("the source holds no images")
    omitted = left_out(source)
    if omitted is not None:
        from sealift.update import check_sink_holds

        check_sink_holds(sink, entries, omitted)
    with contextlib.ExitStack() as stack:
        if spool is None:
            spool = Path(stack.enter_context(make_spool_dir()))
        loaded = entries
        if omitted is not None and omitted.patched:
            loaded = with_layers(entries, _rebuilt_from_patches(source, sink, omitted, spool))
        will_read = getattr(source, "will_read", None)
        prepared = prepare(
            loaded, sink, BlobStore(spool), options, will_read if callable(will_read) else None
        )
        result = sink.write(prepared)
    result.images = image_records(entries, prepared)
    return result


def _rebuilt_from_patches(
    source: Source, sink: Sink, omitted: Omitted, spool: Path
) -> dict[Digest, Layer]:
    """The layers an update bundle carries as patches, rebuilt against the sink's engine."""
    from sealift.ends.engine import Engine
    from sealift.update_patches import rebuilt_layers

    engine = getattr(sink, "engine", None)
    open_patch = getattr(source, "open_extra", None)
    what = getattr(source, "what", "the update bundle")
    if not isinstance(engine, Engine) or not callable(open_patch):
        raise UsageError(
            f"{what} carries {len(omitted.patched)} layers as patches against layers the site's "
            "engine holds: load it into that engine with `sealift load`"
        )
    return rebuilt_layers(omitted.patched, open_patch, engine, spool, what)


def with_layers(entries: list[Entry], replacements: dict[Digest, Layer]) -> list[Entry]:
    """``entries`` with these layers (by blob digest) replaced, manifests rebuilt to match."""
    layers = {
        layer.digest: replacements.get(layer.digest, layer)
        for entry in entries
        for image in entry.images()
        for layer in image.layers
    }
    return [
        replace(entry, target=_swapped(_rebuild(entry.target, layers), replacements))
        for entry in entries
    ]


def _swapped(target: Image | ImageIndex, replacements: dict[Digest, Layer]) -> Image | ImageIndex:
    """``target`` with these layers put in, even where they equal the old ones (a layer's
    equality leaves out where its bytes are read from)."""
    if isinstance(target, ImageIndex):
        children = tuple((d, _swapped(c, replacements)) for d, c in target.children)
        return replace(target, children=children)
    layers = tuple(replacements.get(layer.digest, layer) for layer in target.layers)
    return replace(target, layers=layers)


def image_records(before: list[Entry], after: list[Entry]) -> list[dict[str, object]]:
    """What each copied entry is now: names, image IDs, manifest (and index) digests, and whether
    its blobs were adapted on the way (then its manifest digest changed)."""
    records: list[dict[str, object]] = []
    for old, new in zip(before, after, strict=True):
        records.append(
            {
                "names": [tag.familiar for tag in new.tags] + list(new.ref_names),
                "ids": [str(image.id) for image in new.images() if not image.attestation],
                "digest": _text(_top_digest(new.target)),
                "source_digest": _text(_top_digest(old.target)),
                "adapted": _top_digest(old.target) not in (None, _top_digest(new.target)),
            }
        )
    return records


def _text(digest: Digest | None) -> str | None:
    return None if digest is None else str(digest)


def _top_digest(target: Image | ImageIndex) -> Digest | None:
    if isinstance(target, ImageIndex):
        return target.index.digest
    return target.manifest.digest if target.manifest is not None else None


def prepare(
    entries: Sequence[Entry],
    sink: Sink,
    store: BlobStore,
    options: CopyOptions,
    will_read: Callable[[list[Digest]], None] | None = None,
) -> list[Entry]:
    """Entries whose layers use the codec asked for (or, with none asked, one the sink accepts)
    and whose manifests describe them exactly.

    ``will_read`` is told which layers will be read, in the order sinks write them, before
    any is: a source that can fetch ahead (a registry) starts then.
    """
    layers = {
        layer.digest: layer
        for entry in entries
        for image in entry.images()
        for layer in image.layers
    }
    # layers the sink has are never read, let alone recompressed
    needed = sink.missing_layers(list(entries))
    if will_read is not None:
        will_read([digest for digest in layers if digest in needed])
    converted = _convert_layers(list(layers.values()), sink, store, options, needed)
    return [
        Entry(_rebuild(entry.target, converted), entry.tags, entry.ref_names) for entry in entries
    ]


def renamed(entries: list[Entry], name: str, *, as_reference: bool) -> list[Entry]:
    """The one entry of ``entries`` under ``name`` alone (a destination that names what it gets).

    ``as_reference``: ``name`` must be an image reference (an engine's tag); otherwise it may be
    any OCI ref name (a layout's ``oci:DIR:REF``).
    """
    if len(entries) != 1:
        raise UsageError(
            f"the destination names one image ({name}), but the source holds {len(entries)}: "
            "choose one with --tag"
        )
    reference = _as_reference(name)
    if reference is not None and (as_reference or ":" in name or "/" in name):
        return [Entry(entries[0].target, (reference,), ())]
    if as_reference:
        raise UsageError(f"invalid image reference {name!r}")
    return [Entry(entries[0].target, (), (name,))]


def _target_codec(layer: Layer, sink: Sink, options: CopyOptions) -> str:
    if layer.opaque:
        return layer.codec
    if options.compression is not None:
        if options.keep_compressed and layer.codec != compression.NONE:
            return layer.codec
        return options.compression
    if sink.accepts_codec(layer.codec):
        return layer.codec
    return compression.NONE


def _convert_layers(
    layers: list[Layer], sink: Sink, store: BlobStore, options: CopyOptions, needed: set[Digest]
) -> dict[Digest, Layer]:
    targets = {layer.digest: _target_codec(layer, sink, options) for layer in layers}
    result = {layer.digest: layer for layer in layers}
    todo = []
    for layer in layers:
        if targets[layer.digest] == layer.codec or layer.digest not in needed:
            continue
        streamed = (
            _decompressed_on_the_fly(layer) if targets[layer.digest] == compression.NONE else None
        )
        if streamed is not None:
            result[layer.digest] = streamed
        else:
            todo.append(layer)
    if not todo:
        return result
    with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        futures: dict[Digest, Future[Layer]] = {
            layer.digest: pool.submit(
                transcode, layer, targets[layer.digest], store, options.level, options.cache
            )
            for layer in todo
        }
        for digest, future in futures.items():
            result[digest] = future.result()
    return result


def _decompressed_on_the_fly(layer: Layer) -> Layer | None:
    """The layer as uncompressed bytes decompressed while they are read, when its uncompressed
    size is recorded (sealift's own archives): no spooling, and the sink's copy checks the
    content against the diff_id and that size."""
    size = media.uncompressed_size(layer.descriptor.annotations)
    if layer.codec == compression.NONE or layer.opaque or size is None:
        return None
    label = layer.label or f"layer {layer.digest}"

    def open_uncompressed() -> IO[bytes]:
        return compression.open_decompressed_ahead(layer.open(), layer.codec, label)

    annotations = media.with_uncompressed_size(layer.descriptor.annotations, compression.NONE, 0)
    descriptor = Descriptor(media.OCI_LAYER, layer.diff_id, size, annotations)
    return Layer(descriptor, layer.diff_id, compression.NONE, open_uncompressed, label=label)


def transcode(
    layer: Layer,
    codec: str,
    store: BlobStore,
    level: int | None = None,
    cache: LayerCache | None = None,
) -> Layer:
    """The layer recompressed with ``codec`` into ``store``, verified on the way; taken from
    ``cache`` instead when it holds this layer so compressed (and then kept there when not)."""
    use_cache = cache is not None and codec != compression.NONE and not layer.opaque
    cached = cache.get(layer.diff_id, codec, level) if cache is not None and use_cache else None
    if cached is not None:
        if not layer.verified:
            verify_layer(layer)  # the source is checked all the same: only compressing is saved
        return _from_cache(layer, cached, store)
    what = layer.label or f"layer {layer.digest}"
    digester = LayerDigester(
        layer.codec,
        what,
        target=codec,
        level=level,
        expected_digest=None if layer.verified else layer.digest,
        recorded_size=media.uncompressed_size(layer.descriptor.annotations),
    )

    def write(out: IO[bytes]) -> None:
        with layer.open() as stream:
            digester.run(stream, out)
        check_layer(
            what=what,
            expected_digest=None if layer.verified else layer.digest,
            expected_size=None if layer.verified else layer.size,
            expected_diff_id=layer.diff_id,
            digester=digester,
        )

    digest, size = store.add(write)
    if cache is not None and use_cache:
        cache.put(
            layer.diff_id, codec, level, store.path(digest), digest, digester.uncompressed_size
        )
    annotations = media.with_uncompressed_size(
        layer.descriptor.annotations, codec, digester.uncompressed_size
    )
    descriptor = Descriptor(media.oci_layer_type(codec), digest, size, annotations)
    return Layer(
        descriptor,
        layer.diff_id,
        codec,
        lambda: store.open(digest),
        verified=True,
        label=layer.label,
    )


def _from_cache(layer: Layer, cached: CachedLayer, store: BlobStore) -> Layer:
    """The cached blob as the layer, linked (or copied) into ``store`` so that it lives as long
    as the copy's other blobs, whatever happens to the cache."""
    digest = cached.digest
    if not store.has(digest):
        store.path(digest).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(cached.path, store.path(digest))
        except FileExistsError:
            pass
        except OSError:
            store.add(partial(_copy_file, cached), expected=digest)
    codec = cached.key.codec
    annotations = media.with_uncompressed_size(
        layer.descriptor.annotations, codec, cached.uncompressed_size
    )
    descriptor = Descriptor(media.oci_layer_type(codec), cached.digest, cached.size, annotations)
    return Layer(
        descriptor,
        layer.diff_id,
        codec,
        partial(store.open, digest),
        verified=True,
        label=layer.label,
    )


def _copy_file(cached: CachedLayer, out: IO[bytes]) -> None:
    with cached.open() as source:
        shutil.copyfileobj(source, out, CHUNK)


def _rebuild(target: Image | ImageIndex, converted: dict[Digest, Layer]) -> Image | ImageIndex:
    if isinstance(target, ImageIndex):
        children = tuple((d, _rebuild(c, converted)) for d, c in target.children)
        if all(
            new is old for (_, new), (_, old) in zip(children, target.children, strict=True)
        ) and len(children) == len(target.index.manifests):
            return target
        descriptors = [_child_descriptor(d, c) for d, c in children]
        old_digests = [old.digest for old, _ in target.children]
        renamed = dict(zip(old_digests, (d.digest for d in descriptors), strict=True))
        linked = relink_attestations(
            list(zip(descriptors, (c for _, c in children), strict=True)), renamed
        )
        index = Index.build([d for d, _ in linked], target.index.annotations)
        return ImageIndex(index, tuple(linked))
    layers = tuple(converted[layer.digest] for layer in target.layers)
    # the stored manifest still fits only if it names exactly these blobs (a streamed source
    # may already have recompressed layers on arrival)
    if target.manifest is not None and [d.digest for d in target.manifest.layers] == [
        layer.digest for layer in layers
    ]:
        return target if layers == target.layers else replace(target, layers=layers)
    config = Descriptor(media.OCI_CONFIG, target.config.digest, len(target.config.raw))
    annotations = target.manifest.annotations if target.manifest is not None else {}
    manifest = Manifest.build(config, [layer.descriptor for layer in layers], annotations)
    return Image(target.config, layers, manifest, target.platform)


def _child_descriptor(old: Descriptor, child: Image | ImageIndex) -> Descriptor:
    if isinstance(child, ImageIndex):
        return replace(
            old,
            media_type=child.index.media_type,
            digest=child.index.digest,
            size=len(child.index.raw),
        )
    assert child.manifest is not None
    return replace(
        old,
        media_type=child.manifest.media_type,
        digest=child.manifest.digest,
        size=len(child.manifest.raw),
    )


@dataclass
class VerifyReport:
    images: int = 0
    layers: int = 0
    bytes_checked: int = 0
    left_out: int = 0
    """Layers an update bundle leaves out (the site it was made for holds them)."""
    patched: int = 0
    """Layers an update bundle carries as patches (checked; rebuilt only by a load)."""


def left_out(source: Source) -> Omitted | None:
    """What ``source`` leaves out on purpose, when it is an update bundle (``save --since``)."""
    omitted = getattr(source, "omitted", None)
    if omitted is None:
        return None
    from sealift.update import Omitted  # update bundles bring the delta code: only for them

    return omitted if isinstance(omitted, Omitted) else None


def verify(source: Source, *, workers: int = 2) -> VerifyReport:
    """Check every blob against its digest and size and every layer against its diff_id."""
    entries = source.entries()
    report = VerifyReport()
    layers: dict[Digest, Layer] = {}
    images = {image.id: image for entry in entries for image in entry.images()}
    report.images = sum(1 for image in images.values() if not image.attestation)
    omitted = left_out(source)
    skipped = set(omitted.layers) if omitted is not None else set()
    if omitted is not None and omitted.patched:
        report.patched = _check_patches(source, omitted)
        skipped |= set(omitted.patched)
    for image in images.values():
        for layer in image.layers:
            if layer.digest not in skipped:
                layers.setdefault(layer.digest, layer)
    every = {layer.digest for image in images.values() for layer in image.layers}
    report.left_out = len(every & skipped) - report.patched
    report.layers = len(layers)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for size in pool.map(verify_layer, layers.values()):
            report.bytes_checked += size
    return report


def _check_patches(source: Source, omitted: Omitted) -> int:
    """Check each patch an update bundle carries against its recorded sha256 and size."""
    from sealift.update_patches import check_patch, opened_patch

    open_extra = getattr(source, "open_extra", None)
    what = getattr(source, "what", "the update bundle")

    def open_patch(name: str) -> IO[bytes] | None:
        return open_extra(name) if callable(open_extra) else None

    for patched in omitted.patched.values():
        with opened_patch(open_patch, patched, what) as patch:
            check_patch(patch, patched, what)
    return len(omitted.patched)


def verify_layer(layer: Layer) -> int:
    """Read a layer once, checking its digest, size and diff_id; return its size."""
    if layer.verified:
        return layer.size
    with layer.open() as stream:
        copy_verified(layer, stream, None, layer.label or f"layer {layer.digest}")
    return layer.size
