"""Read image archives and layouts into the shared model, whatever wrote them.

Formats are detected by content: an OCI image layout (``index.json`` + ``blobs/``), Docker's
``docker save`` format (``manifest.json``), or both at once (Docker 25+, sealift's own archives).
Every JSON document is checked against the shape it claims, and every blob is bound to the digest
that names it; layers are checked lazily, when read, unless they were hashed on arrival.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Collection
from typing import IO, Any

from sealift import compression, media
from sealift.digest import Digest
from sealift.errors import DigestMismatchError, InvalidArchiveError, NotFoundError, UsageError
from sealift.formats.files import Files, Member
from sealift.model import (
    MAX_JSON_SIZE,
    Descriptor,
    Entry,
    Image,
    ImageConfig,
    ImageIndex,
    Index,
    Layer,
    Manifest,
    load_json,
)
from sealift.reference import Reference
from sealift.verify import VerifyingReader, read_small

CONTAINERD_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"
EXTRA_PART = "sealift/"
"""Files a tool stores beside the images (a compose bundle's part); image readers ignore them."""
_MAX_DEPTH = 8
_BLOB_PATH = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_CONFIG_NAME = re.compile(r"(?:sha256:)?([0-9a-f]{64})(?:\.json)?")


def read_entries(
    files: Files, what: str, *, omitted: Collection[Digest] = frozenset()
) -> list[Entry]:
    """Every named image or index ``files`` holds, as the model's entries.

    ``omitted``: layer blobs an update bundle leaves out on purpose (the site holds them); they
    are layers whose bytes cannot be read, never an error by themselves.
    """
    has_index = files.get("index.json") is not None
    has_manifest = files.get("manifest.json") is not None
    if not has_index and not has_manifest:
        raise InvalidArchiveError(
            f"{what} is not an image archive: "
            "it has neither index.json (OCI) nor manifest.json (docker save)"
        )
    entries = _OciReader(files, what, omitted).entries() if has_index else []
    if not entries and has_manifest:
        entries = _DockerSaveReader(files, what).entries()
    if not entries:
        raise InvalidArchiveError(f"{what} holds no images")
    return entries


def read_extra_files(
    files: Files, what: str, *, streamed_dirs: Collection[str] = ()
) -> dict[str, bytes]:
    """The archive's ``sealift/`` part: each file's name relative to it, and its bytes.

    Files under ``streamed_dirs`` (relative to ``sealift/``) are left out: they may be large,
    and their readers stream them with :func:`open_extra_file`.
    """
    prefixes = tuple(EXTRA_PART + directory.rstrip("/") + "/" for directory in streamed_dirs)
    found: dict[str, bytes] = {}
    for name in sorted(files.names()):
        wanted = name.startswith(EXTRA_PART) and not name.startswith(prefixes)
        member = files.get(name) if wanted else None
        if member is not None:
            found[name.removeprefix(EXTRA_PART)] = _member_bytes(member, f"{what}: {name}")
    return found


def open_extra_file(files: Files, name: str) -> IO[bytes] | None:
    """The file ``name`` (relative to ``sealift/``) of the archive, as a stream; None if absent."""
    member = files.get(EXTRA_PART + name)
    return None if member is None else member.open()


def _read_json_member(files: Files, name: str, what: str) -> Any:
    member = files.get(name)
    if member is None:
        raise InvalidArchiveError(f"{what}: {name} is missing")
    with member.open() as stream:
        return load_json(read_small(stream, MAX_JSON_SIZE, f"{what}: {name}"), f"{what}: {name}")


def _member_bytes(member: Member, what: str) -> bytes:
    with member.open() as stream:
        return read_small(stream, MAX_JSON_SIZE, what)


class _OciReader:
    def __init__(self, files: Files, what: str, omitted: Collection[Digest] = ()) -> None:
        self.files = files
        self.what = what
        self.omitted = omitted

    def entries(self) -> list[Entry]:
        layout = self.files.get("oci-layout")
        if layout is not None:
            document = load_json(_member_bytes(layout, "oci-layout"), f"{self.what}: oci-layout")
            if not isinstance(document, dict) or not isinstance(
                document.get("imageLayoutVersion"), str
            ):
                raise InvalidArchiveError(f"{self.what}: oci-layout has no imageLayoutVersion")
        raw = _member_bytes(self._member("index.json"), f"{self.what}: index.json")
        index = Index.parse(raw, media.OCI_INDEX, where=f"{self.what}: index.json")
        entries = []
        for i, descriptor in enumerate(index.manifests):
            target = self._target(descriptor, f"index.json manifests[{i}]", depth=0)
            tags, ref_names = names_from_annotations(descriptor.annotations)
            entries.append(Entry(target, tags, ref_names))
        return entries

    def _member(self, name: str) -> Member:
        member = self.files.get(name)
        if member is None:
            raise InvalidArchiveError(f"{self.what}: {name} is missing")
        return member

    def blob_member(self, digest: Digest, role: str) -> Member:
        if not digest.is_computable():
            raise InvalidArchiveError(f"{self.what}: {role} uses unsupported digest {digest}")
        member = self.files.get(f"blobs/{digest.algorithm}/{digest.encoded}")
        if member is None:
            raise InvalidArchiveError(f"{self.what}: {role} blob {digest} is missing")
        return member

    def small_blob(self, descriptor: Descriptor, role: str) -> bytes:
        member = self.blob_member(descriptor.digest, role)
        if descriptor.size > MAX_JSON_SIZE:
            raise InvalidArchiveError(f"{self.what}: {role} declares {descriptor.size} bytes")
        with member.open() as raw:
            stream = VerifyingReader(
                raw, descriptor.digest, descriptor.size, f"{self.what}: {role}"
            )
            return stream.read()

    def _target(self, descriptor: Descriptor, role: str, depth: int) -> Image | ImageIndex:
        if depth > _MAX_DEPTH:
            raise InvalidArchiveError(f"{self.what}: image indexes nested deeper than {_MAX_DEPTH}")
        raw = self.small_blob(descriptor, role)
        document = load_json(raw, f"{self.what}: {role}")
        is_index = _looks_like_index(document)
        declared = _declared_kind(descriptor.media_type)
        if declared is not None and declared != is_index:
            kinds = ("an image manifest", "an image index")
            raise InvalidArchiveError(
                f"{self.what}: {role} says {kinds[declared]} ({descriptor.media_type}) "
                f"but the blob is {kinds[is_index]}"
            )
        if is_index:
            index = Index.parse(raw, descriptor.media_type, where=f"{self.what}: {role}")
            children = []
            for i, child in enumerate(index.manifests):
                if self.files.get(f"blobs/{child.digest.algorithm}/{child.digest.encoded}") is None:
                    continue  # a partial multi-platform copy: only some platforms' blobs are here
                children.append((child, self._target(child, f"{role} > manifests[{i}]", depth + 1)))
            return ImageIndex(index, tuple(children))
        hint = descriptor.media_type if media.is_manifest(descriptor.media_type) else ""
        manifest = Manifest.parse(raw, hint, where=f"{self.what}: {role}")
        return self._image(manifest, descriptor, role)

    def _image(self, manifest: Manifest, descriptor: Descriptor, role: str) -> Image:
        config_raw = self.small_blob(manifest.config, f"{role} config")
        if media.is_attestation(descriptor.annotations):
            return self._attestation(manifest, descriptor, config_raw)
        if manifest.config.media_type not in (media.OCI_CONFIG, media.DOCKER_CONFIG):
            return self._artifact(
                manifest,
                descriptor,
                ImageConfig.artifact(config_raw, manifest.config.media_type),
                role,
            )
        config = ImageConfig.parse(config_raw, where=f"{self.what}: {role} config")
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidArchiveError(
                f"{self.what}: {role} has {len(manifest.layers)} layers but its config lists "
                f"{len(config.diff_ids)} diff_ids"
            )
        image_name = f"image {config.digest.short}"
        count = len(config.diff_ids)
        layers = tuple(
            self._layer(
                layer, diff_id, f"{self.what}: {image_name} layer {i + 1}/{count} ({layer.digest})"
            )
            for i, (layer, diff_id) in enumerate(zip(manifest.layers, config.diff_ids, strict=True))
        )
        return Image(config, layers, manifest, descriptor.platform)

    def _layer(self, descriptor: Descriptor, diff_id: Digest, what: str) -> Layer:
        if descriptor.digest in self.omitted and self.files.get(_blob_name(descriptor)) is None:
            codec = media.layer_codec(descriptor.media_type) or compression.NONE
            return Layer(descriptor, diff_id, codec, _left_out(what), verified=True, label=what)
        member = self.blob_member(descriptor.digest, what)
        return layer_from_member(member, descriptor, diff_id, what)

    def _artifact(
        self, manifest: Manifest, descriptor: Descriptor, config: ImageConfig, role: str
    ) -> Image:
        blobs = self._opaque_blobs(manifest, "artifact")
        return Image(config, blobs, manifest, descriptor.platform)

    def _attestation(self, manifest: Manifest, descriptor: Descriptor, config_raw: bytes) -> Image:
        """An attestation manifest: its config and blobs are kept as they are, never
        interpreted (in-toto JSON, not layer tars); only their digests are checked."""
        config = ImageConfig.artifact(config_raw, manifest.config.media_type)
        blobs = self._opaque_blobs(manifest, "attestation")
        subject = descriptor.annotations.get(media.REFERENCE_DIGEST)
        attests = None
        if subject:
            with contextlib.suppress(InvalidArchiveError):
                attests = Digest.parse(subject)
        platform = descriptor.platform
        return Image(config, blobs, manifest, platform, attestation=True, attests=attests)

    def _opaque_blobs(self, manifest: Manifest, kind: str) -> tuple[Layer, ...]:
        blobs = []
        for i, blob in enumerate(manifest.layers):
            what = f"{self.what}: {kind} {manifest.digest.short} blob {i + 1} ({blob.digest})"
            member = self.blob_member(blob.digest, what)
            blobs.append(
                Layer(blob, blob.digest, compression.NONE, member.open, opaque=True, label=what)
            )
        return tuple(blobs)


def _blob_name(descriptor: Descriptor) -> str:
    return f"blobs/{descriptor.digest.algorithm}/{descriptor.digest.encoded}"


def _left_out(what: str) -> Callable[[], IO[bytes]]:
    def fail() -> IO[bytes]:
        raise NotFoundError(f"{what} is left out of this update bundle: the site holds it")

    return fail


def _looks_like_index(document: Any) -> bool:
    if not isinstance(document, dict):
        return False
    own_type = document.get("mediaType")
    return (isinstance(own_type, str) and media.is_index(own_type)) or "manifests" in document


def _declared_kind(media_type: str) -> bool | None:
    """True for an index type, False for a manifest type, None when the type does not say."""
    if media.is_index(media_type):
        return True
    if media.is_manifest(media_type):
        return False
    return None


def layer_from_member(
    member: Member, descriptor: Descriptor | None, diff_id: Digest, what: str
) -> Layer:
    """The model's layer for an archive member, checked now if it was hashed on arrival."""
    if member.decode_error is not None:
        raise InvalidArchiveError(f"{what}: {member.decode_error}")
    if member.diff_id is not None:
        _check_arrived(member, descriptor, diff_id, what)
    codec = member.codec or _declared_or_sniffed_codec(member, descriptor, what)
    if descriptor is None:
        digest = _digest_without_descriptor(member, codec, diff_id)
        descriptor = Descriptor(media.oci_layer_type(codec), digest, member.size)
    if member.transcoded:
        assert member.stored_codec and member.stored_digest and member.stored_size is not None
        stored = Descriptor(
            media.oci_layer_type(member.stored_codec),
            member.stored_digest,
            member.stored_size,
            media.with_uncompressed_size(
                descriptor.annotations, member.stored_codec, member.uncompressed_size or 0
            ),
        )
        return Layer(stored, diff_id, member.stored_codec, member.open, verified=True, label=what)
    return Layer(
        descriptor, diff_id, codec, member.open, verified=member.diff_id is not None, label=what
    )


def _check_arrived(
    member: Member, descriptor: Descriptor | None, diff_id: Digest, what: str
) -> None:
    if descriptor is not None:
        if member.size != descriptor.size:
            raise DigestMismatchError(
                f"{what}: blob is {member.size} bytes, expected {descriptor.size}"
            )
        if member.digest != descriptor.digest:
            raise DigestMismatchError(
                f"{what}: blob digest is {member.digest}, expected {descriptor.digest}"
            )
    if member.diff_id != diff_id:
        raise DigestMismatchError(
            f"{what}: uncompressed content is {member.diff_id}, expected diff_id {diff_id}"
        )


def _declared_or_sniffed_codec(member: Member, descriptor: Descriptor | None, what: str) -> str:
    declared = media.layer_codec(descriptor.media_type) if descriptor else None
    if declared is not None:
        return declared
    with member.open() as stream:
        codec = compression.sniff(stream.read(compression.SNIFF_SIZE))
    if codec not in compression.LAYER_CODECS:
        raise InvalidArchiveError(f"{what} is compressed with {codec}, which layers may not use")
    return codec


def _digest_without_descriptor(member: Member, codec: str, diff_id: Digest) -> Digest:
    if member.digest is not None:
        return member.digest
    named = _BLOB_PATH.fullmatch(member.name)
    if named:
        return Digest("sha256", named.group(1))
    if codec == compression.NONE:
        return diff_id  # verified against the content when the layer is read
    return _hash_member(member)


def _hash_member(member: Member) -> Digest:
    with member.open() as raw:
        stream = VerifyingReader(raw, None, member.size, member.name)
        while stream.read(1024 * 1024):
            pass
        return stream.digest


def names_from_annotations(
    annotations: dict[str, str] | Any,
) -> tuple[tuple[Reference, ...], tuple[str, ...]]:
    """Tags and bare OCI ref names an index entry's annotations give it.

    The ref name comes in three forms: familiar (``myapp:1.0``, as sealift and docker print it),
    fully qualified (``docker.io/library/myapp:1.0``), or Docker 25's bare tag (``1``) beside
    the full name in ``io.containerd.image.name``. A ref name that only restates the full name
    is not kept apart, so two repositories' ``1`` never become one name.
    """
    tags: list[Reference] = []
    ref_names: list[str] = []
    full = annotations.get(CONTAINERD_NAME)
    ref = annotations.get(REF_NAME)
    if full:
        tags.append(_reference(full))
    if ref:
        if full and _restates(ref, tags[0]):
            return tuple(tags), ()
        ref_names.append(ref)
        if not full and ("/" in ref or ":" in ref):
            with contextlib.suppress(UsageError):
                tags.append(Reference.parse(ref))
    return tuple(tags), tuple(ref_names)


def _restates(ref_name: str, name: Reference) -> bool:
    """True when ``ref_name`` is ``name`` in any of the three forms (or its bare tag)."""
    if ref_name == name.tag:
        return True
    try:
        return Reference.parse(ref_name) == name
    except UsageError:
        return False


def _reference(text: str) -> Reference:
    try:
        return Reference.parse(text)
    except UsageError as exc:
        raise InvalidArchiveError(f"invalid image name {text!r} in archive") from exc


class _DockerSaveReader:
    def __init__(self, files: Files, what: str) -> None:
        self.files = files
        self.what = what

    def entries(self) -> list[Entry]:
        document = _read_json_member(self.files, "manifest.json", self.what)
        if document is None:
            raise InvalidArchiveError(f"{self.what}: manifest.json is null")
        if not isinstance(document, list):
            raise InvalidArchiveError(f"{self.what}: manifest.json must be a list of images")
        return [self._entry(item, i) for i, item in enumerate(document)]

    def _entry(self, item: Any, index: int) -> Entry:
        where = f"{self.what}: manifest.json[{index}]"
        if not isinstance(item, dict):
            raise InvalidArchiveError(f"{where} must be an object")
        config_path, layer_paths, repo_tags = (
            item.get("Config"),
            item.get("Layers"),
            item.get("RepoTags"),
        )
        if not isinstance(config_path, str):
            raise InvalidArchiveError(f"{where}: 'Config' must be a path")
        if not isinstance(layer_paths, list) or not all(isinstance(p, str) for p in layer_paths):
            raise InvalidArchiveError(f"{where}: 'Layers' must be a list of paths")
        if repo_tags is not None and (
            not isinstance(repo_tags, list) or not all(isinstance(t, str) for t in repo_tags)
        ):
            raise InvalidArchiveError(f"{where}: 'RepoTags' must be a list of names")
        config_member = self._member(config_path, f"{where} config")
        config = ImageConfig.parse(
            _member_bytes(config_member, f"{where} config"), where=f"{where} config"
        )
        named = _CONFIG_NAME.fullmatch(config_member.name.rsplit("/", 1)[-1])
        if named and config.digest.hex != named.group(1):
            raise DigestMismatchError(
                f"{where}: config {config_member.name} hashes to {config.digest}, "
                f"not the digest its name gives (sha256:{named.group(1)})"
            )
        if len(layer_paths) != len(config.diff_ids):
            raise InvalidArchiveError(
                f"{where} lists {len(layer_paths)} layers "
                f"but its config has {len(config.diff_ids)} diff_ids"
            )
        tags = tuple(_reference(tag) for tag in repo_tags or [])
        name = tags[0].familiar if tags else f"image {config.digest.short}"
        layers = tuple(
            self._layer(
                path, diff_id, f"{self.what}: {name} layer {i + 1}/{len(layer_paths)} ({path})"
            )
            for i, (path, diff_id) in enumerate(zip(layer_paths, config.diff_ids, strict=True))
        )
        return Entry(Image(config, layers), tags)

    def _member(self, path: str, what: str) -> Member:
        from sealift.formats.files import safe_name

        member = self.files.get(safe_name(path))
        if member is None:
            raise InvalidArchiveError(f"{what} {path!r} is missing")
        return member

    def _layer(self, path: str, diff_id: Digest, what: str) -> Layer:
        member = self._member(path, what)
        named = _BLOB_PATH.fullmatch(member.name)
        if (
            named
            and member.digest is not None
            and member.digest != Digest("sha256", named.group(1))
        ):
            raise DigestMismatchError(
                f"{what}: blob digest is {member.digest}, expected sha256:{named.group(1)}"
            )
        descriptor = None
        if named:
            codec = member.codec or _declared_or_sniffed_codec(member, None, what)
            descriptor = Descriptor(
                media.oci_layer_type(codec), Digest("sha256", named.group(1)), member.size
            )
        return layer_from_member(member, descriptor, diff_id, what)
