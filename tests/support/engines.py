"""The engines of a test session, of both kinds, started in parallel and stopped at its end.

Two engine kinds: ``docker20`` (Debian's Docker 20.10, classic image store, ``dockerd.py``) and
``docker26`` (Debian 13's Docker 26 on the containerd image store, ``docker26.py``). A test runs
against both by taking ``engine_kind`` and being marked ``@both_engine_kinds``; the conftest's
``source_engine`` / ``dest_engine`` / ``test_images`` then follow the kind (``docker20`` if the test
is not parametrized).

An :class:`EnginePool` owns every engine of the session, at most one per (kind, role). When the
session starts it is told which ones the collected tests will use, and starts them all at once in
background threads, the standard images too, while the first tests run; a fixture asking for an
engine waits only for what is still under way. ``stop_all()`` stops them in parallel.
"""

from __future__ import annotations

import atexit
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import pytest

from tests.support.docker26 import Docker26Daemon, docker26_tree, missing_docker26_reason
from tests.support.dockerd import DockerDaemon, EngineKind, missing_engine_reason
from tests.support.images import ImageSet, build_test_images
from tests.support.storage import overlay_mounts_on, storage_driver_for

__all__ = [
    "ENGINE_KINDS",
    "ROLES_OF_FIXTURES",
    "EnginePair",
    "EnginePool",
    "Role",
    "both_engine_kinds",
    "engines_needed",
    "missing_reason",
    "new_engine",
    "storage_report",
]

ENGINE_KINDS: tuple[EngineKind, ...] = get_args(EngineKind)

both_engine_kinds = pytest.mark.parametrize("engine_kind", ENGINE_KINDS, indirect=True)
"""Run the marked test once per engine kind (ids ``docker20``, ``docker26``)."""

Role = Literal["src", "dst", "dst2"]

ROLES_OF_FIXTURES: dict[str, tuple[Role, ...]] = {
    "source_engine": ("src",),
    "test_images": ("src",),
    "dest_engine": ("dst",),
    "empty_dest_engine": ("dst",),
    "second_dest_engine": ("dst2",),
}
"""Which of the session's engines a test needs when it uses one of these fixtures."""

PAIR_FIXTURES: dict[str, EngineKind] = {"engine20": "docker20", "engine26": "docker26"}


@dataclass(frozen=True)
class EnginePair:
    """A source engine (holding the standard images) and a destination engine of one kind."""

    source: DockerDaemon
    dest: DockerDaemon


def missing_reason(kind: EngineKind) -> str | None:
    """Why engines of ``kind`` cannot run here, or None."""
    return missing_engine_reason() if kind == "docker20" else missing_docker26_reason()


def new_engine(kind: EngineKind, name: str, workdir: Path) -> DockerDaemon:
    """An engine of ``kind`` (not started yet)."""
    if kind == "docker26":
        return Docker26Daemon(name, workdir)
    return DockerDaemon(name, workdir)


def engines_needed(items: Iterable[pytest.Item]) -> set[tuple[EngineKind, Role]]:
    """The (kind, role) engines the collected tests ``items`` will use."""
    needed: set[tuple[EngineKind, Role]] = set()
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        kind: EngineKind = params.get("engine_kind", "docker20")
        for fixture, roles in ROLES_OF_FIXTURES.items():
            if fixture in fixtures:
                needed.update((kind, role) for role in roles)
        for fixture, pair_kind in PAIR_FIXTURES.items():
            if fixture in fixtures:
                needed.update({(pair_kind, "src"), (pair_kind, "dst")})
    return needed


class EnginePool:
    """At most one running engine per (kind, role), started in background threads."""

    def __init__(self, make_workdir: Callable[[str], Path]) -> None:
        self._make_workdir = make_workdir
        self._executor = ThreadPoolExecutor(max_workers=6, thread_name_prefix="engine-start")
        self._lock = threading.Lock()
        self._engines: dict[tuple[EngineKind, Role], DockerDaemon] = {}
        self._starts: dict[tuple[EngineKind, Role], Future[DockerDaemon]] = {}
        self._images: dict[EngineKind, Future[ImageSet]] = {}
        self._stopped = False
        atexit.register(self.stop_all)

    def prestart(self, wanted: Iterable[tuple[EngineKind, Role]]) -> None:
        """Start these engines now, in the background (those whose kind can run here), and
        build the standard images in the source engines."""
        for kind, role in sorted(wanted):
            if missing_reason(kind) is None:
                self._start(kind, role)
        for kind, role in sorted(wanted):
            if role == "src" and missing_reason(kind) is None:
                self._build_images(kind)

    def engine(self, kind: EngineKind, role: Role) -> DockerDaemon:
        """The running engine (started now if it was not asked for before)."""
        return self._start(kind, role).result()

    def images(self, kind: EngineKind) -> ImageSet:
        """The standard images in the source engine of ``kind``."""
        return self._build_images(kind).result()

    def started(self) -> list[DockerDaemon]:
        return list(self._engines.values())

    def _start(self, kind: EngineKind, role: Role) -> Future[DockerDaemon]:
        with self._lock:
            key = (kind, role)
            if key not in self._starts:
                name = f"{role}-{kind}"
                engine = new_engine(kind, name, self._make_workdir(name))
                self._engines[key] = engine
                self._starts[key] = self._executor.submit(engine.start)
            return self._starts[key]

    def _build_images(self, kind: EngineKind) -> Future[ImageSet]:
        source = self._start(kind, "src")
        with self._lock:
            if kind not in self._images:
                self._images[kind] = self._executor.submit(
                    lambda: build_test_images(source.result())
                )
            return self._images[kind]

    def stop_all(self) -> None:
        """Stop every engine (in parallel), also those whose start failed or is under way."""
        if self._stopped:
            return
        self._stopped = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        stoppers = [threading.Thread(target=e.stop) for e in self._engines.values()]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()


def storage_report() -> list[str]:
    """What the session's engines will run on, for pytest's report header."""
    reason = missing_engine_reason()
    if reason:
        return [f"engines: unavailable: {reason}"]
    tmp = Path(tempfile.gettempdir())
    driver = storage_driver_for(tmp / "sealift-engine-data")
    why = "overlayfs mounts there" if driver == "overlay2" else "no working overlayfs there"
    lines = [f"engines: docker20 on {driver} under {tmp} ({why})"]
    reason = missing_docker26_reason()
    if reason:
        lines.append(f"engines: docker26 unavailable: {reason}")
    else:
        snapshotter = "overlayfs" if overlay_mounts_on(tmp) else "native"
        lines.append(
            f"engines: docker26 on the containerd store ({snapshotter} snapshotter), "
            f"tree {docker26_tree()}"
        )
    return lines
