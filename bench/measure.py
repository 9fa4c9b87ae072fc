"""Run one timed command and measure its wall time and the memory of its process tree.

Method (also in bench/README.md):

* The command is one ``bash -o pipefail -c SCRIPT`` started in its own session; wall time is
  ``time.perf_counter()`` from just before ``Popen`` to the return of ``os.wait4``.
* A sampler thread walks the tree every ``SAMPLE_INTERVAL`` seconds through
  ``/proc/PID/task/*/children`` and reads ``VmRSS`` and ``VmHWM`` from ``/proc/PID/status``.
  ``peak_rss_tree`` is the largest *sum* of VmRSS over one sample (sampled, so a spike shorter
  than the interval can be missed); ``peak_rss_proc`` is the largest single-process high-water
  mark, taken from both the sampled VmHWM (exact per process, as long as the process was seen
  once) and ``ru_maxrss`` of ``os.wait4`` on the bash root (the kernel's exact maximum over the
  root and every descendant it reaped). ``peak_rss_sealift`` is the largest VmHWM of any
  ``python ... sealift`` process in the tree: the number the 150 MB target is checked against.
* The engines (dockerd + its containerd) are not in the tree: for the docker contenders most of
  the work happens there. Their summed VmRSS is sampled too and kept in the JSON as
  ``engine_peak_rss`` for context.
* CPU seconds, less sensitive than wall time to other work on the machine: ``cpu_tree`` is
  user+system time of the tree from ``wait4``'s rusage; ``cpu_engine`` is the growth of
  utime+stime+cutime+cstime of each engine's long-lived processes (``/proc/PID/stat``: dockerd
  and the containerd it started) over the trial, which covers the engine's own work and its
  reaped helpers (e.g. ``docker-untar``). On the containerd image store, containerd is where
  layers are unpacked, so leaving it out would hide most of the engine's work there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_INTERVAL = 0.05
_KIB = 1024


@dataclass
class Measurement:
    """What one trial measured. Sizes are bytes, times seconds."""

    wall: float
    returncode: int
    peak_rss_tree: int = 0
    peak_rss_proc: int = 0
    peak_rss_sealift: int | None = None
    engine_peak_rss: int = 0
    cpu_tree: float = 0.0
    cpu_engine: float = 0.0
    cpu_engines: list[float] = field(default_factory=list)  # per engine, same order
    stderr_tail: str = ""
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def children(pid: int) -> list[int]:
    """The live children of ``pid`` (of all its threads)."""
    kids: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return kids
    for task in tasks:
        try:
            kids.extend(int(k) for k in (task / "children").read_text().split())
        except OSError:
            continue
    return kids


def tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    found = [root]
    todo = [root]
    while todo:
        for kid in children(todo.pop()):
            if kid not in found:
                found.append(kid)
                todo.append(kid)
    return found


def _status(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in bytes, or None if gone / a zombie / a kernel thread."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    rss = hwm = -1
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * _KIB
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * _KIB
    if rss < 0 or hwm < 0:
        return None
    return rss, hwm


def _is_sealift(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not argv or not Path(argv[0].decode(errors="replace")).name.startswith("python"):
        return False
    return any(b"sealift" in arg for arg in argv[1:])


class _Sampler(threading.Thread):
    def __init__(self, root: int, engine_roots: Iterable[int]) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root = root
        self.engine_roots = list(engine_roots)
        self.stop_event = threading.Event()
        self.peak_tree = 0
        self.peak_proc = 0
        self.peak_sealift: int | None = None
        self.peak_engine = 0
        self.root_is_sealift = False

    def sample(self) -> None:
        total = 0
        for pid in tree(self.root):
            st = _status(pid)
            if st is None:
                continue
            rss, hwm = st
            total += rss
            self.peak_proc = max(self.peak_proc, hwm)
            if _is_sealift(pid):  # the bash root itself never is; exec'd into python it is
                self.peak_sealift = max(self.peak_sealift or 0, hwm)
                self.root_is_sealift |= pid == self.root
        self.peak_tree = max(self.peak_tree, total)
        engine = 0
        for root in self.engine_roots:
            for pid in tree(root):
                st = _status(pid)
                if st is not None:
                    engine += st[0]
        self.peak_engine = max(self.peak_engine, engine)

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(SAMPLE_INTERVAL)


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime+stime+cutime+cstime of ``pids``, in seconds (gone pids count 0)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += sum(int(x) for x in fields[11:15])
    return total / _TICK


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_measured(
    script: str,
    *,
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    timeout: float,
    engines: Sequence[Sequence[int]] = (),
) -> Measurement:
    """Run ``script`` under ``bash -o pipefail``; stdout and stderr go to ``log``.

    ``engines``: per engine, its pids (dockerd first: its tree is sampled for memory); CPU seconds
    are measured per engine, in the same order.
    """
    engine_cpu_before = [cpu_seconds(pids) for pids in engines]
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            ["bash", "-o", "pipefail", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
        sampler = _Sampler(proc.pid, [pids[0] for pids in engines if pids])
        sampler.start()
        timer = threading.Timer(timeout, _kill_group, args=(proc.pid,))
        timer.start()
        try:
            _, status, rusage = os.wait4(proc.pid, 0)
        except BaseException:
            _kill_group(proc.pid)
            with contextlib.suppress(ChildProcessError):
                os.wait4(proc.pid, 0)
            raise
        finally:
            wall = time.perf_counter() - start
            timer.cancel()
            sampler.stop_event.set()
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        # Anything the pipeline left behind in its session (it should leave nothing).
        _kill_group_quietly(proc.pid)
    tail = _tail(log)
    peak_sealift = sampler.peak_sealift
    if sampler.root_is_sealift:  # bash exec'd the lone command: wait4 saw sealift itself
        peak_sealift = max(peak_sealift or 0, rusage.ru_maxrss * _KIB)
    m = Measurement(
        wall=wall,
        returncode=proc.returncode,
        peak_rss_tree=sampler.peak_tree,
        peak_rss_proc=max(sampler.peak_proc, rusage.ru_maxrss * _KIB),
        peak_rss_sealift=peak_sealift,
        engine_peak_rss=sampler.peak_engine,
        cpu_tree=rusage.ru_utime + rusage.ru_stime,
        stderr_tail=tail,
    )
    m.cpu_engines = [
        max(0.0, cpu_seconds(pids) - before)
        for pids, before in zip(engines, engine_cpu_before, strict=True)
    ]
    m.cpu_engine = sum(m.cpu_engines)
    if proc.returncode != 0:
        timed_out = wall >= timeout
        why = f"timed out after {timeout:.0f}s" if timed_out else f"exit {proc.returncode}"
        last = tail.strip().splitlines()[-1] if tail.strip() else ""
        m.error = f"{why}: {last}"[:300]
    return m


def _kill_group_quietly(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace")
