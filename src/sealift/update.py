"""Update bundles: archives that leave out the layers a site already holds.

``save --since site.json`` (and ``compose save --since``) writes every image and every layer's
descriptor, but only the layers the site's inventory (:mod:`sealift.inventory`) lacks, and
records what it left out in ``sealift/update.json``. Loading such a bundle first checks that the
engine holds every layer left out; when it does not, nothing is loaded and the missing layers and
the inventory's date are named. Plain ``docker load`` of an update into the engine it was made for
works too (Docker loads thin archives whose missing layers it has).

A layer the site lacks but holds an older version of (same repository, same position) is carried
as a binary patch when that pays (:mod:`sealift.update_patches`); ``update.json`` then has the
format ``sealift-update/2`` and names the patches, the bundle's manifest names those layers'
uncompressed tars (absent from ``blobs/``, so plain ``docker load`` fails before registering
anything), and only ``sealift load`` into the site's engine rebuilds and loads them.

On the containerd image store an engine can be trusted to hold a blob only when it holds an image
whose manifest names it (it says nothing about the blobs themselves), so there only the layers of
images the inventory lists by manifest digest are left out. Patches are made for such a site too
(its engine's ``docker save`` reads the base out of its content store); the image it loads from
a patch bundle has the build box's config digest and diff_ids, but the bundle's manifest digest,
which the containerd store shows as the image's ID.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealift.delta import LayerChoice
from sealift.digest import Digest
from sealift.ends.base import Sink, WriteResult, all_layers
from sealift.errors import InvalidArchiveError, NotFoundError, SealiftError
from sealift.formats.write import ExtraFile
from sealift.inventory import HeldImage, Inventory
from sealift.model import Entry, load_json
from sealift.update_patches import (
    BaseFinder,
    BundlePatcher,
    MadePatch,
    PatchedLayer,
)

UPDATE_FILE = "update.json"
FORMAT = "sealift-update/1"
PATCHED_FORMAT = "sealift-update/2"
"""An update that carries patches: older sealift versions refuse it rather than misread it."""


@dataclass(frozen=True)
class Omitted:
    """What an update bundle leaves out, and the inventory it was made against."""

    inventory_created: str
    inventory_source: str
    layers: dict[Digest, Digest]
    """Blob digest -> diff_id of every layer left out."""
    patched: dict[Digest, PatchedLayer] = field(default_factory=dict)
    """Blob digest -> the patch carried instead of each layer the site lacks but has a base of."""

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "format": PATCHED_FORMAT if self.patched else FORMAT,
            "inventory": {"created": self.inventory_created, "source": self.inventory_source},
            "omitted": [{"digest": str(d), "diff_id": str(i)} for d, i in self.layers.items()],
        }
        if self.patched:
            document["patched"] = [patched.to_json() for patched in self.patched.values()]
        return json.dumps(document, indent=1).encode() + b"\n"

    @classmethod
    def parse(cls, raw: bytes, what: str) -> Omitted:
        document = load_json(raw, what)
        if not isinstance(document, dict) or document.get("format") not in (FORMAT, PATCHED_FORMAT):
            raise InvalidArchiveError(
                f"{what} is not a sealift update description ({FORMAT} or {PATCHED_FORMAT})"
            )
        try:
            inventory = document["inventory"]
            layers = {
                Digest.parse(item["digest"]): Digest.parse(item["diff_id"])
                for item in document["omitted"]
            }
            patches = [PatchedLayer.from_json(item) for item in document.get("patched", [])]
            patched = {patch.digest: patch for patch in patches}
            return cls(str(inventory["created"]), str(inventory["source"]), layers, patched)
        except (KeyError, TypeError, ValueError, SealiftError) as exc:
            raise InvalidArchiveError(f"{what} is damaged: {exc}") from exc


def held_layers(entries: list[Entry], inventory: Inventory) -> set[Digest]:
    """The layers of ``entries`` the site holds, so an update can leave them out."""
    if inventory.containerd_store:
        held_images = [
            image
            for entry in entries
            for image in entry.images()
            if image.manifest is not None and str(image.manifest.digest) in inventory.ids
        ]
        return {layer.digest for image in held_images for layer in image.layers}
    from sealift.ends.engine import layers_in_chains

    return layers_in_chains(entries, inventory.chains)


class UpdateSink:
    """An archive sink that leaves out what the inventory says the site holds, and carries as
    patches the layers it lacks but holds an older version of (unless ``delta`` is off)."""

    keeps_blobs = True

    def __init__(
        self,
        path: str,
        inventory: Inventory,
        *,
        split: int | None = None,
        extra_files: Callable[[list[Entry]], Mapping[str, ExtraFile]] | None = None,
        delta: bool = True,
        find_base: BaseFinder | None = None,
        dry_run: bool = False,
    ) -> None:
        """``find_base``: where the build box reads a base the images saved do not hold
        (its engine); without it, only those images' layers serve as bases. ``dry_run``:
        make the patches to measure them, write nothing; the result's details say, per layer
        the site lacks, what the bundle would carry (:class:`LayerChoice`)."""
        from sealift.ends.archive import ArchiveSink

        self.inventory = inventory
        self._more = extra_files
        self._delta = delta
        self._dry_run = dry_run
        self._find_base = find_base or _no_base
        self._patches: dict[Digest, MadePatch] = {}
        self._archive = ArchiveSink(path, split=split, extra_files=self._extra)

    def accepts_codec(self, codec: str) -> bool:
        return self._archive.accepts_codec(codec)

    def missing_layers(self, entries: list[Entry]) -> set[Digest]:
        return all_layers(entries) - held_layers(entries, self.inventory)

    def _extra(self, entries: list[Entry]) -> dict[str, ExtraFile]:
        held = held_layers(entries, self.inventory)
        layers = {
            layer.digest: layer.diff_id
            for entry in entries
            for image in entry.images()
            for layer in image.layers
            if layer.digest in held
        }
        patched = {made.layer.digest: made.layer for made in self._patches.values()}
        omitted = Omitted(self.inventory.created, self.inventory.source, layers, patched)
        more = self._more(entries) if self._more is not None else {}
        patches = {made.layer.member: made.path for made in self._patches.values()}
        return {**more, **patches, UPDATE_FILE: omitted.to_json()}

    def write(self, entries: list[Entry]) -> WriteResult:
        held = held_layers(entries, self.inventory)
        with BundlePatcher(self.inventory, self._find_base) as patcher:
            self._patches = patcher.make(entries) if self._delta else {}
            if self._patches:
                from sealift.transfer import with_layers

                stand_ins = {digest: made.stand_in for digest, made in self._patches.items()}
                entries = with_layers(entries, stand_ins)
            patched = {made.layer.digest for made in self._patches.values()}
            if self._dry_run:
                result = self._would_write(entries, held | patched, patcher.reports)
            else:
                result = self._archive.write(entries, omit=held | patched)
        result.layers_skipped = len(held)
        result.layers_sent = len(all_layers(entries) - held - patched)
        result.details["patched"] = [
            {
                "diff_id": str(made.layer.diff_id),
                "base_diff_id": str(made.layer.base),
                "layer_bytes": made.layer_bytes,
                "patch_bytes": made.layer.patch_size,
            }
            for made in self._patches.values()
        ]
        return result

    def _would_write(
        self, entries: list[Entry], omit: set[Digest], reports: Mapping[Digest, LayerChoice]
    ) -> WriteResult:
        """The result of a dry run: ``reports`` by diff_id, for the layers that had a base."""
        from sealift.formats.write import archive_size

        held = held_layers(entries, self.inventory)
        lacking = {
            layer.diff_id: layer
            for entry in entries
            for image in entry.images()
            for layer in image.layers
            if layer.digest not in held
        }
        why_whole = self._why_whole()
        layers = [
            reports.get(diff_id) or LayerChoice(str(diff_id), layer.size, reason=why_whole)
            for diff_id, layer in lacking.items()
        ]
        result = WriteResult(names=[str(tag) for entry in entries for tag in entry.tags])
        result.bytes_sent = archive_size(entries, self._extra(entries), omit)
        result.details["layers"] = [layer.to_json() for layer in layers]
        return result

    def _why_whole(self) -> str:
        """Why a layer without a report crosses whole."""
        if not self._delta:
            return "--no-delta"
        return "the site holds no older version of it"


def _no_base(base: Digest, holders: Sequence[HeldImage]) -> Path | None:
    return None


def check_sink_holds(sink: Sink, entries: list[Entry], omitted: Omitted) -> None:
    """Refuse, naming them, when ``sink`` lacks layers the update left out."""
    lacking = sink.missing_layers(entries) & set(omitted.layers)
    if lacking:
        named = ", ".join(str(omitted.layers[digest]) for digest in sorted(lacking, key=str))
        raise NotFoundError(
            f"this update leaves out {len(lacking)} layers the destination does not hold "
            f"(diff_ids {named}); it was made for the inventory of {omitted.inventory_source} "
            f"taken {omitted.inventory_created}: load the full bundle, or take a new inventory"
        )
