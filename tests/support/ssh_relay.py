"""A ProxyCommand that relays ssh's bytes to 127.0.0.1 and counts them (and can cut them).

Use in an ssh_config: ``ProxyCommand python3 /path/ssh_relay.py --log FILE [--cut-after N] %h %p``.
Each connection appends one line ``<bytes client->server> <bytes server->client>`` to FILE when it
ends. ``--cut-after N`` drops the connection once N bytes went client->server (a cable pulled),
``--cut-after-down N`` once N bytes went server->client.
``--rate BPS`` limits each direction to BPS bytes per second (a slow link, for benchmarks).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

CHUNK = 64 * 1024


def read_counts(log: Path) -> list[tuple[int, int]]:
    """Every finished connection's (up, down) byte counts."""
    if not log.exists():
        return []
    pairs = []
    for line in log.read_text().splitlines():
        up, down = line.split()
        pairs.append((int(up), int(down)))
    return pairs


def total_bytes(log: Path) -> int:
    """Bytes that crossed in both directions, over every connection logged."""
    return sum(up + down for up, down in read_counts(log))


def relay_command(
    log: Path,
    cut_after: int | None = None,
    rate: int | None = None,
    cut_after_down: int | None = None,
) -> str:
    """The ProxyCommand line for an ssh_config."""
    args = [sys.executable, str(Path(__file__).resolve()), "--log", str(log)]
    if cut_after is not None:
        args += ["--cut-after", str(cut_after)]
    if cut_after_down is not None:
        args += ["--cut-after-down", str(cut_after_down)]
    if rate is not None:
        args += ["--rate", str(rate)]
    return " ".join(args) + " %h %p"


def with_proxy(ssh_config: Path, out: Path, proxy: str) -> Path:
    """A copy of ``ssh_config`` with ``ProxyCommand proxy`` in its Host block."""
    lines = ssh_config.read_text().splitlines()
    result = [lines[0], f"  ProxyCommand {proxy}", *lines[1:]]
    out.write_text("\n".join(result) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--cut-after", type=int)
    parser.add_argument("--cut-after-down", type=int)
    parser.add_argument("--rate", type=int)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    sock = socket.create_connection(("127.0.0.1", args.port))
    counts = [0, 0]
    done = threading.Event()

    def pace(started: float, sent: int) -> None:
        if args.rate:
            ahead = sent / args.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    def upstream() -> None:
        started = time.monotonic()
        try:
            while data := os.read(0, CHUNK):
                if args.cut_after is not None and counts[0] + len(data) >= args.cut_after:
                    keep = max(0, args.cut_after - counts[0])
                    sock.sendall(data[:keep])
                    counts[0] += keep
                    break
                sock.sendall(data)
                counts[0] += len(data)
                pace(started, counts[0])
        except OSError:
            pass
        done.set()

    def downstream() -> None:
        started = time.monotonic()
        try:
            while data := sock.recv(CHUNK):
                cut = args.cut_after_down
                if cut is not None and counts[1] + len(data) >= cut:
                    keep = max(0, cut - counts[1])
                    os.write(1, data[:keep])
                    counts[1] += keep
                    break
                os.write(1, data)
                counts[1] += len(data)
                pace(started, counts[1])
        except OSError:
            pass
        done.set()

    logged = threading.Lock()

    def finish(*_: object) -> None:
        # ssh sends SIGHUP to its ProxyCommand when it is done: count then, too. That signal can
        # land while the main thread is already in here: the connection is logged once.
        if not logged.acquire(blocking=False):
            return
        with open(args.log, "a") as log:
            log.write(f"{counts[0]} {counts[1]}\n")
        os._exit(0)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, finish)
    for target in (upstream, downstream):
        threading.Thread(target=target, daemon=True).start()
    while not done.wait(0.05):
        pass
    sock.close()
    finish()


if __name__ == "__main__":
    main()
