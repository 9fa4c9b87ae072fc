"""``sealift cache ls|prune``, and ``--no-cache`` for the commands that compress layers.

The cache itself is :mod:`sealift.cache`; this module only opens it for a command and shows it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

from sealift.cache import CachedLayer, LayerCache, disabled_by_environment, parse_max
from sealift.errors import UsageError
from sealift.progress import human_size

NO_CACHE = click.option(
    "--no-cache",
    is_flag=True,
    help="Neither take compressed layers from the layer cache nor keep them there "
    "(also SEALIFT_NO_CACHE=1). See `sealift cache`.",
)


@contextmanager
def layer_cache(no_cache: bool) -> Iterator[LayerCache | None]:
    """The layer cache for one command, or None with --no-cache or SEALIFT_NO_CACHE set."""
    if no_cache or disabled_by_environment():
        yield None
        return
    with LayerCache() as cache:
        yield cache


def cache_summary(cache: LayerCache | None) -> dict[str, int] | None:
    """What a command's --json says of the cache: layers taken from it, and layers kept in it."""
    if cache is None:
        return None
    return {"hits": cache.stats.hits, "stored": cache.stats.stored}


@click.group()
def cache() -> None:
    """The cache of compressed layers.

    Every layer sealift compresses (save, convert, copy with --compression) is kept, by its
    uncompressed digest, codec and level, so a repeat save of the same images does not compress
    it again. Each cached blob is checked against its digest before it is used.

    \b
    Where:  SEALIFT_CACHE_DIR, else $XDG_CACHE_HOME/sealift/layers (~/.cache/sealift/layers)
    Bound:  SEALIFT_CACHE_MAX (e.g. 20G; default 10G, or a tenth of the disk if less);
            the least recently used layers go first
    Off:    --no-cache on a command, or SEALIFT_NO_CACHE=1
    """


@cache.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(as_json: bool) -> None:
    """List the cached layers, least recently used first, with the total and the bound."""
    from sealift.cli import errors_to_exit  # cli imports this module first

    with errors_to_exit():
        layer_cache = LayerCache()
        entries = layer_cache.entries()
        total = layer_cache.total_size()
        if as_json:
            report = {
                "directory": str(layer_cache.root),
                "entries": [_entry_record(entry) for entry in entries],
                "total": total,
                "limit": layer_cache.max_bytes,
            }
            click.echo(json.dumps(report, indent=2))
            return
        for entry in entries:
            click.echo(_entry_line(entry))
        click.echo(
            f"{len(entries)} layers, {human_size(total)} of {human_size(layer_cache.max_bytes)} "
            f"in {layer_cache.root}"
        )


@cache.command()
@click.option("--all", "everything", is_flag=True, help="Remove every cached layer.")
@click.option(
    "--max",
    "max_size",
    metavar="SIZE",
    help="Shrink the cache to at most SIZE (e.g. 2G), least recently used layers first.",
)
def prune(everything: bool, max_size: str | None) -> None:
    """Shrink the cache to its bound (SEALIFT_CACHE_MAX), to --max SIZE, or empty it (--all).

    Also removes what interrupted sealift processes left behind.
    """
    from sealift.cli import errors_to_exit  # cli imports this module first

    with errors_to_exit():
        if everything and max_size is not None:
            raise UsageError("--all and --max exclude each other")
        layer_cache = LayerCache()
        if everything:
            freed = layer_cache.clear()
        else:
            bound = parse_max(max_size) if max_size is not None else layer_cache.max_bytes
            freed = layer_cache.evict(bound)
        click.echo(
            f"freed {human_size(freed)}; {human_size(layer_cache.total_size())} left "
            f"in {layer_cache.root}"
        )


def _entry_record(entry: CachedLayer) -> dict[str, object]:
    return {
        "diff_id": str(entry.key.diff_id),
        "codec": entry.key.codec,
        "level": entry.key.level,
        "digest": str(entry.digest),
        "size": entry.size,
        "uncompressed_size": entry.uncompressed_size,
        "last_used": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.last_used)),
    }


def _entry_line(entry: CachedLayer) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
    codec = f"{entry.key.codec}-{entry.key.level}"
    return (
        f"{entry.key.diff_id.short}  {codec:<8} {human_size(entry.size):>9} "
        f"(of {human_size(entry.uncompressed_size)})  {when}"
    )
