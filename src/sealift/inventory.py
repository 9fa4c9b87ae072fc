"""What a site's engine holds, as a small JSON file: images, tags, IDs and layer diff_ids.

``sealift inventory`` writes it on the receiving side (from the local engine, or a host's over
SSH); ``save --since FILE`` then carries only the layers the site lacks.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealift.digest import Digest
from sealift.errors import EngineError, InvalidArchiveError, SealiftError, UsageError
from sealift.model import load_json

if TYPE_CHECKING:
    from sealift.ends.engine import Engine
    from sealift.ends.ssh import Ssh

FORMAT = "sealift-inventory/1"
STORE_MARK = "SEALIFT-STORE"


@dataclass(frozen=True)
class HeldImage:
    """One image the site holds: the ID its engine knows it by (the config digest, or the
    manifest digest on the containerd image store), its tags and its layers' diff_ids."""

    id: str
    tags: tuple[str, ...]
    diff_ids: tuple[Digest, ...]


@dataclass(frozen=True)
class Inventory:
    created: str
    """When it was taken (ISO 8601, UTC): a delta bundle built from it names it."""
    source: str
    containerd_store: bool
    images: tuple[HeldImage, ...]

    @property
    def chains(self) -> set[Digest]:
        """The chain ID of every layer stack the site holds."""
        from sealift.ends.engine import chain_ids

        return {chain for image in self.images for chain in chain_ids(list(image.diff_ids))}

    @property
    def ids(self) -> set[str]:
        return {image.id for image in self.images}

    def to_json(self) -> bytes:
        from sealift.ends.engine import chain_ids

        document = {
            "format": FORMAT,
            "created": self.created,
            "source": self.source,
            "containerd_store": self.containerd_store,
            "images": [
                {
                    "id": i.id,
                    "tags": list(i.tags),
                    "diff_ids": [str(d) for d in i.diff_ids],
                    "chain_ids": [str(c) for c in chain_ids(list(i.diff_ids))],
                }
                for i in self.images
            ],
        }
        return json.dumps(document, indent=1).encode() + b"\n"

    @classmethod
    def parse(cls, raw: bytes, what: str = "inventory") -> Inventory:
        """Read an inventory strictly: one clear error for anything that is not one."""
        document = load_json(raw, what)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise InvalidArchiveError(f"{what} is not a sealift inventory ({FORMAT})")
        try:
            images = tuple(_held_image(item) for item in document["images"])
            return cls(
                str(document["created"]),
                str(document["source"]),
                bool(document["containerd_store"]),
                images,
            )
        except (KeyError, TypeError, ValueError, SealiftError) as exc:
            raise InvalidArchiveError(f"{what} is damaged: {exc}") from exc


def read_inventory(path: Path) -> Inventory:
    """The inventory in the file ``path`` (one clear error when it cannot be read)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the inventory {path}: {exc.strerror}") from exc
    return Inventory.parse(raw, f"inventory {path}")


def _held_image(item: Any) -> HeldImage:
    tags = tuple(str(tag) for tag in item["tags"])
    diff_ids = tuple(Digest.parse(d) for d in item["diff_ids"])
    Digest.parse(item["id"])
    return HeldImage(str(item["id"]), tags, diff_ids)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def of_engine(engine: Engine) -> Inventory:
    """What the engine holds, asked through its API."""
    images = [_from_inspect(engine.inspect(image_id)) for image_id in engine.image_ids()]
    return Inventory(now(), engine.host, engine.containerd_store, tuple(images))


def of_remote(ssh: Ssh, tool: str = "docker") -> Inventory:
    """What a host's docker (or podman) holds, asked over SSH with the tool itself: one
    ``image inspect`` of every image, and which image store it uses."""
    script = (
        f"ids=$({tool} images -aq --no-trunc) || exit 3; "
        f'if [ -n "$ids" ]; then {tool} image inspect $ids; else echo "[]"; fi; '
        f"echo {STORE_MARK}; {tool} info --format '{{{{json .DriverStatus}}}}' 2>/dev/null; true"
    )
    answer = ssh.run(script, timeout=300)
    if answer.returncode != 0:
        from sealift.ends.ssh import last_line

        raise EngineError(f"{ssh.target}: {tool} failed: {last_line(answer.stderr)}")
    images_text, _, store_text = (answer.stdout or b"[]").partition(STORE_MARK.encode())
    try:
        images = tuple(_from_inspect(item) for item in json.loads(images_text or b"[]"))
    except (ValueError, KeyError, TypeError, SealiftError) as exc:
        raise EngineError(f"{ssh.target}: cannot read `{tool} image inspect`: {exc}") from exc
    return Inventory(
        now(), str(ssh.target), b"io.containerd.snapshotter" in store_text, tuple(images)
    )


def _from_inspect(item: dict[str, Any]) -> HeldImage:
    image_id = str(item["Id"])
    if ":" not in image_id:
        image_id = f"sha256:{image_id}"
    layers = (item.get("RootFS") or {}).get("Layers") or []
    tags = tuple(str(tag) for tag in item.get("RepoTags") or [])
    return HeldImage(image_id, tags, tuple(Digest.parse(d) for d in layers))
