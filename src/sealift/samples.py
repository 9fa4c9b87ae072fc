"""Sample images built in code: for the demo, the tests and anyone trying sealift without an engine.

``write_docker_save`` writes a tar in the legacy format ``docker save`` (Docker 20-24) produces:
``manifest.json``, ``repositories``, ``<config-hex>.json`` and ``<id>/layer.tar`` with uncompressed
layers. The content is deterministic: the same arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sealift.digest import sha256_of


@dataclass(frozen=True)
class SampleLayer:
    files: dict[str, bytes]

    def tar(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, data in sorted(self.files.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o755, 1_700_000_000
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()


@dataclass(frozen=True)
class SampleImage:
    tags: tuple[str, ...]
    layers: tuple[SampleLayer, ...]
    env: tuple[str, ...] = ("PATH=/usr/local/bin:/usr/bin:/bin",)
    cmd: tuple[str, ...] = ("/bin/sh",)
    labels: dict[str, str] = field(default_factory=dict)
    architecture: str = "amd64"

    def config(self) -> bytes:
        diff_ids = [str(sha256_of(layer.tar())) for layer in self.layers]
        document = {
            "architecture": self.architecture,
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {"Env": list(self.env), "Cmd": list(self.cmd), "Labels": self.labels},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "sealift samples"}]
            * len(self.layers),
        }
        return json.dumps(document, sort_keys=True).encode()


def text_blob(seed: int, size: int) -> bytes:
    """Compressible, source-code-like text."""
    rng = random.Random(seed)
    names = ["layer", "image", "digest", "config", "manifest", "index", "blob", "stream"]
    verbs = ["read", "write", "verify", "copy", "load", "save", "open", "close"]
    chunks = []
    total = 0
    while total < size:
        name, verb = rng.choice(names), rng.choice(verbs)
        number = rng.randrange(1000)
        chunk = (
            f"def {verb}_{name}_{number}(source, sink, limit={number}):\n"
            f'    """{verb.capitalize()} one {name} from source to sink."""\n'
            f"    if limit < {rng.randrange(100)}:\n"
            f"        raise ValueError('{name} too small: %d' % limit)\n"
            f"    return sink.{verb}(source.{name}s[{rng.randrange(10)}])\n\n"
        )
        chunks.append(chunk)
        total += len(chunk)
    return "".join(chunks).encode()[:size]


def binary_blob(seed: int, size: int) -> bytes:
    """Barely compressible bytes, like a shipped binary."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def demo_images(scale: int = 1) -> list[SampleImage]:
    """A small stack: a base, two versions of an app on it, and a tool sharing the base."""
    base = SampleLayer(
        {
            "bin/tool": binary_blob(1, 600_000 * scale),
            "usr/share/doc/README": text_blob(2, 2_000_000 * scale),
        }
    )
    runtime = SampleLayer({"usr/lib/runtime.py": text_blob(3, 3_000_000 * scale)})
    app_v1 = SampleLayer({"app/main.py": text_blob(4, 400_000 * scale), "app/VERSION": b"1.0\n"})
    app_v2 = SampleLayer({"app/main.py": text_blob(4, 400_000 * scale), "app/VERSION": b"1.1\n"})
    return [
        SampleImage(("sample/base:1", "sample/base:latest"), (base,), labels={"role": "base"}),
        SampleImage(("sample/app:1.0",), (base, runtime, app_v1), cmd=("python3", "/app/main.py")),
        SampleImage(("sample/app:1.1",), (base, runtime, app_v2), cmd=("python3", "/app/main.py")),
    ]


def write_docker_save(images: Sequence[SampleImage], out: IO[bytes]) -> None:
    """Write ``images`` as ``docker save`` (Docker 20.10) would."""
    entries: dict[str, bytes] = {}
    manifest = []
    repositories: dict[str, dict[str, str]] = {}
    for image in images:
        config = image.config()
        config_name = f"{sha256_of(config).hex}.json"
        entries[config_name] = config
        layer_paths = []
        parent = ""
        for layer in image.layers:
            data = layer.tar()
            layer_id = hashlib.sha256(f"{parent}{sha256_of(data)}".encode()).hexdigest()
            entries[f"{layer_id}/VERSION"] = b"1.0"
            entries[f"{layer_id}/json"] = json.dumps({"id": layer_id, "parent": parent}).encode()
            entries[f"{layer_id}/layer.tar"] = data
            layer_paths.append(f"{layer_id}/layer.tar")
            parent = layer_id
        manifest.append(
            {"Config": config_name, "RepoTags": list(image.tags), "Layers": layer_paths}
        )
        for tag in image.tags:
            repo, _, name = tag.rpartition(":")
            repositories.setdefault(repo, {})[name] = parent
    entries["manifest.json"] = json.dumps(manifest).encode()
    entries["repositories"] = json.dumps(repositories).encode()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for name, data in sorted(entries.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))


def write_demo_archive(path: Path, scale: int = 1) -> Path:
    with path.open("wb") as out:
        write_docker_save(demo_images(scale), out)
    return path
