"""Names of ends, parsed in one place: ``docker-daemon:app:1``, ``oci:DIR``, ``ssh://host/app:1``...

Every command and library user turns the text a user typed into a source or a sink here, so the
same words mean the same place everywhere. Transport names follow skopeo where skopeo has one:

    docker-daemon:IMAGE[,IMAGE...]     the Docker engine at -H / DOCKER_HOST / the context
    docker-archive:PATH, archive:PATH, oci-archive:PATH, PATH, -
                                       an archive file, or stdin / stdout
    oci:DIR[:REF]                      an OCI image layout directory
    ssh://[user@]host[:port][/IMAGE[,IMAGE...]]
                                       the engine of a remote host, over SSH
    docker://HOST[:PORT]/REPO[:TAG|@DIGEST], docker://HOST[:PORT]/
                                       a registry: one image, or (as a destination) every image
                                       under its own repository path

A bare path is a layout when it is a directory (or, as a destination, ends with ``/``), else an
archive. Adding an end means one module that implements :class:`~sealift.ends.base.Source` and
:class:`~sealift.ends.base.Sink` plus one branch of :func:`parse_end`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sealift.ends.base import Sink, Source
from sealift.ends.ssh import SshTarget
from sealift.errors import UsageError
from sealift.reference import Reference

if TYPE_CHECKING:
    from sealift.registry.options import RegistryOptions
    from sealift.remote.hosts import RemoteOptions

ENGINE = "docker-daemon"
ARCHIVE = "archive"
LAYOUT = "oci"
SSH = "ssh"
REGISTRY = "docker"

_ARCHIVE_PREFIXES = ("docker-archive:", "oci-archive:", "archive:")
_TRANSPORT = re.compile(r"[a-z][a-z0-9-]*:")
_KNOWN = "docker-daemon:, docker-archive:, archive:, oci-archive:, oci:, ssh://, docker://"


@dataclass(frozen=True)
class EndOptions:
    """What opening an end may need besides its name."""

    engine_host: str | None = None
    """The local engine (-H); None: DOCKER_HOST, the docker context, the default socket."""
    ssh_command: tuple[str, ...] | None = None
    platform: str | None = None
    """The platform a remote host picks from a multi-platform image before sending it."""
    keep_layers: bool = True
    """False when only metadata is read (inspect, verify of a stream): layers are not spooled."""
    split: int | None = None
    """An archive destination is written as parts of at most this many bytes."""
    registry: RegistryOptions | None = None
    """Parallelism, chunking, TLS and login for a docker:// end."""


@dataclass(frozen=True)
class End:
    """A parsed end: its kind, where it is, and the images it names (if any)."""

    kind: str
    location: str = ""
    images: tuple[str, ...] = ()
    text: str = field(default="", compare=False)

    @property
    def is_stdio(self) -> bool:
        return self.kind == ARCHIVE and self.location == "-"


def parse_end(text: str, *, as_sink: bool = False) -> End:
    """Parse the name of an end; raise UsageError naming what is wrong."""
    if not text:
        raise UsageError("empty source or destination")
    if text.startswith(f"{ENGINE}:"):
        return End(ENGINE, images=_images(text[len(ENGINE) + 1 :], text), text=text)
    if text.startswith("ssh://"):
        return _ssh_end(text)
    if text.startswith(f"{REGISTRY}://"):
        from sealift.registry.names import parse_docker_reference

        parse_docker_reference(text)
        return End(REGISTRY, text, text=text)
    for prefix in _ARCHIVE_PREFIXES:
        if text.startswith(prefix):
            return End(ARCHIVE, _path(text[len(prefix) :], text), text=text)
    if text.startswith(f"{LAYOUT}:"):
        directory, ref = _layout_parts(_path(text[len(LAYOUT) + 1 :], text))
        return End(LAYOUT, directory, (ref,) if ref else (), text=text)
    if text == "-":
        return End(ARCHIVE, "-", text=text)
    path = Path(text)
    if path.is_dir() or (as_sink and text.endswith("/")):
        return End(LAYOUT, text, text=text)
    transport = _TRANSPORT.match(text)
    if transport and not path.exists() and len(transport.group()) > 2:
        raise UsageError(f"unknown transport {transport.group()!r} in {text!r} (known: {_KNOWN})")
    return End(ARCHIVE, text, text=text)


def _path(rest: str, text: str) -> str:
    if not rest:
        raise UsageError(f"{text!r} names no path")
    return rest


def _layout_parts(rest: str) -> tuple[str, str | None]:
    """``DIR:REF`` -> (DIR, REF) when the part after the last colon is a ref, not a path."""
    directory, colon, ref = rest.rpartition(":")
    if colon and directory and ref and "/" not in ref and not Path(rest).exists():
        return directory, ref
    return rest, None


def _images(text: str, whole: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if name.startswith("-"):
            raise UsageError(f"invalid image reference {name!r} in {whole!r}")
        Reference.parse(name)
    return names


def _ssh_end(text: str) -> End:
    host_part, slash, image_part = text[len("ssh://") :].partition("/")
    target = SshTarget.parse(f"ssh://{host_part}")
    images = _images(image_part, text) if slash else ()
    return End(SSH, f"ssh://{target}", images, text=text)


def open_source(end: End | str, options: EndOptions = EndOptions()) -> Source:
    """The source ``end`` names."""
    end = parse_end(end) if isinstance(end, str) else end
    if end.kind == ENGINE:
        from sealift.ends.engine import Engine, EngineSource

        if not end.images:
            raise UsageError(f"{end.text!r}: name the images to read, e.g. docker-daemon:app:1")
        return EngineSource(Engine(options.engine_host), list(end.images))
    if end.kind == LAYOUT:
        from sealift.ends.layout import LayoutSource

        return LayoutSource(end.location, ref=end.images[0] if end.images else None)
    if end.kind == SSH:
        from sealift.ends.ssh_host import SshSource

        if not end.images:
            raise UsageError(f"{end.text!r}: name the images to read, e.g. ssh://host/app:1")
        return SshSource(_ssh_target(end), list(end.images), _remote(options))
    if end.kind == REGISTRY:
        from sealift.ends.registry import RegistrySource

        return RegistrySource(end.location, options.registry)
    from sealift.ends.archive import ArchiveSource

    return ArchiveSource(end.location, keep_layers=options.keep_layers)


def open_sink(end: End | str, options: EndOptions = EndOptions()) -> Sink:
    """The sink ``end`` names."""
    end = parse_end(end, as_sink=True) if isinstance(end, str) else end
    if options.split is not None and end.kind != ARCHIVE:
        raise UsageError("--split writes archives, not OCI layouts, engines or hosts")
    if end.kind == ENGINE:
        from sealift.ends.engine import Engine, EngineSink

        return EngineSink(Engine(options.engine_host), rename=_single_name(end))
    if end.kind == LAYOUT:
        from sealift.ends.layout import LayoutSink

        return LayoutSink(end.location, ref=end.images[0] if end.images else None)
    if end.kind == SSH:
        from sealift.ends.ssh_host import SshSink

        if end.images:
            raise UsageError(f"{end.text!r}: a destination host takes no image names")
        return SshSink(_ssh_target(end), _remote(options))
    if end.kind == REGISTRY:
        from sealift.ends.registry import RegistrySink

        return RegistrySink(end.location, options.registry)
    from sealift.ends.archive import ArchiveSink

    return ArchiveSink(end.location, split=options.split)


def platform_for(sink: Sink) -> str | None:
    """The platform a sink takes when the user names none: an engine loads its own."""
    from sealift.ends.engine import EngineSink

    if isinstance(sink, EngineSink):
        return f"linux/{sink.engine.version.get('Arch', 'amd64')}"
    return None


def _single_name(end: End) -> Reference | None:
    if not end.images:
        return None
    if len(end.images) > 1:
        raise UsageError(f"{end.text!r}: a destination takes at most one image name")
    return Reference.parse(end.images[0])


def _remote(options: EndOptions) -> RemoteOptions:
    from sealift.remote.hosts import RemoteOptions

    return RemoteOptions(ssh_command=options.ssh_command, platform=options.platform)


def _ssh_target(end: End) -> SshTarget:
    return SshTarget.parse(end.location)
