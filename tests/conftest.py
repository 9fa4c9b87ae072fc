"""Session fixtures for tests that use real engines and tools.

Real peers are started by the test session itself (never the machine's own services):

* ``engine_kind``: ``docker20`` (Docker 20.10, classic store) unless the test is marked
  ``@both_engine_kinds`` (tests/support/engines.py): then once ``docker20``, once ``docker26``
  (Docker 26, containerd image store). The next fixtures follow it;
* ``source_engine`` / ``dest_engine``: two private engines of that kind (overlay2 where the kernel
  has a working overlayfs, else vfs; no network);
* ``empty_dest_engine``: ``dest_engine`` with every image removed before the test;
* ``second_dest_engine``: a third engine of that kind, not emptied;
* ``test_images``: the standard image set (tests/support/images.py) built in ``source_engine``;
* ``engine20`` / ``engine26``: the source and destination engines of one kind, as a pair;
* ``engine_pool``: all of them; the session starts those its tests need at once, in parallel;
* ``containerd``: a fresh namespace in a private containerd; ``podman``: emptied private storage;
* ``skopeo``; ``sshd_factory``: start throwaway OpenSSH servers; ``registry``: a local registry.

Without root or the tools these tests skip with the reason, except under ``CI=true``, where a
missing prerequisite is a failure: CI must never go green by skipping everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.dockerd import DockerDaemon, EngineKind
from tests.support.engines import (
    EnginePair,
    EnginePool,
    engines_needed,
    missing_reason,
    new_engine,
    storage_report,
)
from tests.support.images import ImageSet
from tests.support.peers import (
    Containerd,
    Podman,
    Registry,
    Skopeo,
    Sshd,
    StandaloneContainerd,
)
from tests.support.require import require, require_tools
from tests.support.service import running
from tests.support.updates import UpdateSite

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
TOOL_FIXTURES = SHARED_DIR / "fixtures" / "tools"
ENGINE_POOL = pytest.StashKey[EnginePool]()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return storage_report()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what runs against Docker 26 ``docker26``, before ``-m`` selects: ``-m "not docker26"``
    leaves that engine kind out (and it is then not even started)."""
    for item in items:
        if any(kind == "docker26" for kind, _role in engines_needed([item])):
            item.add_marker(pytest.mark.docker26)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    pool = terminalreporter.config.stash.get(ENGINE_POOL, None)
    for engine in pool.started() if pool is not None else ():
        terminalreporter.write_line(
            f"engine {engine.name}: {engine.kind}, storage driver {engine.storage_driver}"
        )


@pytest.fixture(scope="session", autouse=True)
def private_layer_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """sealift runs of the session share a layer cache of their own, never the user's (it is on,
    as for users: a layer compressed by one test may be taken from the cache by the next)."""
    root = tmp_path_factory.mktemp("layer-cache")
    previous = os.environ.get("SEALIFT_CACHE_DIR")
    os.environ["SEALIFT_CACHE_DIR"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("SEALIFT_CACHE_DIR", None)
    else:
        os.environ["SEALIFT_CACHE_DIR"] = previous


# --------------------------------------------------------------------------------- fixture data
@pytest.fixture(scope="session")
def tool_fixtures() -> Path:
    """``../shared/fixtures/tools``: archives written by docker, skopeo and podman."""
    if not (TOOL_FIXTURES / "SOURCES.md").exists():
        require(f"shared fixtures not found at {TOOL_FIXTURES}")
    return TOOL_FIXTURES


# ------------------------------------------------------------------------------------- engines
@pytest.fixture(scope="session", autouse=True)
def engine_pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnginePool]:
    """Every engine of the session; those the collected tests use start at once, in parallel."""
    pool = EnginePool(lambda name: tmp_path_factory.mktemp(f"engine-{name}", numbered=True))
    request.config.stash[ENGINE_POOL] = pool
    try:
        pool.prestart(engines_needed(request.session.items))
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(scope="session")
def engine_kind(request: pytest.FixtureRequest) -> EngineKind:
    """``docker20``, or the kind a ``@both_engine_kinds`` test is running with."""
    kind: EngineKind = getattr(request, "param", "docker20")
    return kind


def running_engine(
    name: str, factory: pytest.TempPathFactory, kind: EngineKind = "docker20"
) -> Iterator[DockerDaemon]:
    """Body of a fixture owning an extra engine of ``kind`` called ``name``, stopped afterwards."""
    require(missing_reason(kind))
    yield from running(new_engine(kind, name, factory.mktemp(f"engine-{name}", numbered=True)))


@pytest.fixture(scope="session")
def source_engine(engine_kind: EngineKind, engine_pool: EnginePool) -> DockerDaemon:
    """A private engine of ``engine_kind`` holding ``test_images``."""
    require(missing_reason(engine_kind))
    return engine_pool.engine(engine_kind, "src")


@pytest.fixture(scope="session")
def dest_engine(engine_kind: EngineKind, engine_pool: EnginePool) -> DockerDaemon:
    """A second private engine, the destination of transfers. Not emptied between tests."""
    require(missing_reason(engine_kind))
    return engine_pool.engine(engine_kind, "dst")


@pytest.fixture(scope="session")
def second_dest_engine(engine_kind: EngineKind, engine_pool: EnginePool) -> DockerDaemon:
    """A third private engine of ``engine_kind`` (a second host). Not emptied between tests."""
    require(missing_reason(engine_kind))
    return engine_pool.engine(engine_kind, "dst2")


@pytest.fixture
def empty_dest_engine(dest_engine: DockerDaemon) -> DockerDaemon:
    """``dest_engine`` with no images or containers at all."""
    dest_engine.remove_all_images()
    return dest_engine


@pytest.fixture
def update_site(
    source_engine: DockerDaemon, empty_dest_engine: DockerDaemon, tmp_path: Path
) -> UpdateSite:
    """An empty site (the destination engine) fed by updates saved on the source engine."""
    return UpdateSite(empty_dest_engine, source_engine, tmp_path)


@pytest.fixture(scope="session")
def test_images(source_engine: DockerDaemon, engine_pool: EnginePool) -> ImageSet:
    """The standard images, built in ``source_engine`` (once per session)."""
    return engine_pool.images(source_engine.kind)


def engine_pair(pool: EnginePool, kind: EngineKind) -> EnginePair:
    require(missing_reason(kind))
    return EnginePair(pool.engine(kind, "src"), pool.engine(kind, "dst"))


@pytest.fixture(scope="session")
def engine20(engine_pool: EnginePool) -> EnginePair:
    """The Docker 20.10 source and destination engines."""
    return engine_pair(engine_pool, "docker20")


@pytest.fixture(scope="session")
def engine26(engine_pool: EnginePool) -> EnginePair:
    """The Docker 26 (containerd image store) source and destination engines."""
    return engine_pair(engine_pool, "docker26")


# ---------------------------------------------------------------------------------------- peers
@pytest.fixture(scope="session")
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    require_tools("skopeo")
    return Skopeo(tmp_path_factory.mktemp("skopeo"))


@pytest.fixture(scope="session")
def containerd_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneContainerd]:
    require_tools("containerd", "ctr")
    yield from running(StandaloneContainerd(tmp_path_factory.mktemp("containerd")))


@pytest.fixture
def containerd(containerd_daemon: StandaloneContainerd) -> Iterator[Containerd]:
    """A ``ctr`` client on a fresh namespace of the private containerd."""
    client = containerd_daemon.with_namespace()
    try:
        yield client
    finally:
        client.remove_all()


@pytest.fixture(scope="session")
def podman_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    require_tools("podman")
    podman = Podman(tmp_path_factory.mktemp("podman"))
    try:
        yield podman
    finally:
        podman.close()


@pytest.fixture
def podman(podman_session: Podman) -> Podman:
    """Podman with private, emptied vfs storage."""
    podman_session.remove_all()
    return podman_session


@pytest.fixture
def sshd_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Sshd]]:
    """``start(set_env={...}, **kw) -> Sshd``: throwaway sshd servers, stopped after the test."""
    require_tools("/usr/sbin/sshd", "ssh", "ssh-keygen")
    started: list[Sshd] = []

    def start(set_env: Mapping[str, str] | None = None, **kwargs: str) -> Sshd:
        server = Sshd(tmp_path_factory.mktemp("sshd"), set_env, **kwargs)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Debian's docker-registry on 127.0.0.1 (filesystem storage, no auth, plain HTTP)."""
    require_tools("docker-registry")
    yield from running(Registry(tmp_path_factory.mktemp("registry")))


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SEALIFT_TMPDIR of this test, for the library and the CLI it runs: a test can check that
    nothing is left in it."""
    directory = tmp_path / "spool"
    directory.mkdir()
    monkeypatch.setenv("SEALIFT_TMPDIR", str(directory))
    return directory
