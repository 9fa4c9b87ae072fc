"""Run the sealift CLI as a user would: a subprocess of ``python -m sealift``.

The CLI contract the integration tests rely on:

* errors: exactly one line on stderr starting ``sealift: error: ``, exit code 1;
* usage errors: exit code 2;
* ``load`` prints ``Loaded image: NAME:TAG`` lines on stdout (like ``docker load``);
* ``-H HOST`` or ``DOCKER_HOST`` chooses the engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["ERROR_PREFIX", "SealiftResult", "run_sealift", "run_sealift_pipe", "sealift_env"]

ERROR_PREFIX = "sealift: error: "
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SealiftResult:
    """What one ``sealift`` invocation did."""

    __test__ = False

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes

    def __str__(self) -> str:
        return (
            f"sealift {' '.join(self.args)} -> exit {self.returncode}\n"
            f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"
        )

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def json(self) -> Any:
        """stdout parsed as JSON (for ``--json``)."""
        return json.loads(self.stdout)

    def loaded_refs(self) -> list[str]:
        """The ``NAME:TAG`` of every ``Loaded image: NAME:TAG`` line on stdout."""
        refs = []
        for line in self.stdout.splitlines():
            if line.startswith("Loaded image: "):
                refs.append(line.removeprefix("Loaded image: ").strip())
        return refs

    def assert_ok(self) -> SealiftResult:
        assert self.returncode == 0, str(self)
        return self

    def assert_one_line_error(self, code: int = 1) -> str:
        """Exit ``code`` and exactly one stderr line ``sealift: error: ...``; return that line."""
        assert self.returncode == code, str(self)
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{self}"
        assert lines[0].startswith(ERROR_PREFIX), str(self)
        assert "Traceback" not in self.stderr, str(self)
        return lines[0]


def sealift_env(engine_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for the CLI: no colours, no Docker context surprises."""
    env = dict(engine_env) if engine_env is not None else dict(os.environ)
    env.pop("DOCKER_CONTEXT", None)
    env["NO_COLOR"] = "1"
    env["TERM"] = "dumb"
    env["COLUMNS"] = "200"
    env["PYTHONWARNINGS"] = env.get("PYTHONWARNINGS", "")
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_sealift(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    stdout_path: Path | None = None,
    timeout: float = 600,
    cwd: Path | None = None,
) -> SealiftResult:
    """``python -m sealift ARGS`` with ``env`` (default: os.environ); never raises on failure.

    ``stdout_path`` sends stdout to a file (for ``-o -`` of large archives).
    """
    argv = [str(a) for a in args]
    cmd = [sys.executable, "-m", "sealift", *argv]
    with contextlib.ExitStack() as stack:
        stdout: IO[bytes] | int = (
            stack.enter_context(open(stdout_path, "wb"))
            if stdout_path is not None
            else subprocess.PIPE
        )
        proc = subprocess.run(
            cmd,
            env=sealift_env(env),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
    raw: bytes = proc.stdout or b""  # None when stdout went to ``stdout_path``
    return SealiftResult(
        args=tuple(argv),
        returncode=proc.returncode,
        stdout=raw.decode(errors="replace"),
        stderr=proc.stderr.decode(errors="replace"),
        stdout_bytes=raw,
    )


def _start_sealift(
    args: list[str], stdin: IO[bytes] | int, stderr: IO[bytes], env: Mapping[str, str] | None
) -> subprocess.Popen[bytes]:
    """``python -m sealift ARGS`` started with its stdout on a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "sealift", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=sealift_env(env),
    )


def run_sealift_pipe(
    producer: list[str | os.PathLike[str]],
    consumer: list[str | os.PathLike[str]],
    *,
    producer_env: Mapping[str, str] | None = None,
    consumer_env: Mapping[str, str] | None = None,
    workdir: Path,
    timeout: float = 900,
) -> tuple[SealiftResult, SealiftResult]:
    """``sealift PRODUCER... | sealift CONSUMER...`` through a real OS pipe.

    stderr of both goes to files in ``workdir`` (so progress output can never block the pipe).
    """
    prod_err_path = workdir / "producer.stderr"
    cons_err_path = workdir / "consumer.stderr"
    prod_args = [str(a) for a in producer]
    cons_args = [str(a) for a in consumer]
    with open(prod_err_path, "wb") as prod_err, open(cons_err_path, "wb") as cons_err:
        prod = _start_sealift(prod_args, subprocess.DEVNULL, prod_err, producer_env)
        assert prod.stdout is not None
        try:
            cons = _start_sealift(cons_args, prod.stdout, cons_err, consumer_env)
        finally:
            prod.stdout.close()  # the consumer holds the read end now
        try:
            cons_out, _ = cons.communicate(timeout=timeout)
            prod.wait(timeout=60)
        except subprocess.TimeoutExpired:
            cons.kill()
            prod.kill()
            cons.wait()
            prod.wait()
            raise
    prod_result = SealiftResult(
        tuple(prod_args), prod.returncode, "", prod_err_path.read_text(errors="replace"), b""
    )
    cons_result = SealiftResult(
        tuple(cons_args),
        cons.returncode,
        cons_out.decode(errors="replace"),
        cons_err_path.read_text(errors="replace"),
        cons_out,
    )
    return prod_result, cons_result
