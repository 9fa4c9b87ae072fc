"""sealift: move container images between hosts without a registry.

The one-line use from Python::

    import sealift
    sealift.copy("archive:stack.tar", "ssh://web1")

Ends are named as on the command line (see :mod:`sealift.ends.open`), or given as
:class:`~sealift.ends.base.Source` / :class:`~sealift.ends.base.Sink` objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sealift.ends.base import Sink, Source, WriteResult
    from sealift.ends.open import EndOptions
    from sealift.transfer import CopyOptions

__all__ = ["__version__", "copy"]


def copy(
    source: str | Source,
    destination: str | Sink,
    options: CopyOptions | None = None,
    *,
    ends: EndOptions | None = None,
) -> WriteResult:
    """Copy images from ``source`` to ``destination``; by default every blob as it is."""
    from sealift.ends.open import EndOptions, open_sink, open_source
    from sealift.transfer import CopyOptions
    from sealift.transfer import copy as copy_images

    end_options = ends or EndOptions()
    opened = open_source(source, end_options) if isinstance(source, str) else source
    try:
        sink = open_sink(destination, end_options) if isinstance(destination, str) else destination
        return copy_images(opened, sink, options or CopyOptions(compression=None))
    finally:
        if isinstance(source, str):
            opened.close()
