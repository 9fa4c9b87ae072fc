"""The standard small test images, built once per session in a private engine.

=========================  ==========================================================  ===========
tag(s)                     what                                                        prints
=========================  ==========================================================  ===========
sealift-test/base:1        FROM scratch; COPY busybox; COPY base.txt; ENTRYPOINT        base text
 (+ :latest)               busybox; CMD cat /base.txt; LABEL
sealift-test/app:1         FROM base:1; COPY app.txt (v1); ENV APP=demo; CMD sh -c      app v1, demo
sealift-test/app:2         like app:1 but its top layer (app.txt) differs               app v2, demo
sealift-test/large:1       FROM base:1; COPY big.bin (~48 MiB: half random, half text)  sha256sum
=========================  ==========================================================  ===========

Built only when asked (:func:`build_edge_images`), for binary deltas:

=========================  ==========================================================  ===========
sealift-test/edge:1        FROM base:1; COPY app/ (data.bin: 768 KiB random, the same   edge v1
                           in both; version.txt)
sealift-test/edge:2        like edge:1 but version.txt differs: the top layers differ   edge v2
                           by one small file, so a patch between them is tiny
=========================  ==========================================================  ===========

app:1, app:2 and large:1 share base's two layers, so "skip what the engine has" can be seen.
Nothing is pulled: the only payload is Debian's static busybox. Built the same way in both engine
kinds; ``id`` is the config digest either way, ``engine_id`` what that engine calls the image.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.dockerd import BUSYBOX, DockerDaemon, build_image

__all__ = [
    "LARGE_RANDOM_BYTES",
    "LARGE_TEXT_BYTES",
    "BuiltImage",
    "ImageSet",
    "build_edge_images",
    "build_test_images",
    "large_payload",
]

LABEL_KEY = "org.example.sealift-test"
BASE_TEXT = "sealift base layer\n"
LARGE_RANDOM_BYTES = 24 * 1024 * 1024
LARGE_TEXT_BYTES = 24 * 1024 * 1024


@dataclass(frozen=True)
class BuiltImage:
    """One image built in the source engine, with what a round trip must preserve."""

    __test__ = False  # not a pytest test class

    repo: str
    tags: tuple[str, ...]
    id: str
    engine_id: str
    diff_ids: tuple[str, ...]
    expected_output: str
    env: tuple[str, ...]
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """The first tag, e.g. ``sealift-test/app:1``."""
        return self.tags[0]

    @property
    def qualified_tags(self) -> tuple[str, ...]:
        """Tags as ``docker.io/...`` names (how ``sealift inspect --json`` reports them)."""
        return tuple(qualify(t) for t in self.tags)


@dataclass(frozen=True)
class ImageSet:
    """The whole standard set; ``all`` lists them in build order."""

    __test__ = False

    base: BuiltImage
    app1: BuiltImage
    app2: BuiltImage
    large: BuiltImage

    @property
    def all(self) -> tuple[BuiltImage, ...]:
        return (self.base, self.app1, self.app2, self.large)

    @property
    def small(self) -> tuple[BuiltImage, ...]:
        return (self.base, self.app1, self.app2)


def qualify(ref: str) -> str:
    """``foo/bar:1`` -> ``docker.io/foo/bar:1``; ``bar:1`` -> ``docker.io/library/bar:1``."""
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return ref
    if not rest:
        return f"docker.io/library/{ref}"
    return f"docker.io/{ref}"


def large_payload() -> bytes:
    """Deterministic ~48 MiB: incompressible random bytes, then very compressible text."""
    rng = random.Random(0x5EA11F7)
    noise = rng.randbytes(LARGE_RANDOM_BYTES)
    line = b"sealift compressible line of text 0123456789 abcdefghijklmnopqrstuvwxyz\n"
    text = (line * (LARGE_TEXT_BYTES // len(line) + 1))[:LARGE_TEXT_BYTES]
    return noise + text


def _describe(daemon: DockerDaemon, repo: str, tags: tuple[str, ...], expected: str) -> BuiltImage:
    info: dict[str, Any] = daemon.inspect(tags[0])
    config: dict[str, Any] = info.get("Config") or {}
    entrypoint = config.get("Entrypoint")
    cmd = config.get("Cmd")
    return BuiltImage(
        repo=repo,
        tags=tags,
        id=daemon.config_digest_of(str(info["Id"])),
        engine_id=str(info["Id"]),
        diff_ids=tuple(info["RootFS"]["Layers"]),
        expected_output=expected,
        env=tuple(config.get("Env") or ()),
        entrypoint=tuple(entrypoint) if entrypoint else None,
        cmd=tuple(cmd) if cmd else None,
        labels=dict(config.get("Labels") or {}),
    )


_CACHE: dict[str, ImageSet] = {}
_BUILDING = threading.Lock()


def build_test_images(daemon: DockerDaemon) -> ImageSet:
    """Build (once per engine and process) the standard set in ``daemon``."""
    # The engine pool may be building them in the background: one build per engine.
    with _BUILDING:
        cached = _CACHE.get(daemon.host)
        if cached is not None and all(daemon.has_image(i.engine_id) for i in cached.all):
            return cached
        images = _build(daemon)
        _CACHE[daemon.host] = images
        return images


def _build(daemon: DockerDaemon) -> ImageSet:
    base_tags = ("sealift-test/base:1", "sealift-test/base:latest")
    build_image(
        daemon,
        base_tags,
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        "COPY base.txt /base.txt\n"
        'ENTRYPOINT ["/bin/busybox"]\n'
        'CMD ["cat", "/base.txt"]\n'
        f'LABEL {LABEL_KEY}="base"\n',
        {"busybox": BUSYBOX, "base.txt": BASE_TEXT.encode()},
    )
    base = _describe(daemon, "sealift-test/base", base_tags, BASE_TEXT)

    apps: list[BuiltImage] = []
    for version in (1, 2):
        tags = (f"sealift-test/app:{version}",)
        build_image(
            daemon,
            tags,
            "FROM sealift-test/base:1\n"
            "COPY app.txt /app.txt\n"
            "ENV APP=demo\n"
            'CMD ["sh", "-c", "cat /app.txt; echo $APP"]\n'
            f'LABEL {LABEL_KEY}="app"\n',
            {"app.txt": f"app v{version}\n".encode()},
        )
        apps.append(_describe(daemon, "sealift-test/app", tags, f"app v{version}\ndemo\n"))

    payload = large_payload()
    digest = hashlib.sha256(payload).hexdigest()
    large_tags = ("sealift-test/large:1",)
    build_image(
        daemon,
        large_tags,
        "FROM sealift-test/base:1\n"
        "COPY big.bin /big.bin\n"
        'CMD ["sha256sum", "/big.bin"]\n'
        f'LABEL {LABEL_KEY}="large"\n',
        {"big.bin": payload},
    )
    large = _describe(daemon, "sealift-test/large", large_tags, f"{digest}  /big.bin\n")

    return ImageSet(base=base, app1=apps[0], app2=apps[1], large=large)


EDGE_DATA_BYTES = 768 * 1024
_EDGE_CACHE: dict[str, tuple[BuiltImage, BuiltImage]] = {}


def build_edge_images(daemon: DockerDaemon) -> tuple[BuiltImage, BuiltImage]:
    """Build (once per engine and process) edge:1 and edge:2 on top of the standard base."""
    cached = _EDGE_CACHE.get(daemon.host)
    if cached is not None and all(daemon.has_image(i.engine_id) for i in cached):
        return cached
    build_test_images(daemon)
    data = random.Random(0xED6E).randbytes(EDGE_DATA_BYTES)
    built = []
    for version in (1, 2):
        tags = (f"sealift-test/edge:{version}",)
        build_image(
            daemon,
            tags,
            "FROM sealift-test/base:1\n"
            "COPY app/ /app/\n"
            'CMD ["cat", "/app/version.txt"]\n'
            f'LABEL {LABEL_KEY}="edge"\n',
            {"app/data.bin": data, "app/version.txt": f"edge v{version}\n".encode()},
        )
        built.append(_describe(daemon, "sealift-test/edge", tags, f"edge v{version}\n"))
    pair = (built[0], built[1])
    _EDGE_CACHE[daemon.host] = pair
    return pair


def write_payload(path: Path) -> Path:
    """Write the large payload to ``path`` (for tests that build their own variants)."""
    path.write_bytes(large_payload())
    return path
