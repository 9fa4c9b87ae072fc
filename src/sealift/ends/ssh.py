"""SSH destinations: ``ssh://[user@]host[:port]``, reached with the system OpenSSH client.

``ssh`` runs as a subprocess with an argument list (never through a local shell), so the user's
``~/.ssh/config``, agent, ProxyJump and known_hosts apply. The client command is ``ssh`` unless
``SEALIFT_SSH_COMMAND`` (or ``--ssh-command``) says otherwise; it is split with :mod:`shlex` like
git's ``GIT_SSH_COMMAND``. With no terminal on stdin, ``BatchMode=yes`` is added so an unknown
host key or a refused key is an error, never a prompt.

Everything that reaches the remote shell is built from fixed words and values that passed strict
checks here, each quoted with :func:`shlex.quote`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from sealift.errors import TransportError, UsageError

SSH_COMMAND_ENV = "SEALIFT_SSH_COMMAND"
SSH_FAILURE = 255
"""The exit status OpenSSH uses for its own failures (connection, host key, authentication)."""

_HOST = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?"
    r"|\[[0-9A-Fa-f:.]+\]"
)
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class SshTarget:
    """A parsed ``ssh://[user@]host[:port]`` destination."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> SshTarget:
        """Parse strictly; raise UsageError for anything that is not a plain user/host/port."""
        if not isinstance(text, str) or not text.startswith("ssh://"):
            raise UsageError(f"not an ssh:// destination: {text!r}")
        rest = text[len("ssh://") :]
        if rest.endswith("/"):
            rest = rest[:-1]
        if not rest or len(rest) > 300 or any(c.isspace() or ord(c) < 32 for c in rest):
            raise UsageError(f"invalid ssh destination {text!r}")
        user: str | None = None
        if "@" in rest:
            user, _, rest = rest.rpartition("@")
            if not _USER.fullmatch(user):
                raise UsageError(f"invalid user name in ssh destination {text!r}")
        port: int | None = None
        if rest.startswith("["):
            host, bracket, tail = rest.partition("]")
            host += bracket
            if tail:
                if not tail.startswith(":") or not _PORT.fullmatch(tail[1:]):
                    raise UsageError(f"invalid port in ssh destination {text!r}")
                port = int(tail[1:])
        else:
            host, colon, port_text = rest.partition(":")
            if colon:
                if not _PORT.fullmatch(port_text):
                    raise UsageError(f"invalid port in ssh destination {text!r}")
                port = int(port_text)
        if not _HOST.fullmatch(host):
            raise UsageError(f"invalid host name in ssh destination {text!r}")
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"invalid port in ssh destination {text!r}")
        return cls(host.strip("[]") if host.startswith("[") else host, user, port)

    @property
    def destination(self) -> str:
        """What ssh gets as its destination argument: ``[user@]host``."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.user}@{host}" if self.user else host
        return f"{text}:{self.port}" if self.port else text


def is_ssh_url(text: str) -> bool:
    return text.startswith("ssh://")


def ssh_command(override: str | None = None) -> list[str]:
    """The ssh client argv prefix: ``override``, else SEALIFT_SSH_COMMAND, else ``ssh``."""
    text = override if override is not None else os.environ.get(SSH_COMMAND_ENV, "")
    if not text.strip():
        return ["ssh"]
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot parse the ssh command {text!r}: {exc}") from exc
    if not words:
        return ["ssh"]
    return words


def remote_command(words: Sequence[str]) -> str:
    """One remote command line with every word quoted for a POSIX shell."""
    return " ".join(shlex.quote(word) for word in words)


_RUNNING: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()
_LOCK = threading.Lock()


def stop_all() -> None:
    """Kill the ssh processes this sealift started that still run (on Ctrl-C)."""
    with _LOCK:
        running = list(_RUNNING)
    for proc in running:
        if proc.poll() is None:
            proc.kill()


class Ssh:
    """Runs commands on one target through the ssh client."""

    def __init__(
        self, target: SshTarget, command: Sequence[str] | None = None, *, batch: bool | None = None
    ) -> None:
        self.target = target
        self.command = list(command) if command is not None else ssh_command()
        self.batch = (not sys.stdin.isatty()) if batch is None else batch

    def argv(self, remote: str) -> list[str]:
        """``ssh [-o BatchMode=yes] [-p PORT] -- DEST REMOTE`` (``remote`` is already quoted)."""
        args = [*self.command]
        if self.batch:
            args += ["-o", "BatchMode=yes"]
        if self.target.port is not None:
            args += ["-p", str(self.target.port)]
        args += ["--", self.target.destination, remote]
        return args

    def popen(self, remote: str) -> subprocess.Popen[bytes]:
        """Start ``remote``; in batch mode ssh gets a session of its own (no terminal to ask
        on), otherwise it keeps the terminal so it can ask for a passphrase or a host key."""
        try:
            proc = subprocess.Popen(
                self.argv(remote),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=self.batch,
            )
        except FileNotFoundError as exc:
            raise TransportError(
                f"cannot run the ssh client {self.command[0]!r}: not found "
                f"(set {SSH_COMMAND_ENV} or --ssh-command)"
            ) from exc
        with _LOCK:
            _RUNNING.add(proc)
        return proc

    def run(
        self, remote: str, *, input: bytes | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``remote`` and return its result; raise TransportError when ssh itself failed."""
        try:
            result = subprocess.run(
                self.argv(remote),
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise TransportError(
                f"cannot run the ssh client {self.command[0]!r}: not found "
                f"(set {SSH_COMMAND_ENV} or --ssh-command)"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise TransportError(f"{self.target}: ssh timed out after {timeout}s") from exc
        if result.returncode == SSH_FAILURE:
            raise TransportError(self.failure(result.stderr))
        return result

    def failure(self, stderr: bytes, code: int | None = SSH_FAILURE) -> str:
        """One line naming the host, with OpenSSH's own words."""
        return f"{self.target}: {last_line(stderr) or f'ssh exited with status {code}'}"


def last_line(stderr: bytes) -> str:
    """The last meaningful line of ssh's stderr (the one that says why)."""
    lines = [
        line.strip()
        for line in stderr.decode(errors="replace").splitlines()
        if line.strip() and not line.startswith("@@@")
    ]
    meaningful = [line for line in lines if not line.startswith(("Warning: Permanently", "**"))]
    chosen = (meaningful or lines or [""])[-1]
    return chosen[:300]
