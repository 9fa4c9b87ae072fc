"""Session fixtures for tests that use real engines and tools.

Real peers are started by the test session itself (never the machine's own services):

* ``source_engine`` / ``dest_engine``: two private Docker 20.10 daemons (vfs, no network);
* ``empty_dest_engine``: ``dest_engine`` with every image removed before the test;
* ``test_images``: the standard image set (tests/support/images.py) built in ``source_engine``;
* ``containerd``: a fresh namespace in a private containerd; ``podman``: emptied private storage;
* ``skopeo``; ``sshd_factory``: start throwaway OpenSSH servers; ``registry``: a local registry.

Without root or the tools these tests skip with the reason, except under ``CI=true``, where a
missing prerequisite is a failure: CI must never go green by skipping everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.dockerd import DockerDaemon, missing_engine_reason
from tests.support.images import ImageSet, build_test_images
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

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
TOOL_FIXTURES = SHARED_DIR / "fixtures" / "tools"


# --------------------------------------------------------------------------------- fixture data
@pytest.fixture(scope="session")
def tool_fixtures() -> Path:
    """``../shared/fixtures/tools``: archives written by docker, skopeo and podman."""
    if not (TOOL_FIXTURES / "SOURCES.md").exists():
        require(f"shared fixtures not found at {TOOL_FIXTURES}")
    return TOOL_FIXTURES


# ------------------------------------------------------------------------------------- engines
def running_engine(name: str, factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    """Body of an engine fixture: a private dockerd called ``name``, stopped afterwards."""
    require(missing_engine_reason())
    yield from running(DockerDaemon(name, factory.mktemp(f"engine-{name}", numbered=True)))


@pytest.fixture(scope="session")
def source_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    """A private Docker 20.10 engine holding ``test_images``."""
    yield from running_engine("src", tmp_path_factory)


@pytest.fixture(scope="session")
def dest_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    """A second private engine, the destination of transfers. Not emptied between tests."""
    yield from running_engine("dst", tmp_path_factory)


@pytest.fixture
def empty_dest_engine(dest_engine: DockerDaemon) -> DockerDaemon:
    """``dest_engine`` with no images or containers at all."""
    dest_engine.remove_all_images()
    return dest_engine


@pytest.fixture(scope="session")
def test_images(source_engine: DockerDaemon) -> ImageSet:
    """The standard images, built in ``source_engine`` (once per session)."""
    return build_test_images(source_engine)


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
