"""Small process and mount helpers shared by the real-peer fixtures.

Everything here works from ``/proc`` so that it needs no third-party package.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = [
    "descendants",
    "free_port",
    "kill_tree",
    "log_tail",
    "mounts_under",
    "pid_alive",
    "pids_with_cmdline",
    "tmpfs",
    "unmount_under",
    "wait_for",
]


def _ppid_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children first, then their children...)."""
    parents = _ppid_map()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        for child in children.get(current, []):
            found.append(child)
            todo.append(child)
    return found


def pids_with_cmdline(needle: str) -> list[int]:
    """Pids whose command line contains ``needle`` (for daemonised shims)."""
    hits: list[int] = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            hits.append(int(entry.name))
    return hits


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat[stat.rfind(")") + 2 :].split()[0]
    return state != "Z"


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_tree(
    pid: int | None,
    *,
    extra: Iterable[int] = (),
    grace: float = 15.0,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """SIGTERM ``pid``, then its tree and ``extra``; SIGKILL what is left after ``grace``."""
    victims: list[int] = []
    if pid is not None and pid_alive(pid):
        victims = [pid, *descendants(pid)]
    victims.extend(p for p in extra if p not in victims)
    if not victims:
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        return
    # Ask the top process first: dockerd stops its containerd itself and unmounts cleanly.
    _signal_all(victims[:1], signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pid_alive(victims[0]):
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
        else:
            time.sleep(0.1)
    rest = [p for p in victims if pid_alive(p)]
    _signal_all(rest, signal.SIGTERM)
    deadline = time.monotonic() + min(grace, 5.0)
    while time.monotonic() < deadline and any(pid_alive(p) for p in rest):
        time.sleep(0.1)
    _signal_all([p for p in rest if pid_alive(p)], signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below ``root``, deepest first."""
    prefix = str(root.resolve()) if root.exists() else str(root)
    points: list[Path] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape_mountinfo(fields[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(Path(point))
    points.sort(key=lambda p: len(p.parts), reverse=True)
    return points


def unmount_under(root: Path) -> list[Path]:
    """Unmount (lazily if need be) everything mounted at or under ``root``; returns what was."""
    done: list[Path] = []
    for _ in range(5):
        points = mounts_under(root)
        if not points:
            break
        for point in points:
            result = subprocess.run(["umount", str(point)], capture_output=True, check=False)
            if result.returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
            done.append(point)
    return done


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "4m", *, readonly: bool = False) -> Iterator[Path]:
    """Mount a small tmpfs at ``path`` for the duration (root only): a "disk full" or read-only
    target. Unmounted (lazily if busy) and removed afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if readonly else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "sealift-test", str(path)], check=True)
    try:
        yield path
    finally:
        unmount_under(path)
        with contextlib.suppress(OSError):
            path.rmdir()
