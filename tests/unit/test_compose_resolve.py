"""Resolving compose files in process: which files, which variables, which services, what form.

That the result equals what the real ``docker compose config`` prints is proven in
tests/integration/test_compose_config.py; these tests pin the rules without the tool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sealift.compose import yamlio
from sealift.compose.canonical import byte_size, go_duration
from sealift.compose.commands import service_images
from sealift.compose.resolve import ComposeOptions, Project, resolve
from sealift.errors import UsageError


def project_dir(tmp_path: Path, files: dict[str, str], name: str = "shop") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    for relative, text in files.items():
        (directory / relative).write_text(text)
    return directory


def resolved(directory: Path, environ: dict[str, str] | None = None, **options: Any) -> Project:
    return resolve(ComposeOptions(working_dir=directory, environ=environ or {}, **options))


BASE = """
services:
  web:
    image: shop/web:${TAG:-1}
    command: sleep 3600
    network_mode: none
  db:
    image: shop/db:1
    profiles: [storage]
"""


def test_default_files_are_compose_yaml_and_its_override(tmp_path: Path) -> None:
    directory = project_dir(
        tmp_path,
        {
            "compose.yaml": BASE,
            "compose.override.yaml": "services:\n  web:\n    environment: [MODE=dev]\n",
        },
    )
    project = resolved(directory)
    assert project.files == (directory / "compose.yaml", directory / "compose.override.yaml")
    assert project.services["web"]["environment"] == {"MODE": "dev"}
    assert project.services["web"]["command"] == ["sleep", "3600"]


def test_files_are_found_from_a_subdirectory(tmp_path: Path) -> None:
    directory = project_dir(tmp_path, {"compose.yaml": BASE})
    (directory / "sub").mkdir()
    assert resolved(directory / "sub").name == "shop"


def test_dotenv_feeds_interpolation_and_the_process_environment_wins(tmp_path: Path) -> None:
    directory = project_dir(tmp_path, {"compose.yaml": BASE, ".env": "TAG=2\n"})
    assert resolved(directory).services["web"]["image"] == "shop/web:2"
    assert resolved(directory, {"TAG": "3"}).services["web"]["image"] == "shop/web:3"


def test_env_files_replace_the_project_dotenv(tmp_path: Path) -> None:
    directory = project_dir(
        tmp_path, {"compose.yaml": BASE, ".env": "TAG=2\n", "prod.env": "TAG=9\n"}
    )
    project = resolved(directory, env_files=("prod.env",))
    assert project.services["web"]["image"] == "shop/web:9"


def test_compose_file_and_compose_profiles_come_from_the_environment(tmp_path: Path) -> None:
    directory = project_dir(tmp_path, {"one.yaml": BASE})
    environ = {"COMPOSE_FILE": "one.yaml", "COMPOSE_PROFILES": "storage, other"}
    project = resolved(directory, environ)
    assert set(project.services) == {"web", "db"}
    assert project.profiles == ["storage"]


def test_profiles_drop_services_unless_enabled(tmp_path: Path) -> None:
    directory = project_dir(tmp_path, {"compose.yaml": BASE})
    assert set(resolved(directory).services) == {"web"}
    assert set(resolved(directory, profiles=("storage",)).services) == {"web", "db"}
    assert set(resolved(directory, profiles=("*",)).services) == {"web", "db"}


def test_a_service_depending_on_a_disabled_one_is_an_error(tmp_path: Path) -> None:
    text = BASE.replace("command:", "depends_on: [db]\n    command:")
    directory = project_dir(tmp_path, {"compose.yaml": text})
    with pytest.raises(UsageError, match=r"'web' depends on service 'db'.*inactive profile"):
        resolved(directory)


def test_the_project_name_comes_from_flag_env_file_then_directory(tmp_path: Path) -> None:
    directory = project_dir(tmp_path, {"compose.yaml": "name: Named_Shop\n" + BASE}, "My.Dir")
    assert resolved(directory).name == "named_shop"
    assert resolved(directory, {"COMPOSE_PROJECT_NAME": "fromenv"}).name == "fromenv"
    assert resolved(directory, project_name="flag").name == "flag"
    (directory / "compose.yaml").write_text(BASE)
    assert resolved(directory).name == "mydir"
    with pytest.raises(UsageError, match="invalid project name"):
        resolved(directory, project_name="Bad Name")


def test_merging_overrides_scalars_merges_maps_and_replaces_volumes_by_target(
    tmp_path: Path,
) -> None:
    base = """
services:
  web:
    image: shop/web:1
    command: [a, b]
    labels: [one=1, two=2]
    volumes: ["./data:/data", "cache:/cache"]
    dns: 8.8.8.8
volumes:
  cache: {}
"""
    override = """
services:
  web:
    command: c
    labels: {two: "22"}
    volumes: ["/srv:/data:ro"]
    dns: [1.1.1.1]
"""
    directory = project_dir(tmp_path, {"a.yaml": base, "b.yaml": override})
    web = resolved(directory, files=("a.yaml", "b.yaml")).services["web"]
    assert web["command"] == ["c"]
    assert web["labels"] == {"one": "1", "two": "22"}
    assert web["dns"] == ["8.8.8.8", "1.1.1.1"]
    assert web["volumes"] == [
        {
            "type": "bind",
            "source": "/srv",
            "target": "/data",
            "read_only": True,
            "bind": {"create_host_path": True},
        },
        {"type": "volume", "source": "cache", "target": "/cache", "volume": {}},
    ]


def test_networks_and_volumes_are_named_after_the_project(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: w\n    volumes: [data:/d]\nvolumes:\n  data:\n"
    model = resolved(project_dir(tmp_path, {"compose.yaml": text})).model
    assert model["services"]["web"]["networks"] == {"default": None}
    assert model["networks"] == {"default": {"name": "shop_default"}}
    assert model["volumes"] == {"data": {"name": "shop_data"}}


def test_ports_are_written_in_long_syntax(tmp_path: Path) -> None:
    text = (
        "services:\n  web:\n    image: w\n"
        '    ports: ["127.0.0.1:80:8080/udp", "3000-3001:4000-4001", 9000]\n'
    )
    ports = resolved(project_dir(tmp_path, {"compose.yaml": text})).services["web"]["ports"]
    assert ports == [
        {
            "mode": "ingress",
            "host_ip": "127.0.0.1",
            "target": 8080,
            "published": "80",
            "protocol": "udp",
        },
        {"mode": "ingress", "target": 4000, "published": "3000", "protocol": "tcp"},
        {"mode": "ingress", "target": 4001, "published": "3001", "protocol": "tcp"},
        {"mode": "ingress", "target": 9000, "protocol": "tcp"},
    ]


def test_environment_takes_env_files_and_unset_names_from_the_process(tmp_path: Path) -> None:
    text = (
        "services:\n  web:\n    image: w\n"
        "    env_file: app.env\n    environment: [FROM_SHELL, B=2]\n"
    )
    directory = project_dir(tmp_path, {"compose.yaml": text, "app.env": "A=1\nB=1\n"})
    web = resolved(directory, {"FROM_SHELL": "x"}).services["web"]
    assert web["environment"] == {"A": "1", "B": "2", "FROM_SHELL": "x"}
    assert "env_file" not in web


def test_plain_scalars_are_read_as_yaml_1_2(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: w\n    labels:\n      on: yes\n      n: 010\n"
    labels = resolved(project_dir(tmp_path, {"compose.yaml": text})).services["web"]["labels"]
    assert labels == {"on": "yes", "n": "10"}


def test_the_output_escapes_dollars_so_it_resolves_to_itself(tmp_path: Path) -> None:
    text = "services:\n  web:\n    image: w\n    environment: [PRICE=$$5]\n"
    directory = project_dir(tmp_path, {"compose.yaml": text})
    project = resolved(directory)
    assert project.services["web"]["environment"] == {"PRICE": "$5"}
    (directory / "compose.yaml").write_text(project.to_yaml())
    again = resolved(directory)
    assert again.model == project.model
    assert yamlio.load(project.to_yaml(), "x")["services"]["web"]["environment"] == {"PRICE": "$$5"}


def test_a_service_that_only_builds_is_named_with_what_to_do(tmp_path: Path) -> None:
    text = "services:\n  api:\n    build: ./api\n  web:\n    image: w\n"
    project = resolved(project_dir(tmp_path, {"compose.yaml": text}))
    assert project.services["api"]["build"] == {
        "context": str(tmp_path / "shop" / "api"),
        "dockerfile": "Dockerfile",
    }
    with pytest.raises(UsageError, match=r"service 'api' is built .* add `image: NAME:TAG`"):
        service_images(project)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"compose.yaml": "services: [a]\n"}, "services must be a mapping"),
        ({"compose.yaml": "services:\n  a: {}\n"}, "neither an image nor a build"),
        ({"compose.yaml": "services:\n  a: {image: '${X:?set X}'}\n"}, "X is missing a value"),
        ({"compose.yaml": "services: {a: [}\n"}, "is not valid YAML"),
        ({"other.yaml": "services: {}\n"}, "no compose file in"),
        ({"compose.yaml": "include: [a.yaml]\nservices: {}\n"}, "`include:` is not supported"),
    ],
)
def test_bad_projects_are_one_clear_error(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        resolved(project_dir(tmp_path, files))


@pytest.mark.parametrize(
    ("written", "printed"),
    [("10s", "10s"), ("1m", "1m0s"), ("90s", "1m30s"), ("1h", "1h0m0s"), ("500ms", "500ms"),
     ("1.5s", "1.5s"), ("1500us", "1.5ms"), ("2h45m3.5s", "2h45m3.5s"), (30, "30s")],
)  # fmt: skip
def test_durations_are_printed_as_go_prints_them(written: object, printed: str) -> None:
    assert go_duration(written, "test") == printed


@pytest.mark.parametrize(
    ("written", "printed"),
    [("50m", "52428800"), ("1.5k", "1536"), ("1g", "1073741824"), ("10MB", "10485760"),
     (1000, "1000"), ("1000", "1000")],
)  # fmt: skip
def test_byte_sizes_are_printed_in_bytes(written: object, printed: str) -> None:
    assert byte_size(written, "test") == printed


@pytest.mark.parametrize("bad", ["10", "1x", "m1"])
def test_a_bad_duration_is_one_clear_error(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid duration"):
        go_duration(bad, "test")


def test_extends_merges_the_base_under_the_service(tmp_path: Path) -> None:
    text = (
        "services:\n"
        "  base:\n    image: b\n    labels: [a=1]\n    command: run\n"
        "  app:\n    extends: base\n    labels: [b=2]\n"
        "  loop1:\n    extends: loop2\n  loop2:\n    extends: loop1\n"
    )
    directory = project_dir(tmp_path, {"compose.yaml": text})
    with pytest.raises(UsageError, match="extend each other in a cycle: loop1 -> loop2 -> loop1"):
        resolved(directory)
    (directory / "compose.yaml").write_text(text.split("  loop1")[0])
    app = resolved(directory).services["app"]
    assert app["labels"] == {"a": "1", "b": "2"}
    assert app["command"] == ["run"]
    assert app["image"] == "b"


def test_links_and_shared_namespaces_make_dependencies_and_unused_resources_go(
    tmp_path: Path,
) -> None:
    text = (
        "services:\n"
        "  db:\n    image: d\n    network_mode: none\n"
        "  app:\n    image: a\n    network_mode: service:db\n    links: [db:database]\n"
        "networks:\n  spare: {}\n"
        "volumes:\n  spare: {}\n"
    )
    model = resolved(project_dir(tmp_path, {"compose.yaml": text})).model
    assert model["services"]["app"]["depends_on"] == {
        "db": {"condition": "service_started", "restart": True, "required": True}
    }
    assert "networks" not in model and "volumes" not in model
