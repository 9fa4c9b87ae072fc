"""``sealift compose save/load`` against the real composes and real engines (issue 13).

* The resolved file equals what compose v2's own ``docker compose config`` prints: Debian 13's
  docker-compose 2.26 from the Debian 13 tree (``SEALIFT_DOCKER26_TREE``, else
  ``/var/cache/sealift-test/docker26-tree``, else ``.../trixie-tmp``), run through the tree's own
  dynamic loader so it sees this host's files at their real paths. Both outputs are parsed as
  YAML 1.2 and compared as data; nothing else is normalised.
* A three-service project saved from one private Docker 20.10 engine, loaded into another with
  ``compose load --up``, started by compose v1 (Debian 12's ``docker-compose`` 1.29) and by
  compose v2, never pulling (``network_mode: none``, images FROM scratch + busybox).
* Plain ``docker load``, ``podman load`` and skopeo read the bundle's images.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealift.compose import yamlio
from sealift.compose.resolve import ComposeOptions, resolve
from sealift.compose.v1 import for_compose_v1
from tests.support.cli import SealiftResult, run_sealift
from tests.support.dockerd import DockerDaemon
from tests.support.images import ImageSet
from tests.support.peers import Podman, Skopeo
from tests.support.require import require, require_tools

pytestmark = pytest.mark.compose

TREE_CANDIDATES = (
    os.environ.get("SEALIFT_DOCKER26_TREE", ""),
    "/var/cache/sealift-test/docker26-tree",
    "/var/cache/sealift-test/trixie-tmp",
)
V2_IN_TREE = "usr/libexec/docker/cli-plugins/docker-compose"
LOADER_IN_TREE = "lib64/ld-linux-x86-64.so.2"
LIBRARIES_IN_TREE = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
V1 = "/usr/bin/docker-compose"

# the project of the issue: web and worker share sealift-test/base's layers, web's tag comes
# from .env through ${TAG:-1}, debug is in a profile, the override file adds to web
COMPOSE_YAML = """\
x-quiet: &quiet
  network_mode: none
  command: sleep 3600
services:
  web:
    <<: *quiet
    image: sealift-test/app:${TAG:-1}
    environment:
      - PRICE=$$5
      - MODE
    labels: [tier=front]
  worker:
    <<: *quiet
    image: sealift-test/app:1
    depends_on: [web]
  debug:
    <<: *quiet
    image: ${BASE_IMAGE-sealift-test/base:1}
    profiles: [debug]
"""
OVERRIDE_YAML = """\
services:
  web:
    environment:
      MODE: ${MODE:?MODE must be set}
    labels:
      tier: edge
      owner: ops
  worker:
    entrypoint: ["/bin/busybox"]
"""
DOTENV = "TAG=2\nMODE=production # set for everyone\n"
SERVICES = {"web", "worker", "debug"}


# ----------------------------------------------------------------------------- the composes
def compose_v2() -> list[str]:
    """Argv that runs compose v2 from the Debian 13 tree on this host's files."""
    for candidate in filter(None, TREE_CANDIDATES):
        tree = Path(candidate).resolve()
        if (tree / V2_IN_TREE).is_file() and (tree / LOADER_IN_TREE).exists():
            libraries = ":".join(str(tree / part) for part in LIBRARIES_IN_TREE)
            loader = str(tree / LOADER_IN_TREE)
            return [loader, "--library-path", libraries, str(tree / V2_IN_TREE)]
    require("no Debian 13 tree with docker-compose v2 (run scripts/install-test-deps)")
    raise AssertionError("unreachable")


def compose_config(directory: Path, *args: str, environ: dict[str, str] | None = None) -> object:
    """What ``docker compose ARGS config`` prints, parsed."""
    env = {"PATH": "/usr/bin:/bin", **(environ or {})}
    done = subprocess.run(
        [*compose_v2(), *args, "config"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return yamlio.load(done.stdout, "docker compose config")


def sealift_config(directory: Path, *args: str, environ: dict[str, str] | None = None) -> object:
    files = tuple(args[i + 1] for i, arg in enumerate(args) if arg == "-f")
    profiles = tuple(args[i + 1] for i, arg in enumerate(args) if arg == "--profile")
    options = ComposeOptions(files, profiles, working_dir=directory, environ=environ or {})
    return yamlio.load(resolve(options).to_yaml(), "sealift")


def write_project(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    return write_project(
        tmp_path / "stack",
        {"compose.yaml": COMPOSE_YAML, "compose.override.yaml": OVERRIDE_YAML, ".env": DOTENV},
    )


# ------------------------------------------------------------------ resolution = compose config
@pytest.mark.parametrize(
    ("args", "environ"),
    [
        ((), {}),
        (("--profile", "debug"), {}),
        ((), {"COMPOSE_PROFILES": "debug", "TAG": "7", "BASE_IMAGE": "b:latest"}),
        (("-f", "compose.yaml", "-f", "compose.override.yaml", "-p", "other"), {"MODE": "x"}),
        (("--env-file", "alt.env"), {}),
        ((), {"COMPOSE_FILE": "compose.yaml", "COMPOSE_PROJECT_NAME": "from_env"}),
    ],
)
def test_the_stack_resolves_as_compose_v2_resolves_it(
    stack: Path, args: tuple[str, ...], environ: dict[str, str]
) -> None:
    (stack / "alt.env").write_text("TAG=3\nMODE=alt\n")
    expected = compose_config(stack, *args, environ=environ)
    project_name = args[args.index("-p") + 1] if "-p" in args else None
    env_files = (args[args.index("--env-file") + 1],) if "--env-file" in args else ()
    plain = tuple(a for a in args if a not in ("-p", "other", "--env-file", "alt.env"))
    files = tuple(plain[i + 1] for i, arg in enumerate(plain) if arg == "-f")
    profiles = tuple(plain[i + 1] for i, arg in enumerate(plain) if arg == "--profile")
    options = ComposeOptions(files, profiles, env_files, project_name, None, stack, environ)
    assert yamlio.load(resolve(options).to_yaml(), "sealift") == expected


KITCHEN_SINK = """\
services:
  a:
    image: busybox
    command: ["echo", "$$X", "${Y}"]
    entrypoint: sh -c 'echo hi'
    environment:
      NOVAL:
      EMPTY: ""
      NUM: 3
      BOOL: true
    env_file: [app.env]
    volumes: ["/abs:/x", "./rel:/y:rw", "named:/n:ro", "/anon"]
    ports: ["127.0.0.1:80:8080/udp", "3000-3001:4000-4001", "9000", 9001]
    expose: [80, "90"]
    labels: ["x=1", "y", "on=yes"]
    user: "1000"
    working_dir: /w
    restart: unless-stopped
    healthcheck:
      test: ["CMD", "true"]
      interval: 10s
    tmpfs: /run
    extra_hosts: ["a:1.2.3.4"]
    dns: 8.8.8.8
  b:
    image: busybox:${MISSING:-latest}
    depends_on:
      a:
        condition: service_healthy
    networks: [front]
  c:
    image: busybox
    network_mode: none
    depends_on: [a, b]
    build: ./c
networks:
  front: {}
volumes:
  named: {}
x-extra: {keep: me}
"""
KITCHEN_OVERRIDE = """\
services:
  a:
    command: override
    volumes: ["/other:/x"]
    ports: ["5000:5000"]
    labels: {x: "2"}
    dns: [1.1.1.1]
  b:
    networks:
      back: {}
networks:
  back:
    driver: bridge
"""


RUNTIME_KEYS = """\
services:
  a:
    image: busybox
    mem_limit: 50m
    cpus: 0.5
    shm_size: 64m
    memswap_limit: 1000
    ulimits:
      nofile: 1024
      nproc: {soft: 10, hard: 20}
    deploy:
      resources:
        limits: {memory: 50M, cpus: "0.5"}
        reservations: {memory: 1g}
      replicas: 1
    logging:
      driver: json-file
      options: {max-size: 10m}
    cap_add: [NET_ADMIN]
    devices: ["/dev/null:/dev/x", "/dev/a:/dev/b:r", "/dev/c"]
    sysctls: [net.core.somaxconn=1024]
    secrets: [s1, {source: s2}, {source: s3, target: /x}]
    configs: [c1, {source: c2, target: /c}]
    init: true
    stop_grace_period: 1h
    security_opt: ["no-new-privileges:true"]
    hostname: h
    container_name: cn
    tty: true
    stdin_open: true
    platform: linux/amd64
    pull_policy: never
    read_only: true
    healthcheck:
      test: curl x
      retries: 3
      interval: 90s
      timeout: 500ms
      disable: false
    networks: [ext]
  b:
    image: busybox
    network_mode: "service:a"
    volumes_from: [a, "container:xyz"]
    links: ["a:db"]
    volumes:
      - {type: bind, source: ./data, target: /data}
      - {type: tmpfs, target: /t, tmpfs: {size: 1k}}
      - ext:/e
      - fresh:/f
secrets:
  s1: {file: ./s1.txt}
  s2: {environment: HOME}
  s3: {external: true}
  unused: {file: ./u}
configs:
  c1: {file: ./c1.txt}
  c2: {content: hi}
networks:
  ext: {external: true}
  unused: {}
volumes:
  ext: {external: true, name: realname}
  fresh: {}
  unused: {}
"""
EXTENDS = """\
services:
  b:
    image: busybox
    network_mode: none
    extends:
      file: parts/base.yaml
      service: basic
  c:
    extends: d
    depends_on: [d]
    labels: [own=1]
  d:
    image: busybox
    network_mode: none
    environment: [D=1]
    volumes: [./x:/x]
    ports: ["80:80"]
    labels: [base=1]
"""
EXTENDED_FILE = """\
services:
  basic:
    image: alpine
    command: basic
    volumes: [./fromfile:/f]
    labels: [from=file]
"""
PROJECTS = {
    "service keys and merging": (
        {"compose.yaml": KITCHEN_SINK, "more.yaml": KITCHEN_OVERRIDE, "app.env": "NUM=1\nZ=z\n"},
        ("-f", "compose.yaml", "-f", "more.yaml"),
        {"Y": "yy", "NOVAL": "from-shell"},
    ),
    "runtime keys and resources": ({"compose.yaml": RUNTIME_KEYS}, (), {"HOME": "/root"}),
    "extends": ({"compose.yaml": EXTENDS, "parts/base.yaml": EXTENDED_FILE}, (), {}),
}


@pytest.mark.parametrize("project", sorted(PROJECTS))
def test_projects_resolve_as_compose_v2_resolves_them(tmp_path: Path, project: str) -> None:
    files, args, environ = PROJECTS[project]
    (tmp_path / "p" / "parts").mkdir(parents=True)
    directory = write_project(tmp_path / "p", files)
    assert sealift_config(directory, *args, environ=environ) == compose_config(
        directory, *args, environ=environ
    )


def test_compose_v1_reads_the_v1_form_with_the_same_meaning(tmp_path: Path) -> None:
    require_tools(V1)
    directory = write_project(
        tmp_path / "sink",
        {
            "compose.yaml": KITCHEN_SINK.replace("BOOL: true", 'BOOL: "true"'),  # v1 refuses
            "more.yaml": KITCHEN_OVERRIDE,
            "app.env": "NUM=1\nZ=z\n",
        },
    )
    (directory / "c").mkdir()
    environ = {"Y": "yy", "NOVAL": "from-shell"}
    files = ("compose.yaml", "more.yaml")
    options = ComposeOptions(files, working_dir=directory, environ=environ)
    resolved = yamlio.load(resolve(options).to_yaml(), "sealift")
    (directory / "v1.yaml").write_text(yamlio.dump(for_compose_v1(resolved)))
    ours = compose_v1_config(directory, "-f", "v1.yaml")
    theirs = compose_v1_config(directory, "-f", "compose.yaml", "-f", "more.yaml", environ=environ)
    a, b = ours["services"]["a"], theirs["services"]["a"]
    b["environment"] = {k: str(v) for k, v in b["environment"].items()}  # v1 keeps numbers
    for key in ("environment", "labels", "dns", "tmpfs", "healthcheck", "user", "working_dir"):
        assert a[key] == b[key], key
    assert a["extra_hosts"] == ["a:1.2.3.4"] and b["extra_hosts"] == {"a": "1.2.3.4"}
    assert sorted(map(short_volume, a["volumes"])) == sorted(map(short_volume, b["volumes"]))
    assert ours["services"]["b"]["depends_on"] == theirs["services"]["b"]["depends_on"]


def test_compose_v1_accepts_the_v1_form_of_runtime_keys(tmp_path: Path) -> None:
    require_tools(V1)
    text = RUNTIME_KEYS.replace("{environment: HOME}", "{file: ./s2.txt}")
    text = text.replace("{content: hi}", "{file: ./c2.txt}")
    directory = write_project(tmp_path / "rk", {"compose.yaml": text})
    for name in ("s1.txt", "s2.txt", "c1.txt", "c2.txt"):
        (directory / name).write_text("x")
    resolved = yamlio.load(sealift_yaml(directory), "sealift")
    (directory / "v1.yaml").write_text(yamlio.dump(for_compose_v1(resolved)))
    a = compose_v1_config(directory, "-f", "v1.yaml")["services"]["a"]
    assert a["devices"] == ["/dev/null:/dev/x:rwm", "/dev/a:/dev/b:r", "/dev/c:/dev/c:rwm"]
    assert a["mem_limit"] == "52428800"


def sealift_yaml(directory: Path) -> str:
    return resolve(ComposeOptions(working_dir=directory, environ={})).to_yaml()


def short_volume(volume: str | dict[str, Any]) -> str:
    """v1 prints a named or anonymous volume given in long syntax in long syntax."""
    if isinstance(volume, str):
        return volume
    text = ":".join(filter(None, [volume.get("source"), volume["target"]]))
    return text + (":ro" if volume.get("read_only") else "")


def compose_v1_config(
    directory: Path, *args: str, environ: dict[str, str] | None = None
) -> dict[str, Any]:
    done = subprocess.run(
        [V1, "--project-name", "sink", *args, "config"],
        cwd=directory,
        env={"PATH": "/usr/bin:/bin", **(environ or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    parsed = yamlio.load(done.stdout, "docker-compose config")
    assert isinstance(parsed, dict)
    return parsed


_NAMES = st.sampled_from(["SET", "EMPTY", "UNSET"])
_LITERALS = st.text(alphabet="ab -_./:", max_size=4)


@st.composite
def templates(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["text", "$$", "plain", "braced", "operator"]))
        name = draw(_NAMES)
        if kind == "text":
            parts.append(draw(_LITERALS))
        elif kind == "$$":
            parts.append("$$")
        elif kind == "plain":
            parts.append(f"${name}")
        elif kind == "braced":
            parts.append(f"${{{name}}}")
        else:
            operator = draw(st.sampled_from([":-", "-", ":+", "+"]))
            word = draw(templates(depth + 1)) if depth < 1 else draw(_LITERALS)
            parts.append(f"${{{name}{operator}{word}}}")
    return "x" + "".join(parts)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(template=templates())
def test_interpolation_matches_compose_v2(tmp_path: Path, template: str) -> None:
    text = yamlio.dump({"services": {"s": {"image": "i", "labels": {"t": template}}}})
    directory = write_project(tmp_path / "interp", {"compose.yaml": text})
    environ = {"SET": "v$", "EMPTY": ""}
    ours = sealift_config(directory, environ=environ)
    assert ours == compose_config(directory, environ=environ), template


# ------------------------------------------------------------------------- save, load, --up
def save_stack(engine: DockerDaemon, stack: Path, out: Path, *extra: str) -> SealiftResult:
    return run_sealift("compose", "save", "-H", engine.host, "-q", "-o", out, *extra, cwd=stack)


def bundle_member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"sealift/{name}")
        assert member is not None
        return member.read()


@pytest.fixture
def saved_stack(
    source_engine: DockerDaemon, test_images: ImageSet, stack: Path, tmp_path: Path
) -> Path:
    out = tmp_path / "stack.tar"
    result = save_stack(source_engine, stack, out, "--profile", "debug", "--json").assert_ok()
    summary = result.json()
    assert summary["project"] == "stack"
    assert summary["services"]["web"]["image"] == "sealift-test/app:2"
    assert summary["services"]["web"]["image_id"] == test_images.app2.id
    assert summary["services"]["debug"]["image_id"] == test_images.base.id
    return out


@pytest.fixture
def bin_without_compose_v2(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A PATH on which ``docker compose`` fails (Debian's docker 20.10 has no plugin), so the
    host's compose is docker-compose v1."""
    require_tools(V1)
    yield {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def with_compose_v2_only(tmp_path: Path) -> dict[str, str]:
    """A PATH whose ``docker-compose`` is compose v2 from the Debian 13 tree."""
    bin_dir = tmp_path / "v2bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "docker-compose"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(compose_v2()) + ' "$@"\n')
    wrapper.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}


def compose_ps_running(engine: DockerDaemon, tool: list[str], project_dir: Path) -> set[str]:
    done = subprocess.run(
        [*tool, "ps", "--services", "--filter", "status=running"],
        cwd=project_dir,
        env={**engine.env(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.engine
def test_the_bundle_holds_the_images_and_the_file_compose_config_prints(
    saved_stack: Path, stack: Path, test_images: ImageSet
) -> None:
    resolved = yamlio.load(bundle_member(saved_stack, "compose.yaml"), "bundle")
    assert resolved == compose_config(stack, "--profile", "debug")
    bundle = json.loads(bundle_member(saved_stack, "bundle.json"))
    assert bundle["profiles"] == ["debug"]
    assert {s: d["image_id"] for s, d in bundle["services"].items()} == {
        "web": test_images.app2.id,
        "worker": test_images.app1.id,
        "debug": test_images.base.id,
    }
    report = run_sealift("inspect", saved_stack, "--json").assert_ok().json()
    assert {i["id"] for i in report["images"]} == {
        test_images.app2.id,
        test_images.app1.id,
        test_images.base.id,
    }


@pytest.mark.engine
def test_compose_load_up_runs_the_stack_with_compose_v1(
    saved_stack: Path,
    empty_dest_engine: DockerDaemon,
    test_images: ImageSet,
    bin_without_compose_v2: dict[str, str],
    tmp_path: Path,
) -> None:
    project_dir = tmp_path / "site" / "stack"
    result = run_sealift(
        "compose", "load", saved_stack, "--project-dir", project_dir, "--up",
        "-H", empty_dest_engine.host, "-q", "--json",
        env={**os.environ, **bin_without_compose_v2},
    ).assert_ok()  # fmt: skip
    summary = result.json()
    assert (summary["up"], summary["compose"]) == (True, "docker-compose")
    assert summary["compose_version"].startswith("1.")
    assert summary["layers_skipped"] == 0
    assert compose_ps_running(empty_dest_engine, [V1], project_dir) == SERVICES
    for service, image in (("web", test_images.app2), ("debug", test_images.base)):
        container = empty_dest_engine.docker(
            "ps", "-q", "--filter", f"label=com.docker.compose.service={service}"
        ).stdout.split()
        inspected = json.loads(empty_dest_engine.docker("inspect", *container).stdout)[0]
        assert inspected["Image"] == image.id
        if service == "web":
            assert "PRICE=$5" in inspected["Config"]["Env"]
            assert "MODE=production" in inspected["Config"]["Env"]


@pytest.mark.engine
def test_compose_load_up_runs_the_stack_with_compose_v2(
    saved_stack: Path, empty_dest_engine: DockerDaemon, tmp_path: Path
) -> None:
    path = with_compose_v2_only(tmp_path)
    project_dir = tmp_path / "site" / "stack"
    result = run_sealift(
        "compose", "load", saved_stack, "--project-dir", project_dir, "--up",
        "-H", empty_dest_engine.host, "-q", "--json", env={**os.environ, **path},
    ).assert_ok()  # fmt: skip
    assert result.json()["compose_version"].startswith("2.")
    assert compose_ps_running(empty_dest_engine, compose_v2(), project_dir) == SERVICES


@pytest.mark.engine
def test_a_second_load_sends_nothing_and_keeps_the_project_running(
    saved_stack: Path,
    empty_dest_engine: DockerDaemon,
    bin_without_compose_v2: dict[str, str],
    tmp_path: Path,
) -> None:
    project_dir = tmp_path / "site" / "stack"
    args = ("compose", "load", saved_stack, "--project-dir", project_dir, "--up")
    env = {**os.environ, **bin_without_compose_v2}
    run_sealift(*args, "-H", empty_dest_engine.host, "-q", env=env).assert_ok()
    again = run_sealift(*args, "-H", empty_dest_engine.host, "-q", "--json", env=env)
    assert again.assert_ok().json()["layers_sent"] == 0
    assert compose_ps_running(empty_dest_engine, [V1], project_dir) == SERVICES


@pytest.mark.engine
def test_an_image_id_that_differs_from_the_bundle_runs_nothing(
    saved_stack: Path, empty_dest_engine: DockerDaemon, test_images: ImageSet, tmp_path: Path
) -> None:
    forged = tmp_path / "forged.tar"
    bundle = json.loads(bundle_member(saved_stack, "bundle.json"))
    bundle["services"]["web"]["image_id"] = test_images.app1.id
    replace_member(saved_stack, forged, "sealift/bundle.json", json.dumps(bundle).encode())
    project_dir = tmp_path / "site" / "stack"
    result = run_sealift(
        "compose", "load", forged, "--project-dir", project_dir, "--up",
        "-H", empty_dest_engine.host,
    )  # fmt: skip
    line = result.assert_one_line_error()
    assert "refusing to run the project: service 'web' image sealift-test/app:2 is " in line
    assert not project_dir.exists()
    assert empty_dest_engine.docker("ps", "-a", "-q").stdout.strip() == ""


@pytest.mark.engine
def test_a_tampered_compose_file_is_refused_before_anything_loads(
    saved_stack: Path, empty_dest_engine: DockerDaemon, tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered.tar"
    changed = bundle_member(saved_stack, "compose.yaml").replace(b"3600", b"3601")
    replace_member(saved_stack, tampered, "sealift/compose.yaml", changed)
    result = run_sealift("compose", "load", tampered, "-H", empty_dest_engine.host, "--up")
    assert "compose.yaml does not match its sha256" in result.assert_one_line_error()
    assert empty_dest_engine.image_ids() == []


def replace_member(archive: Path, out: Path, name: str, data: bytes) -> None:
    with tarfile.open(archive) as source, tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for member in source:
            body = source.extractfile(member) if member.isfile() else None
            if member.name == name:
                member.size = len(data)
                body = io.BytesIO(data)
            tar.addfile(member, body)


@pytest.mark.engine
def test_a_service_whose_image_the_engine_lacks_is_named(
    source_engine: DockerDaemon, test_images: ImageSet, stack: Path, tmp_path: Path
) -> None:
    (stack / ".env").write_text("TAG=404\nMODE=m\n")
    line = save_stack(source_engine, stack, tmp_path / "y.tar").assert_one_line_error()
    assert "service 'web' uses image 'sealift-test/app:404'" in line
    assert "never pulls" in line
    assert not (tmp_path / "y.tar").exists()


# -------------------------------------------------------------- other tools read the images
@pytest.mark.engine
def test_plain_docker_load_reads_the_bundle(
    saved_stack: Path, empty_dest_engine: DockerDaemon, test_images: ImageSet
) -> None:
    empty_dest_engine.docker("load", "-i", saved_stack)
    assert empty_dest_engine.tags()["sealift-test/app:2"] == test_images.app2.id
    assert empty_dest_engine.tags()["sealift-test/base:1"] == test_images.base.id


@pytest.mark.engine
@pytest.mark.interop
def test_podman_and_skopeo_read_the_bundle(
    saved_stack: Path, podman: Podman, skopeo: Skopeo, test_images: ImageSet
) -> None:
    podman.load(saved_stack)
    ids = {test_images.app2.id, test_images.app1.id, test_images.base.id}
    assert podman.image_ids() == ids
    tagged = [ident for ref, ident in podman.images().items() if ref.endswith("/app:2")]
    assert tagged == [test_images.app2.id]
    config = skopeo.inspect(f"docker-archive:{saved_stack}:sealift-test/app:1", config=True)
    assert config["rootfs"]["diff_ids"] == list(test_images.app1.diff_ids)
    oci = skopeo.inspect(f"oci-archive:{saved_stack}:sealift-test/base:1", config=True)
    assert oci["rootfs"]["diff_ids"] == list(test_images.base.diff_ids)


# ------------------------------------------------------------- split media and signatures
@pytest.mark.engine
def test_a_split_signed_bundle_loads_from_its_first_part(
    source_engine: DockerDaemon,
    test_images: ImageSet,
    empty_dest_engine: DockerDaemon,
    stack: Path,
    tmp_path: Path,
) -> None:
    require_tools("ssh-keygen")
    out = tmp_path / "parts" / "stack.tar"
    out.parent.mkdir()
    save_stack(source_engine, stack, out, "--split", "1M").assert_ok()
    parts = sorted(out.parent.glob("stack.tar.[0-9]*"))
    assert len(parts) >= 2, parts
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f", key], check=True
    )
    run_sealift("sign", out, "--key", key, "-q").assert_ok()
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'ops namespaces="sealift" {key.with_suffix(".pub").read_text()}')
    project_dir = tmp_path / "site" / "stack"
    result = run_sealift(
        "compose", "load", parts[0], "--project-dir", project_dir,
        "--allowed-signers", allowed, "-H", empty_dest_engine.host, "-q", "--json",
    ).assert_ok()  # fmt: skip
    assert set(result.json()["services"]) == {"web", "worker"}
    assert empty_dest_engine.tags()["sealift-test/app:2"] == test_images.app2.id
    assert (project_dir / "compose.yaml").is_file()


@pytest.mark.engine
def test_an_unsigned_bundle_loads_nothing_where_signatures_are_required(
    saved_stack: Path, empty_dest_engine: DockerDaemon, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("")
    env = {**os.environ, "SEALIFT_ALLOWED_SIGNERS": str(allowed)}
    result = run_sealift(
        "compose", "load", saved_stack, "--project-dir", tmp_path / "site",
        "-H", empty_dest_engine.host, env=env,
    )  # fmt: skip
    assert "SEALIFT_ALLOWED_SIGNERS" in result.assert_one_line_error()
    assert empty_dest_engine.image_ids() == []
    assert not (tmp_path / "site").exists()
