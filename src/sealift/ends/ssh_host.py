"""The engine of a remote host over SSH as a source (``ssh://host/IMAGE``) and a sink.

A thin end over :mod:`sealift.remote`: the sink offers the images and sends what the host lacks
(a sealift agent there, or a bare ``docker load`` / ``podman load``); the source fetches the
images from the host's agent into the local staging directory, from which any sink reads them.
"""

from __future__ import annotations

from sealift.digest import Digest
from sealift.ends.base import WriteResult, all_layers
from sealift.ends.ssh import SshTarget
from sealift.errors import SealiftError
from sealift.model import Entry
from sealift.remote.hosts import NoProgress, RemoteOptions, fetch_host, push_host
from sealift.remote.source import EntriesOffer
from sealift.remote.staging import Staging

DEFAULT_OPTIONS = RemoteOptions()


class SshSink:
    """Pushes images to one host; the host says what it lacks during ``write``.

    Layers are read only when the host asks for them, so ``missing_layers`` answers with every
    layer without a round trip: nothing the host has is ever read or sent.
    """

    keeps_blobs = False

    def __init__(self, target: SshTarget, options: RemoteOptions = DEFAULT_OPTIONS) -> None:
        self.target = target
        self.options = options

    def accepts_codec(self, codec: str) -> bool:
        return True  # layers cross as their content, recompressed for the wire

    def missing_layers(self, entries: list[Entry]) -> set[Digest]:
        return all_layers(entries)

    def write(self, entries: list[Entry]) -> WriteResult:
        result = push_host(EntriesOffer(entries), self.target, self.options, NoProgress())
        if not result.ok:
            raise SealiftError(f"push failed: {result.error}")
        names = [str(item["ref"]) for item in result.images if item.get("ref")]
        return WriteResult(
            names=names,
            layers_sent=result.layers_sent,
            layers_skipped=result.layers_skipped,
            bytes_sent=result.bytes_sent,
            details={"host": result.to_json()},
        )


class SshSource:
    """Images from a host's engine (``sealift agent`` there), fetched into local staging: with
    a sealift that speaks protocol 3 there, blobs and manifests as the remote holds them."""

    def __init__(
        self,
        target: SshTarget,
        refs: list[str],
        options: RemoteOptions = DEFAULT_OPTIONS,
        staging: Staging | None = None,
    ) -> None:
        self.target = target
        self.refs = refs
        self.options = options
        self.staging = staging or Staging()
        self._entries: list[Entry] | None = None

    def entries(self, want_codec: str | None = None, want_level: int | None = None) -> list[Entry]:
        if self._entries is None:
            self._entries = fetch_host(self.target, self.refs, self.staging, self.options)
        return self._entries

    def close(self) -> None:
        if self._entries is not None:
            layers = [layer for e in self._entries for i in e.images() for layer in i.layers]
            keys = {layer.diff_id for layer in layers} | {layer.digest for layer in layers}
            self.staging.discard(sorted(keys, key=str))
        self.staging.close()
