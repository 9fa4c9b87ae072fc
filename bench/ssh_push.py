"""Update rows over SSH: ``docker save | ssh | docker load`` vs ``sealift push``, both modes, and
with the agent with and without binary deltas (``--no-delta``).

Two throwaway sshd on 127.0.0.1 reach the destination engine: one with sealift on the PATH
(mode 1, the agent), one with only docker (mode 2, a thin archive into ``docker load``). ssh goes
through tests/support/ssh_relay.py as ProxyCommand, which rate-limits each direction to the
bench's link (``--link``, pv's notation) and counts the bytes that really cross, handshakes
included. The servers start on first use and stop when the bench exits.
"""

from __future__ import annotations

import atexit
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.contenders import (
    SSH_PIPE,
    UPDATE_BASE,
    Contender,
    Ctx,
    _dst_has_only_from,
    _verify_loaded,
    link_rate,
)
from bench.engines import UPDATE_TO
from bench.measure import Measurement
from tests.support.peers import Sshd
from tests.support.ssh_relay import relay_command, total_bytes

_HOSTS: dict[tuple[str, str], Sshd] = {}


def _host(ctx: Ctx, kind: str) -> Sshd:
    """The sshd for ``kind`` (agent or docker) in front of ``ctx``'s destination engine, started
    on first use."""
    if (ctx.dst.host, kind) in _HOSTS:
        return _HOSTS[ctx.dst.host, kind]
    root = Path(tempfile.mkdtemp(prefix=f"sealift-bench-ssh-{ctx.kind}-{kind}-"))
    bin_dir = root / "bin"
    ctx.dst.write_client_wrapper(bin_dir)
    path = str(bin_dir)
    if kind == "agent":
        sealift = bin_dir / "sealift"
        sealift.write_text(
            f"#!/bin/sh\nPYTHONPATH={shlex.quote(ctx.pythonpath)} "
            f'exec {shlex.quote(ctx.python)} -m sealift "$@"\n'
        )
        sealift.chmod(0o755)
        path = f"{bin_dir}:/usr/bin:/bin"
    env = {
        "PATH": path,
        # the login shell's ~/.bashrc may put pyenv's shims (an installed sealift) first
        "PYTHONPATH": ctx.pythonpath,
        "DOCKER_HOST": ctx.dst.host,
        "DOCKER_CONFIG": str(ctx.dst.client_config_dir),
        "XDG_CACHE_HOME": str(root / "cache"),
    }
    server = Sshd(root / "sshd", env, alias=f"bench-{ctx.kind}-{kind}")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    atexit.register(server.stop)
    server.start()
    _HOSTS[ctx.dst.host, kind] = server
    return server


def _ssh_config(ctx: Ctx, server: Sshd, count: Path) -> Path:
    lines = server.ssh_config.read_text().splitlines()
    proxy = relay_command(count, rate=link_rate(ctx.link))
    config = count.with_suffix(".ssh_config")
    config.write_text("\n".join([lines[0], f"  ProxyCommand {proxy}", *lines[1:]]) + "\n")
    return config


def _count_file(ctx: Ctx, name: str) -> Path:
    return ctx.work / f"update-{name}.wire"


def _prepare(kind: str, name: str) -> Callable[[Ctx], dict[str, object]]:
    def prepare(ctx: Ctx) -> dict[str, object]:
        facts = _dst_has_only_from(ctx)
        _host(ctx, kind)
        _count_file(ctx, name).unlink(missing_ok=True)
        return facts

    return prepare


def _after(name: str) -> Callable[[Ctx, Measurement], None]:
    def after(ctx: Ctx, m: Measurement) -> None:
        m.extra["bytes"] = total_bytes(_count_file(ctx, name))
        _verify_loaded(ctx, m, (UPDATE_TO,))

    return after


def _row(name: str, tool: str, kind: str, command: str, *args: str) -> Contender:
    """One update row; ``args`` are extra ``sealift push`` options (they name its count file)."""
    key = "-".join((tool, kind, *(a.strip("-") for a in args)))

    def script(ctx: Ctx) -> str:
        server = _host(ctx, kind)
        config = _ssh_config(ctx, server, _count_file(ctx, key))
        ssh = f"ssh -F {shlex.quote(str(config))}"
        if command == "pipe":
            return f"{ctx.docker} save {UPDATE_TO} | {ssh} {server.alias} docker load -q"
        push = ctx.sealift("push", UPDATE_TO, f"ssh://{server.alias}", "--parallel", "1", *args)
        return f"SEALIFT_SSH_COMMAND={shlex.quote(ssh)} {push}"

    return Contender(
        "update",
        name,
        tool,
        UPDATE_BASE,
        script,
        prepare=_prepare(kind, key),
        after=_after(key),
        note="over ssh through a rate-limited relay; bytes = both directions on the wire",
    )


def push_contenders() -> list[Contender]:
    return [
        _row(SSH_PIPE, "docker", "docker", "pipe"),
        _row("sealift push (sealift on the remote)", "sealift", "agent", "push"),
        _row("sealift push --no-delta (agent)", "sealift", "agent", "push", "--no-delta"),
        _row("sealift push (only docker on the remote)", "sealift", "docker", "push"),
    ]


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(c.name for c in push_contenders()), file=sys.stderr)
