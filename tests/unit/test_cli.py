"""The CLI: every command teaches with --help, usage errors exit 2, and it stays a thin layer."""

from __future__ import annotations

import ast
import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sealift.cli import cli
from sealift.samples import demo_images, write_docker_save
from tests.support.cli import sealift_env

COMMANDS = cli.list_commands(click.Context(cli))
SRC = Path(__file__).resolve().parents[2] / "src" / "sealift"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_a_description(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert len(result.output.splitlines()) > 4


def test_core_commands_exist() -> None:
    assert {"save", "load", "convert", "inspect", "verify"} <= set(COMMANDS)


def test_every_command_is_listed_in_the_help() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    commands = result.output.split("Commands:")[1]
    listed = {line.split()[0] for line in commands.splitlines() if line.startswith("  ")}
    assert {"compose", "push", "pull", "serve", "save", "load"} <= listed <= set(COMMANDS)


def test_starting_the_cli_imports_neither_the_docker_sdk_nor_the_larger_commands() -> None:
    """save and load start without what they do not use (Python start-up is much of a repeat
    save): the docker SDK and requests (engines on a unix socket are asked directly), rich (bars
    only when shown), compose, push/pull and serve, update bundles and deltas."""
    probe = (
        "import sys, sealift.cli, sealift.ends.engine, sealift.transfer; "
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=sealift_env()
    ).stdout.split()
    unwanted = {
        "rich",
        "docker",
        "requests",
        "sealift.cli_compose",
        "sealift.cli_remote",
        "sealift.cli_serve",
        "sealift.update",
        "sealift.delta",
    }
    assert unwanted.isdisjoint(loaded)


def test_unknown_option_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sealift", "convert", "--no-such-option"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_invalid_platform_is_a_usage_error(tmp_path: Path) -> None:
    from sealift.samples import write_demo_archive

    archive = write_demo_archive(tmp_path / "in.tar")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sealift",
            "convert",
            str(archive),
            str(tmp_path / "o.tar"),
            "--platform",
            "linux",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("sealift: error: invalid platform")
    assert not (tmp_path / "o.tar").exists()


def test_missing_input_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sealift", "verify", str(tmp_path / "absent.tar")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("sealift: error: no such file")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_format_code_knows_nothing_of_transports() -> None:
    for path in (SRC / "formats").glob("*.py"):
        imported = _imports(path)
        assert not any(
            name.startswith(("sealift.ends", "sealift.cli", "sealift.remote", "docker", "requests"))
            for name in imported
        ), path


def test_the_cli_does_not_reach_into_format_internals() -> None:
    imported = _imports(SRC / "cli.py")
    assert not any(name.startswith("sealift.formats") for name in imported)


@pytest.mark.parametrize(
    ("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_a_stopped_convert_exits_cleanly_and_leaves_nothing(
    stop: signal.Signals, code: int, tmp_path: Path
) -> None:
    """Ctrl-C, SIGTERM or SIGHUP while half an archive has arrived on stdin: one line, the
    shell's exit code, no output file, no spool left, and no interpreter abort at exit."""
    archive = io.BytesIO()
    write_docker_save(demo_images(), archive)
    spool, out = tmp_path / "spool", tmp_path / "out.tar"
    spool.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealift", "convert", "-", str(out)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**sealift_env(), "SEALIFT_TMPDIR": str(spool)},
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(archive.getvalue()[: len(archive.getvalue()) // 2])
    proc.stdin.flush()
    time.sleep(1.5)  # the half has been read; the reader now waits for more
    proc.send_signal(stop)
    try:
        _, raw_stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stderr = raw_stderr.decode()
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines() == [f"sealift: error: {_stop_message(stop)}"]
    assert not out.exists()
    assert list(spool.iterdir()) == []


def _stop_message(stop: signal.Signals) -> str:
    return "interrupted" if stop == signal.SIGINT else f"stopped by {stop.name}"


@pytest.mark.parametrize("command", ["convert", "push"])
def test_a_level_out_of_range_is_a_usage_error_before_any_work(
    command: str, tmp_path: Path
) -> None:
    archive = tmp_path / "in.tar"
    with archive.open("wb") as out:
        write_docker_save(demo_images(), out)
    args = {
        "convert": ["convert", str(archive), str(tmp_path / "out.tar"), "--compression", "gzip"],
        "push": ["push", "sample/app:1.0", "ssh://nohost.invalid"],
    }[command]
    result = subprocess.run(
        [sys.executable, "-m", "sealift", *args, "--level", "99"],
        capture_output=True,
        env=sealift_env(),
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == [
        f"sealift: error: {'gzip' if command == 'convert' else 'zstd'} has no level 99: "
        + ("choose 0-9" if command == "convert" else "choose 1-22, or below 0 to go faster")
    ]
    assert not (tmp_path / "out.tar").exists()
