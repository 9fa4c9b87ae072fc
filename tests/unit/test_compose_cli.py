"""``sealift compose``: help for each subcommand, and errors found before any engine is asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sealift.cli import cli
from sealift.compose.commands import save_name
from sealift.compose.v1 import for_compose_v1
from tests.support.cli import run_sealift

NO_ENGINE = "unix:///nonexistent/sealift-no-engine.sock"


@pytest.mark.parametrize("command", ["save", "load"])
def test_compose_subcommands_have_help(command: str) -> None:
    result = CliRunner().invoke(cli, ["compose", command, "--help"])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) > 6


def test_a_service_that_only_builds_fails_before_the_engine_is_asked(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  api:\n    build: .\n")
    result = run_sealift("compose", "save", "-H", NO_ENGINE, "-o", tmp_path / "x.tar", cwd=tmp_path)
    line = result.assert_one_line_error(2)
    assert "service 'api' is built (build:) but names no image" in line
    assert not (tmp_path / "x.tar").exists()


def test_a_missing_required_variable_is_one_usage_error(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  a:\n    image: ${IMAGE:?name it}\n")
    result = run_sealift("compose", "save", "-H", NO_ENGINE, "-o", "x.tar", cwd=tmp_path)
    assert "required variable IMAGE is missing a value: name it" in result.assert_one_line_error(2)


def test_an_unreachable_engine_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  a:\n    image: a:1\n")
    result = run_sealift("compose", "save", "-H", NO_ENGINE, "-o", "x.tar", cwd=tmp_path)
    assert "cannot connect to the Docker engine" in result.assert_one_line_error()


def test_a_file_that_is_no_bundle_is_named(tmp_path: Path) -> None:
    result = run_sealift("compose", "load", tmp_path / "missing.tar", "-H", NO_ENGINE)
    assert "no such file" in result.assert_one_line_error()


def test_the_v1_form_writes_short_ports_and_binds_and_drops_what_v1_refuses() -> None:
    model: dict[str, Any] = {
        "name": "shop",
        "services": {
            "web": {
                "image": "w",
                "depends_on": {"db": {"condition": "service_started", "required": True}},
                "ports": [
                    {"mode": "ingress", "host_ip": "127.0.0.1", "target": 80, "published": "8080",
                     "protocol": "tcp"},
                    {"mode": "ingress", "target": 9000, "protocol": "udp"},
                ],
                "volumes": [
                    {"type": "bind", "source": "/srv", "target": "/d", "read_only": True,
                     "bind": {"create_host_path": True, "selinux": "z"}},
                    {"type": "volume", "source": "v", "target": "/v", "volume": {}},
                ],
                "extra_hosts": ["db=10.0.0.2"],
            }
        },
    }  # fmt: skip
    web = for_compose_v1(model)["services"]["web"]
    assert "name" not in for_compose_v1(model)
    assert web["depends_on"] == {"db": {"condition": "service_started"}}
    assert web["ports"] == ["127.0.0.1:8080:80/tcp", "9000/udp"]
    assert web["volumes"] == [
        "/srv:/d:ro,z",
        {"type": "volume", "source": "v", "target": "/v", "volume": {}},
    ]
    assert web["extra_hosts"] == ["db:10.0.0.2"]
    assert model["services"]["web"]["extra_hosts"] == ["db=10.0.0.2"]  # the input is not changed


@pytest.mark.parametrize(
    ("image", "saved"),
    [
        ("busybox", "busybox:latest"),
        ("shop/web:1", "shop/web:1"),
        ("localhost:5000/web", "localhost:5000/web:latest"),
        ("web@sha256:" + "a" * 64, "web@sha256:" + "a" * 64),
        ("sha256:" + "b" * 64, "sha256:" + "b" * 64),
    ],
)
def test_a_bare_image_name_is_saved_as_latest_only(image: str, saved: str) -> None:
    assert save_name(image) == saved


def test_inventory_json_to_stdout_is_refused_as_the_inventory_itself_is_json() -> None:
    result = run_sealift("inventory", "-H", NO_ENGINE, "--json")
    assert "--json needs -o FILE" in result.assert_one_line_error(2)
