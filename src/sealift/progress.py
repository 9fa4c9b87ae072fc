"""Progress on stderr: rich bars when stderr is a terminal, nothing otherwise.

The library reports nothing by itself; commands poll byte counters they already have (bytes read
from the input, bytes written to the output) so progress costs nothing on the data path.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn


def transfer_bars(*extra: ProgressColumn) -> Progress:
    """Bars on stderr showing what moves: name, bar, bytes, rate, ETA (and ``extra`` columns)."""
    # rich is imported only when bars are shown: it is a tenth of sealift's start-up
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        *extra,
        console=Console(stderr=True),
        transient=True,
    )


def enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@contextmanager
def byte_progress(
    description: str,
    poll: Callable[[], int],
    total: int | None,
    *,
    show: bool,
    detail: Callable[[], str | None] | None = None,
) -> Iterator[None]:
    """Show ``poll()`` bytes of ``total`` with rate and ETA while the block runs; ``detail``
    names what is moving right now (the current layer and its size)."""
    if not show:
        yield
        return
    bar = transfer_bars()
    task = bar.add_task(description, total=total)
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(0.2):
            now = detail() if detail is not None else None
            label = f"{description} {now}" if now else description
            bar.update(task, completed=poll(), description=label)

    thread = threading.Thread(target=refresh, daemon=True)
    with bar:
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def human_size(size: int) -> str:
    """``1536`` -> ``1.5 KiB``, as people read sizes."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
