"""Builders for valid and hostile image archives, made in code.

Everything here is deterministic and built from a tiny valid image:

* two uncompressed layer tars with a couple of files each,
* an image config whose ``rootfs.diff_ids`` are the sha256 of those tars,
* a docker-save archive (``manifest.json`` + ``<hex>.json`` + ``<dir>/layer.tar``),
* an OCI image layout / OCI archive (``oci-layout``, ``index.json``, ``blobs/sha256/...``).

On top of that, :data:`CASES` lists broken and hostile inputs.  Each case writes its
input into a :class:`Workspace` and says which commands must reject it.  The tests
in ``test_hostile_archives.py`` run the real CLI against every case.

Nothing in this module imports sealift: it describes inputs, not the tool.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import resource
import stat
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import zstandard

# --------------------------------------------------------------------------------------
# constants

TAG = "hostile/test:1"
TAG_NORMALISED = "docker.io/hostile/test:1"
REF_NAME = "hostile-1"

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
REF_NAME_KEY = "org.opencontainers.image.ref.name"
ATTESTATION_KEY = "vnd.docker.reference.type"

Compression = Literal["gzip", "zstd", "none"]
Format = Literal["docker", "oci", "layout"]

GIB = 1 << 30
MIB = 1 << 20


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(data: bytes) -> str:
    return "sha256:" + sha256_hex(data)


def hex_of(digest: str) -> str:
    """``sha256:abc`` -> ``abc``."""
    return digest.split(":", 1)[1]


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


# --------------------------------------------------------------------------------------
# tar members


@dataclass(frozen=True)
class Member:
    """One tar entry, written verbatim (no name normalisation)."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    mode: int = 0o644
    devmajor: int = 0
    devminor: int = 0


def tar_bytes(members: Sequence[Member]) -> bytes:
    """A deterministic tar (PAX format, mtime 0, uid/gid 0) of ``members``, in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = m.type
            info.mode = m.mode
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.linkname = m.linkname
            info.devmajor = m.devmajor
            info.devminor = m.devminor
            if m.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                info.size = 0
                tar.addfile(info)
    return buf.getvalue()


def member_offsets(archive: bytes) -> dict[str, tuple[int, int, int]]:
    """name -> (header offset, data offset, size) of the *last* member with that name."""
    out: dict[str, tuple[int, int, int]] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for info in tar:
            out[info.name] = (info.offset, info.offset_data, info.size)
    return out


def layer_tar(files: Mapping[str, bytes]) -> bytes:
    """An uncompressed layer: the parent directories, then ``files``."""
    members: list[Member] = []
    seen: set[str] = set()
    for name in files:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i]) + "/"
            if d not in seen:
                seen.add(d)
                members.append(Member(d, type=tarfile.DIRTYPE, mode=0o755))
        members.append(Member(name, files[name]))
    return tar_bytes(members)


# --------------------------------------------------------------------------------------
# compression


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def zstd_bytes(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def compress(data: bytes, how: Compression) -> bytes:
    if how == "gzip":
        return gzip_bytes(data)
    if how == "zstd":
        return zstd_bytes(data)
    return data


def layer_media_type(how: Compression) -> str:
    return {"gzip": MT_OCI_LAYER_GZIP, "zstd": MT_OCI_LAYER_ZSTD, "none": MT_OCI_LAYER}[how]


# --- gzip bomb: a single-member gzip stream of many zeros, built without compressing them.
# After Z_FULL_FLUSH a deflate stream no longer refers to earlier data, so the bytes for
# "1 MiB of zeros, then a full flush" are the same every time and can be repeated.


def _gf2_times(mat: list[int], vec: int) -> int:
    out = 0
    i = 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(32)]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """zlib's crc32_combine: the CRC-32 of A+B from crc(A), crc(B) and len(B)."""
    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]
    even = _gf2_square(odd)
    odd = _gf2_square(even)
    while True:
        even = _gf2_square(odd)
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def gzip_zeros_bomb(n_mib: int, prefix: bytes = b"") -> bytes:
    """A valid gzip stream that inflates to ``prefix`` + ``n_mib`` MiB of zeros (~1 KiB/MiB)."""
    chunk = bytes(MIB)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH) if prefix else b""
    body = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.flush(zlib.Z_FINISH)
    crc_zero_chunk = zlib.crc32(chunk)
    crc_zeros = 0
    # crc of n_mib chunks by doubling
    acc_crc, acc_len, n = crc_zero_chunk, MIB, n_mib
    first = True
    while n:
        if n & 1:
            crc_zeros = acc_crc if first else crc32_combine(crc_zeros, acc_crc, acc_len)
            first = False
        acc_crc = crc32_combine(acc_crc, acc_crc, acc_len)
        acc_len *= 2
        n >>= 1
    total = len(prefix) + n_mib * MIB
    crc = crc32_combine(zlib.crc32(prefix), crc_zeros, n_mib * MIB) if prefix else crc_zeros
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = (crc & 0xFFFFFFFF).to_bytes(4, "little") + (total & 0xFFFFFFFF).to_bytes(4, "little")
    return header + head + body * n_mib + tail + trailer


# --- zstd bomb: one frame of RLE blocks (4 bytes per 128 KiB of zeros), no content size.

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_BLOCK = 128 * 1024


def _zstd_block_header(size: int, block_type: int, last: bool) -> bytes:
    return ((size << 3) | (block_type << 1) | int(last)).to_bytes(3, "little")


def zstd_zeros_bomb(n_bytes: int, prefix: bytes = b"", fill: bytes = b"\x00") -> bytes:
    """A single zstd frame decoding to ``prefix`` + ``n_bytes`` x ``fill``; no declared size."""
    assert len(fill) == 1
    assert n_bytes % _ZSTD_BLOCK == 0
    assert len(prefix) <= _ZSTD_BLOCK
    # frame header: descriptor 0 (no FCS, not single segment), window 128 KiB
    out = bytearray(_ZSTD_MAGIC + b"\x00\x38")
    if prefix:
        out += _zstd_block_header(len(prefix), 0, False) + prefix  # raw block
    rle = _zstd_block_header(_ZSTD_BLOCK, 1, False) + fill
    n = n_bytes // _ZSTD_BLOCK
    out += rle * (n - 1)
    out += _zstd_block_header(_ZSTD_BLOCK, 1, True) + fill
    return bytes(out)


# --------------------------------------------------------------------------------------
# the valid image

LAYER_FILES: tuple[dict[str, bytes], ...] = (
    {"etc/hostile-a.txt": b"alpha\n", "etc/hostile-b.txt": b"bravo\n"},
    {"srv/hostile-c.txt": b"charlie\n" * 64},
)


def valid_layer_tars() -> list[bytes]:
    return [layer_tar(files) for files in LAYER_FILES]


def make_config(diff_ids: Sequence[str], *, architecture: str = "amd64") -> dict[str, Any]:
    return {
        "architecture": architecture,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": f"layer {i}"}
            for i in range(len(diff_ids))
        ],
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }


JsonEdit = Callable[[Any], Any]


def _apply(edit: JsonEdit | None, obj: Any) -> Any:
    if edit is None:
        return obj
    res = edit(obj)
    return obj if res is None else res


@dataclass
class Built:
    """An image in archive members plus the facts the tests check against."""

    members: list[Member]
    config: bytes
    config_digest: str
    diff_ids: list[str]
    layer_tars: list[bytes]
    layer_blobs: list[bytes]  # as stored: compressed for OCI, the tar itself for docker
    layer_digests: list[str]  # digest of the stored blob
    layer_names: list[str]  # member names
    config_name: str
    manifest: bytes = b""  # OCI manifest or docker manifest.json
    manifest_digest: str = ""
    index: bytes = b""
    extra: dict[str, str] = field(default_factory=dict)

    def tar(self) -> bytes:
        return tar_bytes(self.members)

    def replace_member(self, old_name: str, /, **changes: Any) -> None:
        hits = [i for i, m in enumerate(self.members) if m.name == old_name]
        assert hits, old_name
        for i in hits:
            self.members[i] = replace(self.members[i], **changes)

    def drop_member(self, old_name: str, /) -> None:
        before = len(self.members)
        self.members = [m for m in self.members if m.name != old_name]
        assert len(self.members) < before, old_name

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)


def build_docker(
    *,
    layer_tars: Sequence[bytes] | None = None,
    layer_blobs: Sequence[bytes] | None = None,
    diff_ids: Sequence[str] | None = None,
    config_edit: JsonEdit | None = None,
    config_bytes: bytes | None = None,
    manifest_edit: JsonEdit | None = None,
    manifest_bytes: bytes | None = None,
    repo_tags: Sequence[str] | None = (TAG,),
) -> Built:
    """A docker-save archive: config, layer dirs, ``manifest.json`` last (as docker does)."""
    tars = list(layer_tars) if layer_tars is not None else valid_layer_tars()
    blobs = list(layer_blobs) if layer_blobs is not None else tars
    ids = list(diff_ids) if diff_ids is not None else [digest_of(t) for t in tars]
    config = (
        config_bytes
        if config_bytes is not None
        else canonical_json(_apply(config_edit, make_config(ids)))
    )
    config_digest = digest_of(config)
    config_name = hex_of(config_digest) + ".json"
    # v1-style directory names, unrelated to the digests (as in real docker saves)
    names = [
        sha256_hex(f"v1-{i}-{sha256_hex(b)}".encode()) + "/layer.tar" for i, b in enumerate(blobs)
    ]
    manifest_obj = [{"Config": config_name, "RepoTags": repo_tags, "Layers": names}]
    manifest = (
        manifest_bytes
        if manifest_bytes is not None
        else canonical_json(_apply(manifest_edit, manifest_obj))
    )
    members = [Member(config_name, config)]
    for name, blob in zip(names, blobs, strict=True):
        members.append(Member(name.split("/")[0] + "/", type=tarfile.DIRTYPE, mode=0o755))
        members.append(Member(name, blob))
    members.append(Member("manifest.json", manifest))
    return Built(
        members=members,
        config=config,
        config_digest=config_digest,
        diff_ids=ids,
        layer_tars=tars,
        layer_blobs=blobs,
        layer_digests=[digest_of(b) for b in blobs],
        layer_names=names,
        config_name=config_name,
        manifest=manifest,
        manifest_digest=digest_of(manifest),
    )


def blob_name(digest: str) -> str:
    alg, _, hexpart = digest.partition(":")
    return f"blobs/{alg}/{hexpart}"


def build_oci(
    *,
    compression: Compression = "gzip",
    layer_tars: Sequence[bytes] | None = None,
    layer_blobs: Sequence[bytes] | None = None,
    diff_ids: Sequence[str] | None = None,
    config_edit: JsonEdit | None = None,
    config_bytes: bytes | None = None,
    manifest_edit: JsonEdit | None = None,
    manifest_bytes: bytes | None = None,
    index_edit: JsonEdit | None = None,
    index_bytes: bytes | None = None,
    metadata_first: bool = False,
) -> Built:
    """An OCI archive: ``oci-layout``, blobs (layers, config, manifest), ``index.json`` last.

    With ``metadata_first`` the order is oci-layout, index.json, manifest, config, layers.
    Edits see the finished JSON objects (descriptors already filled in) and may mutate
    them in place or return a replacement; the digests further up are computed from
    the edited bytes, so only the edited level is inconsistent.
    """
    tars = list(layer_tars) if layer_tars is not None else valid_layer_tars()
    blobs = (
        list(layer_blobs) if layer_blobs is not None else [compress(t, compression) for t in tars]
    )
    ids = list(diff_ids) if diff_ids is not None else [digest_of(t) for t in tars]
    config = (
        config_bytes
        if config_bytes is not None
        else canonical_json(_apply(config_edit, make_config(ids)))
    )
    config_digest = digest_of(config)
    layer_digests = [digest_of(b) for b in blobs]
    manifest_obj = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [
            {"mediaType": layer_media_type(compression), "digest": d, "size": len(b)}
            for d, b in zip(layer_digests, blobs, strict=True)
        ],
    }
    manifest = (
        manifest_bytes
        if manifest_bytes is not None
        else canonical_json(_apply(manifest_edit, manifest_obj))
    )
    manifest_digest = digest_of(manifest)
    index_obj = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [
            {
                "mediaType": MT_OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {REF_NAME_KEY: REF_NAME},
            }
        ],
    }
    index = (
        index_bytes if index_bytes is not None else canonical_json(_apply(index_edit, index_obj))
    )
    layer_members = [Member(blob_name(d), b) for d, b in zip(layer_digests, blobs, strict=True)]
    # a layer may appear twice in one image: store each blob once
    seen: set[str] = set()
    unique_layers = []
    for m in layer_members:
        if m.name not in seen:
            seen.add(m.name)
            unique_layers.append(m)
    config_member = Member(blob_name(config_digest), config)
    manifest_member = Member(blob_name(manifest_digest), manifest)
    dirs = [
        Member("blobs/", type=tarfile.DIRTYPE, mode=0o755),
        Member("blobs/sha256/", type=tarfile.DIRTYPE, mode=0o755),
    ]
    if metadata_first:
        members = [
            Member("oci-layout", OCI_LAYOUT),
            Member("index.json", index),
            *dirs,
            manifest_member,
            config_member,
            *unique_layers,
        ]
    else:
        members = [
            Member("oci-layout", OCI_LAYOUT),
            *dirs,
            *unique_layers,
            config_member,
            manifest_member,
            Member("index.json", index),
        ]
    return Built(
        members=members,
        config=config,
        config_digest=config_digest,
        diff_ids=ids,
        layer_tars=tars,
        layer_blobs=blobs,
        layer_digests=layer_digests,
        layer_names=[m.name for m in layer_members],
        config_name=blob_name(config_digest),
        manifest=manifest,
        manifest_digest=manifest_digest,
        index=index,
    )


def write_layout(built: Built, root: Path) -> Path:
    """Write the regular files of an OCI build as a layout directory (links are made by cases)."""
    for m in built.members:
        if m.type == tarfile.DIRTYPE:
            (root / m.name).mkdir(parents=True, exist_ok=True)
        elif m.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            p = root / m.name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(m.data)
        else:
            raise ValueError(f"write_layout: unsupported member type for {m.name}")
    return root


def wrap(data: bytes, how: Compression) -> bytes:
    """Compress a whole archive stream (outer compression)."""
    return compress(data, how)


# --------------------------------------------------------------------------------------
# workspace and cases


@dataclass(frozen=True)
class Workspace:
    """Directories for one run.

    ``inp`` holds the input; ``outside`` holds decoys that hostile links point to and
    must stay unchanged; ``cwd`` is the tool's working directory and must stay empty;
    ``dst`` receives the output; ``tmp`` is the tool's ``TMPDIR``.
    ``token`` makes escape names unique so they can be searched for.
    """

    root: Path
    inp: Path
    outside: Path
    cwd: Path
    dst: Path
    tmp: Path
    token: str

    @classmethod
    def create(cls, root: Path, token: str) -> Workspace:
        ws = cls(
            root=root,
            inp=root / "in",
            outside=root / "outside",
            cwd=root / "cwd",
            dst=root / "dst",
            tmp=root / "tmp",
            token=token,
        )
        for d in (ws.inp, ws.outside, ws.cwd, ws.dst, ws.tmp):
            d.mkdir(parents=True)
        return ws

    @property
    def tmp_escape(self) -> Path:
        """Where a ``../../../..`` name lands whatever the extraction root."""
        return Path("/tmp") / f"sealift-escape-{self.token}"

    def deep_escape_name(self) -> str:
        return "../" * 24 + f"tmp/sealift-escape-{self.token}"


@dataclass(frozen=True)
class Input:
    """What a case built: the path to pass to the tool and what to check afterwards."""

    path: Path
    # substrings the verify error must contain (digests named by a mismatch message)
    must_mention: tuple[str, ...] = ()
    # absolute paths that must not exist after the run (escape targets)
    escapes: tuple[Path, ...] = ()
    # names an image in the error (any of these may appear)
    image_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    id: str
    fmt: Format
    build: Callable[[Workspace], Input]
    # damage is in metadata: inspect must reject too
    metadata: bool
    why: str
    bomb: bool = False
    # archive cases that are also fed to ``convert -`` on stdin
    stdin: bool = False
    # environment of the sealift run (a lowered cap, so that a bomb only the cap stops is fast)
    env: Mapping[str, str] = field(default_factory=dict)


CASES: list[Case] = []


def case(
    id: str,
    fmt: Format,
    *,
    metadata: bool,
    why: str,
    bomb: bool = False,
    stdin: bool = False,
    env: Mapping[str, str] | None = None,
) -> Callable[[Callable[[Workspace], Input]], Callable[[Workspace], Input]]:
    def register(fn: Callable[[Workspace], Input]) -> Callable[[Workspace], Input]:
        assert all(c.id != id for c in CASES), id
        CASES.append(Case(id, fmt, fn, metadata, why, bomb, stdin, dict(env or {})))
        return fn

    return register


def _write(ws: Workspace, data: bytes, name: str = "input.tar") -> Path:
    p = ws.inp / name
    p.write_bytes(data)
    return p


def _archive(ws: Workspace, built: Built, name: str = "input.tar", **kw: Any) -> Input:
    return Input(_write(ws, built.tar(), name), **kw)


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x20
    return bytes(b)


def _docker_names(b: Built) -> tuple[str, ...]:
    return (TAG, TAG_NORMALISED, hex_of(b.config_digest)[:12])


def _oci_names(b: Built) -> tuple[str, ...]:
    return (REF_NAME, hex_of(b.config_digest)[:12], hex_of(b.manifest_digest)[:12])


# ---- valid inputs (positive controls)


def valid_docker_archive(ws: Workspace) -> tuple[Input, Built]:
    b = build_docker()
    return _archive(ws, b), b


def valid_oci_archive(ws: Workspace, compression: Compression = "gzip") -> tuple[Input, Built]:
    b = build_oci(compression=compression)
    return _archive(ws, b), b


# ---- truncation


def _truncate(ws: Workspace, data: bytes, at: int) -> Input:
    assert 0 < at < len(data)
    return Input(_write(ws, data[:at]))


def _truncate_inside(ws: Workspace, data: bytes, member: str) -> Input:
    """``data`` cut half way through the content of its ``member``."""
    _, data_offset, size = member_offsets(data)[member]
    return _truncate(ws, data, data_offset + size // 2)


@case(
    "trunc-docker-first-header",
    "docker",
    metadata=True,
    stdin=True,
    why="cut 100 bytes into the first tar header: nothing is readable",
)
def _(ws: Workspace) -> Input:
    return _truncate(ws, build_docker().tar(), 100)


@case(
    "trunc-docker-layer-header",
    "docker",
    metadata=True,
    why="cut inside the header of the first layer; manifest.json is never reached",
)
def _(ws: Workspace) -> Input:
    b = build_docker()
    data = b.tar()
    off, _, _ = member_offsets(data)[b.layer_names[0]]
    return _truncate(ws, data, off + 200)


@case(
    "trunc-docker-layer-data",
    "docker",
    metadata=True,
    stdin=True,
    why="cut in the middle of a layer's data",
)
def _(ws: Workspace) -> Input:
    b = build_docker()
    return _truncate_inside(ws, b.tar(), b.layer_names[1])


@case(
    "trunc-docker-manifest-data",
    "docker",
    metadata=True,
    why="cut inside manifest.json, the last member: truncated JSON",
)
def _(ws: Workspace) -> Input:
    return _truncate_inside(ws, build_docker().tar(), "manifest.json")


@case(
    "trunc-docker-member-boundary",
    "docker",
    metadata=True,
    why="cut exactly before manifest.json's header: a whole-looking tar with no manifest",
)
def _(ws: Workspace) -> Input:
    data = build_docker().tar()
    off, _, _ = member_offsets(data)["manifest.json"]
    return _truncate(ws, data, off)


@case(
    "trunc-oci-layer-data",
    "oci",
    metadata=True,
    stdin=True,
    why="cut inside a gzip layer blob; index.json (last) is lost too",
)
def _(ws: Workspace) -> Input:
    b = build_oci()
    return _truncate_inside(ws, b.tar(), b.layer_names[0])


@case(
    "trunc-oci-last-layer",
    "oci",
    metadata=False,
    stdin=True,
    why="metadata first, the last layer blob cut short: only reading the blob shows it",
)
def _(ws: Workspace) -> Input:
    b = build_oci(metadata_first=True)
    name = b.layer_names[-1]
    assert b.members[-1].name == name
    return _truncate_inside(ws, b.tar(), name)


@case(
    "trunc-oci-outer-gzip",
    "oci",
    metadata=True,
    stdin=True,
    why="a .tar.gz whose gzip stream stops half way",
)
def _(ws: Workspace) -> Input:
    data = wrap(build_oci().tar(), "gzip")
    return Input(_write(ws, data[: len(data) // 2], "input.tar.gz"))


@case(
    "trunc-oci-outer-zstd",
    "oci",
    metadata=True,
    stdin=True,
    why="a .tar.zst whose zstd frame stops half way",
)
def _(ws: Workspace) -> Input:
    data = wrap(build_oci().tar(), "zstd")
    return Input(_write(ws, data[: len(data) // 2], "input.tar.zst"))


# ---- flipped bytes


def _content_swapped(
    ws: Workspace, b: Built, member: str, promised: str, bad: bytes, **kw: Any
) -> Input:
    """``b`` whose ``member`` holds ``bad`` where its name or descriptor promises the digest
    ``promised``: the error must name both digests."""
    b.replace_member(member, data=bad)
    return _archive(ws, b, must_mention=(hex_of(promised)[:12], sha256_hex(bad)[:12]), **kw)


@case(
    "flip-docker-layer",
    "docker",
    metadata=False,
    stdin=True,
    why="one byte of a file inside layer 0 flipped: tar still parses, diff_id differs",
)
def _(ws: Workspace) -> Input:
    good = build_docker()
    tar0 = good.layer_tars[0]
    pos = tar0.index(b"alpha")
    bad0 = _flip(tar0, pos)
    b = build_docker(layer_blobs=[bad0, *good.layer_tars[1:]], diff_ids=good.diff_ids)
    return _archive(
        ws,
        b,
        must_mention=(hex_of(good.diff_ids[0])[:12], sha256_hex(bad0)[:12]),
        image_names=_docker_names(b),
    )


@case(
    "flip-docker-config",
    "docker",
    metadata=False,
    why="config edited after naming (amd64 -> amd6t): <hex>.json no longer its digest",
)
def _(ws: Workspace) -> Input:
    b = build_docker()
    bad = b.config.replace(b'"amd64"', b'"amd6t"')
    assert bad != b.config
    return _content_swapped(ws, b, b.config_name, b.config_digest, bad)


@case(
    "flip-oci-layer",
    "oci",
    metadata=False,
    stdin=True,
    why="one byte flipped in the middle of a gzip layer blob",
)
def _(ws: Workspace) -> Input:
    b = build_oci()
    blob = b.layer_blobs[1]
    bad = _flip(blob, len(blob) // 2)
    return _content_swapped(
        ws, b, b.layer_names[1], b.layer_digests[1], bad, image_names=_oci_names(b)
    )


@case(
    "flip-oci-layer-gzip-header",
    "oci",
    metadata=False,
    why="gzip header mtime byte changed: decompresses to the same tar, only the digest differs",
)
def _(ws: Workspace) -> Input:
    b = build_oci()
    blob = b.layer_blobs[0]
    bad = blob[:4] + bytes([blob[4] ^ 0x01]) + blob[5:]  # MTIME, not covered by the CRC
    return _content_swapped(
        ws, b, b.layer_names[0], b.layer_digests[0], bad, image_names=_oci_names(b)
    )


@case(
    "flip-oci-config",
    "oci",
    metadata=True,
    why="config blob edited (still valid JSON): content no longer matches its descriptor",
)
def _(ws: Workspace) -> Input:
    b = build_oci()
    bad = b.config.replace(b'"amd64"', b'"amd6t"')
    return _content_swapped(ws, b, b.config_name, b.config_digest, bad)


@case(
    "flip-oci-manifest",
    "oci",
    metadata=True,
    why="manifest blob edited (still valid JSON): content no longer matches index.json",
)
def _(ws: Workspace) -> Input:
    b = build_oci()
    bad = b.manifest.replace(b'"schemaVersion":2', b'"schemaVersion":3')
    assert bad != b.manifest
    return _content_swapped(ws, b, blob_name(b.manifest_digest), b.manifest_digest, bad)


# ---- missing blobs


def _archive_without(
    build: Callable[[], Built],
    member: Callable[[Built], str],
    mention: Callable[[Built], tuple[str, ...]] = lambda _b: (),
) -> Callable[[Workspace], Input]:
    """A case builder: the valid archive from ``build`` without one ``member``."""

    def without(ws: Workspace) -> Input:
        b = build()
        b.drop_member(member(b))
        return _archive(ws, b, must_mention=mention(b))

    return without


case(
    "missing-docker-layer",
    "docker",
    metadata=False,
    why="manifest.json lists a layer.tar that is not in the archive",
)(_archive_without(build_docker, lambda b: b.layer_names[1]))
case(
    "missing-docker-config",
    "docker",
    metadata=True,
    why="manifest.json names a config file that is not in the archive",
)(_archive_without(build_docker, lambda b: b.config_name))
case("missing-oci-layer", "oci", metadata=False, why="a layer blob is absent")(
    _archive_without(
        build_oci, lambda b: b.layer_names[0], lambda b: (hex_of(b.layer_digests[0])[:12],)
    )
)
case("missing-oci-config", "oci", metadata=True, why="the config blob is absent")(
    _archive_without(build_oci, lambda b: b.config_name)
)
case("missing-oci-manifest", "oci", metadata=True, why="the manifest blob is absent")(
    _archive_without(build_oci, lambda b: blob_name(b.manifest_digest))
)
case("missing-oci-index", "oci", metadata=True, why="no index.json at all")(
    _archive_without(build_oci, lambda _b: "index.json")
)


@case("missing-layout-layer", "layout", metadata=False, why="layout dir without a layer blob")
def _(ws: Workspace) -> Input:
    b = build_oci()
    root = write_layout(b, ws.inp / "layout")
    (root / b.layer_names[0]).unlink()
    return Input(root, must_mention=(hex_of(b.layer_digests[0])[:12],))


# ---- path traversal and absolute member names


def _decoy(ws: Workspace, name: str, data: bytes) -> Path:
    """A file ``outside/name`` with the bytes a hostile reference hopes will be read."""
    path = ws.outside / name
    path.write_bytes(data)
    return path


def _repoint_docker_manifest(b: Built, new: str, *, config: bool = False) -> str:
    """Make manifest.json name ``new`` for layer 0 (with ``config``: for the config).

    Returns the name it had there: the member a case then renames or drops.
    """
    manifest = json.loads(b.manifest)
    names, key = (manifest[0], "Config") if config else (manifest[0]["Layers"], 0)
    old: str = names[key]
    names[key] = new
    b.replace_member("manifest.json", data=canonical_json(manifest))
    return old


@case(
    "docker-layer-path-dotdot",
    "docker",
    metadata=False,
    why="manifest.json Layers entry '../<x>/layer.tar', and a member of that name exists",
)
def _(ws: Workspace) -> Input:
    b = build_docker()
    evil = f"../{ws.token}/layer.tar"
    b.replace_member(_repoint_docker_manifest(b, evil), name=evil)
    return _archive(ws, b, escapes=(ws.root / ws.token,))


@case(
    "docker-config-path-dotdot",
    "docker",
    metadata=True,
    why="manifest.json Config '../<x>.json', and a member of that name exists",
)
def _(ws: Workspace) -> Input:
    b = build_docker()
    evil = f"../{ws.token}.json"
    b.replace_member(_repoint_docker_manifest(b, evil, config=True), name=evil)
    return _archive(ws, b, escapes=(ws.root / f"{ws.token}.json",))


@case(
    "docker-config-path-absolute",
    "docker",
    metadata=True,
    why="Config is an absolute host path to a decoy with the right bytes: must not be read",
)
def _(ws: Workspace) -> Input:
    b = build_docker()
    decoy = _decoy(ws, "config.json", b.config)
    b.drop_member(_repoint_docker_manifest(b, str(decoy), config=True))
    return _archive(ws, b)


@case(
    "docker-layer-path-absolute",
    "docker",
    metadata=False,
    why="a Layers entry is an absolute host path to a decoy with the right bytes",
)
def _(ws: Workspace) -> Input:
    b = build_docker()
    decoy = _decoy(ws, "layer.tar", b.layer_tars[0])
    b.drop_member(_repoint_docker_manifest(b, str(decoy)))
    return _archive(ws, b)


@case(
    "docker-absolute-member-name",
    "docker",
    metadata=False,
    why="a layer member stored under an absolute name that manifest.json references",
)
def _(ws: Workspace) -> Input:
    b = build_docker()
    evil = str(ws.outside / f"abs-{ws.token}" / "layer.tar")
    b.replace_member(_repoint_docker_manifest(b, evil), name=evil)
    return _archive(ws, b, escapes=(Path(evil), Path(evil).parent))


@case(
    "stray-dotdot-member",
    "docker",
    metadata=False,
    stdin=True,
    why="valid image plus an unreferenced member '../../…/tmp/sealift-escape-<token>'",
)
def _(ws: Workspace) -> Input:
    b = build_docker()
    b.members.insert(1, Member(ws.deep_escape_name(), b"pwned\n"))
    return _archive(ws, b, escapes=(ws.tmp_escape,))


@case(
    "stray-absolute-member",
    "oci",
    metadata=False,
    why="valid image plus an unreferenced member with an absolute name inside outside/",
)
def _(ws: Workspace) -> Input:
    b = build_oci()
    target = ws.outside / f"abs-{ws.token}"
    b.members.insert(1, Member(str(target), b"pwned\n"))
    return _archive(ws, b, escapes=(target,))


# ---- links and special files where blobs belong


def _first_layer(b: Built) -> str:
    return b.layer_names[0]


def _oci_link(
    ws: Workspace, which: str, type_: bytes, linkname: str, *, metadata_first: bool = False
) -> tuple[Built, Input]:
    b = build_oci(metadata_first=metadata_first)
    name = {"layer": b.layer_names[0], "config": b.config_name}[which]
    b.replace_member(name, type=type_, linkname=linkname, data=b"")
    return b, _archive(ws, b)


def _oci_layer_link(
    type_: bytes, target: Callable[[Workspace], str]
) -> Callable[[Workspace], Input]:
    """A case builder: layer 0's blob is a link of ``type_`` to ``target(ws)``."""

    def build(ws: Workspace) -> Input:
        return _oci_link(ws, "layer", type_, target(ws))[1]

    return build


def _special_member(
    build: Callable[[], Built],
    member: Callable[[Built], str],
    type_: bytes,
    device: tuple[int, int] = (0, 0),
) -> Callable[[Workspace], Input]:
    """A case builder: ``member`` of the valid archive is an empty entry of ``type_``
    (a FIFO, or a device with numbers ``device``: major, minor)."""

    def special(ws: Workspace) -> Input:
        b = build()
        major, minor = device
        b.replace_member(member(b), type=type_, devmajor=major, devminor=minor, data=b"")
        return _archive(ws, b)

    return special


def _layout_replacing(
    make: Callable[[Path], object], member: Callable[[Built], str] = _first_layer
) -> Callable[[Workspace], Input]:
    """A case builder: a valid layout dir whose ``member`` file is replaced by ``make(path)``."""

    def replaced(ws: Workspace) -> Input:
        b = build_oci()
        root = write_layout(b, ws.inp / "layout")
        path = root / member(b)
        path.unlink()
        make(path)
        return Input(root)

    return replaced


def _make_dev_zero(path: Path) -> None:
    try:
        os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 5))
    except PermissionError:
        import pytest

        pytest.skip("creating a device node needs root")


@case(
    "oci-layer-symlink-absolute-decoy",
    "oci",
    metadata=False,
    why="blobs/sha256/<layer> is a symlink to an outside file with exactly the right bytes",
)
def _(ws: Workspace) -> Input:
    decoy = _decoy(ws, "layer-decoy", build_oci().layer_blobs[0])
    return _oci_link(ws, "layer", tarfile.SYMTYPE, str(decoy))[1]


for _id, _type, _target, _why in [
    (
        "oci-layer-symlink-etc-passwd",
        tarfile.SYMTYPE,
        lambda _ws: "/etc/passwd",
        "blobs/sha256/<layer> is a symlink to /etc/passwd",
    ),
    (
        "oci-layer-symlink-dotdot",
        tarfile.SYMTYPE,
        lambda ws: f"../../../{ws.token}",
        "blobs/sha256/<layer> is a symlink to ../../../x (outside the archive root)",
    ),
    (
        "oci-layer-hardlink-etc-passwd",
        tarfile.LNKTYPE,
        lambda _ws: "/etc/passwd",
        "blobs/sha256/<layer> is a hard link to /etc/passwd",
    ),
    (
        "oci-layer-hardlink-dotdot",
        tarfile.LNKTYPE,
        lambda ws: f"../../{ws.token}",
        "blobs/sha256/<layer> is a hard link to ../../x",
    ),
]:
    case(_id, "oci", metadata=False, why=_why)(_oci_layer_link(_type, _target))


@case(
    "oci-config-symlink-absolute-decoy",
    "oci",
    metadata=True,
    why="blobs/sha256/<config> is a symlink to an outside file with the right bytes",
)
def _(ws: Workspace) -> Input:
    decoy = _decoy(ws, "config-decoy", build_oci().config)
    return _oci_link(ws, "config", tarfile.SYMTYPE, str(decoy))[1]


@case(
    "docker-manifest-symlink-absolute-decoy",
    "docker",
    metadata=True,
    why="manifest.json is a symlink to an outside file holding a valid manifest.json",
)
def _(ws: Workspace) -> Input:
    b = build_docker()
    decoy = _decoy(ws, "manifest.json", b.manifest)
    b.replace_member("manifest.json", type=tarfile.SYMTYPE, linkname=str(decoy), data=b"")
    return _archive(ws, b)


@case(
    "symlink-dir-escape",
    "oci",
    metadata=True,
    why="'blobs' is a symlink to outside/, then blobs/sha256/* follow: extraction escapes",
)
def _(ws: Workspace) -> Input:
    b = build_oci()
    target = ws.outside / "blobsdir"
    b.members = [m for m in b.members if m.name not in ("blobs/", "blobs/sha256/")]
    b.members.insert(1, Member("blobs", type=tarfile.SYMTYPE, linkname=str(target)))
    return _archive(ws, b, escapes=(target,))


@case(
    "oci-layer-hardlink-to-config",
    "oci",
    metadata=False,
    why="blobs/sha256/<layer> is a hard link to the config member: wrong bytes",
)
def _(ws: Workspace) -> Input:
    good = build_oci()
    # metadata first, so the link target (the config) precedes the link in the tar
    b, inp = _oci_link(ws, "layer", tarfile.LNKTYPE, good.config_name, metadata_first=True)
    return replace(inp, must_mention=(hex_of(b.layer_digests[0])[:12],))


case(
    "oci-layer-chardev",
    "oci",
    metadata=False,
    why="blobs/sha256/<layer> is a character device 1,5 (/dev/zero): endless if opened",
)(_special_member(build_oci, _first_layer, tarfile.CHRTYPE, (1, 5)))
case(
    "oci-layer-fifo",
    "oci",
    metadata=False,
    why="blobs/sha256/<layer> is a FIFO: blocks forever if extracted and opened",
)(_special_member(build_oci, _first_layer, tarfile.FIFOTYPE))
case("docker-manifest-fifo", "docker", metadata=True, why="manifest.json is a FIFO")(
    _special_member(build_docker, lambda _b: "manifest.json", tarfile.FIFOTYPE)
)
case("docker-layer-blockdev", "docker", metadata=False, why="a layer.tar is a block device 7,0")(
    _special_member(build_docker, _first_layer, tarfile.BLKTYPE, (7, 0))
)

case(
    "layout-layer-symlink-etc-passwd",
    "layout",
    metadata=False,
    why="layout dir: blobs/sha256/<layer> is a symlink to /etc/passwd",
)(_layout_replacing(lambda path: path.symlink_to("/etc/passwd")))
case(
    "layout-layer-fifo",
    "layout",
    metadata=False,
    why="layout dir: blobs/sha256/<layer> is a FIFO; opening it blocks forever",
)(_layout_replacing(os.mkfifo))


@case("layout-empty-dir", "layout", metadata=True, why="an empty directory as the input")
def _(ws: Workspace) -> Input:
    root = ws.inp / "layout"
    root.mkdir()
    return Input(root)


case(
    "layout-index-fifo",
    "layout",
    metadata=True,
    why="layout dir: index.json is a FIFO; opening it blocks forever",
)(_layout_replacing(os.mkfifo, lambda _b: "index.json"))
case(
    "layout-layer-is-directory",
    "layout",
    metadata=False,
    why="layout dir: blobs/sha256/<layer> is a directory",
)(_layout_replacing(Path.mkdir))
case(
    "layout-layer-dev-zero",
    "layout",
    metadata=False,
    why="layout dir: blobs/sha256/<layer> is /dev/zero (a char device): endless zeros",
)(_layout_replacing(_make_dev_zero))


# ---- duplicate entries with different content


def _stored_twice(
    ws: Workspace, b: Built, member: str, other: bytes, *, other_first: bool
) -> Input:
    """``b`` with a second ``member`` entry holding ``other``, just before or after the real one."""
    i = next(i for i, m in enumerate(b.members) if m.name == member)
    b.members.insert(i if other_first else i + 1, Member(member, other))
    return _archive(ws, b)


@case(
    "dup-docker-manifest-differs",
    "docker",
    metadata=True,
    why="two manifest.json members with different tags: which one is meant is ambiguous",
)
def _(ws: Workspace) -> Input:
    b = build_docker()
    m = json.loads(b.manifest)
    m[0]["RepoTags"] = ["hostile/other:2"]
    b.members.insert(0, Member("manifest.json", canonical_json(m)))
    return _archive(ws, b)


@case(
    "dup-oci-layer-good-then-bad",
    "oci",
    metadata=False,
    why="a layer blob stored twice: right bytes first, wrong bytes second",
)
def _(ws: Workspace) -> Input:
    b = build_oci()
    return _stored_twice(ws, b, b.layer_names[0], gzip_bytes(b"not the layer"), other_first=False)


@case(
    "dup-oci-layer-bad-then-good",
    "oci",
    metadata=False,
    why="a layer blob stored twice: wrong bytes first, right bytes second",
)
def _(ws: Workspace) -> Input:
    b = build_oci()
    return _stored_twice(ws, b, b.layer_names[0], gzip_bytes(b"not the layer"), other_first=True)


@case(
    "dup-oci-index-differs",
    "oci",
    metadata=True,
    why="two index.json members; the first points at a different (absent) manifest",
)
def _(ws: Workspace) -> Input:
    b = build_oci()
    idx = json.loads(b.index)
    idx["manifests"][0]["digest"] = "sha256:" + "0" * 64
    b.members.insert(1, Member("index.json", canonical_json(idx)))
    return _archive(ws, b)


@case(
    "dup-oci-config-differs",
    "oci",
    metadata=True,
    why="the config blob stored twice, second copy different",
)
def _(ws: Workspace) -> Input:
    b = build_oci()
    other = b.config.replace(b"amd64", b"arm64")
    return _stored_twice(ws, b, b.config_name, other, other_first=False)


# ---- JSON that is not what it claims


def _docker_manifest_raw(raw: bytes) -> Callable[[Workspace], Input]:
    def build(ws: Workspace) -> Input:
        return _archive(ws, build_docker(manifest_bytes=raw))

    return build


for _id, _raw, _why in [
    ("docker-manifest-null", b"null", "manifest.json is null"),
    ("docker-manifest-dict", b"{}", "manifest.json is an object, not a list"),
    ("docker-manifest-not-json", b"\x00\x01garbage{", "manifest.json is not JSON"),
    ("docker-manifest-list-of-strings", b'["x.json"]', "manifest.json entries are strings"),
    ("docker-manifest-number", b"42", "manifest.json is a number"),
]:
    case(_id, "docker", metadata=True, why=_why)(_docker_manifest_raw(_raw))


def _docker_manifest_edit(edit: JsonEdit) -> Callable[[Workspace], Input]:
    def build(ws: Workspace) -> Input:
        return _archive(ws, build_docker(manifest_edit=edit))

    return build


def _set(path: Sequence[str | int], value: Any) -> JsonEdit:
    def edit(obj: Any) -> Any:
        cur = obj
        for k in path[:-1]:
            cur = cur[k]
        cur[path[-1]] = value
        return obj

    return edit


def _del(path: Sequence[str | int]) -> JsonEdit:
    def edit(obj: Any) -> Any:
        cur = obj
        for k in path[:-1]:
            cur = cur[k]
        del cur[path[-1]]
        return obj

    return edit


for _id, _edit, _why in [
    ("docker-manifest-entry-not-list", lambda m: m[0], "manifest.json is the entry object"),
    ("docker-manifest-layers-string", _set([0, "Layers"], "layer.tar"), "Layers is a string"),
    ("docker-manifest-config-number", _set([0, "Config"], 7), "Config is a number"),
    ("docker-manifest-config-missing", _del([0, "Config"]), "an entry without Config"),
    ("docker-manifest-repotags-string", _set([0, "RepoTags"], TAG), "RepoTags is a string"),
]:
    case(_id, "docker", metadata=True, why=_why)(_docker_manifest_edit(_edit))


def _oci_index_raw(raw: bytes) -> Callable[[Workspace], Input]:
    def build(ws: Workspace) -> Input:
        return _archive(ws, build_oci(index_bytes=raw))

    return build


for _id, _raw, _why in [
    ("oci-index-null", b"null", "index.json is null"),
    ("oci-index-list", b"[]", "index.json is a list"),
    ("oci-index-not-json", b"\xff\xfe{", "index.json is not JSON"),
]:
    case(_id, "oci", metadata=True, why=_why)(_oci_index_raw(_raw))


def _oci_edit(**kw: Any) -> Callable[[Workspace], Input]:
    def build(ws: Workspace) -> Input:
        return _archive(ws, build_oci(**kw))

    return build


def _manifests_to_dict(idx: Any) -> Any:
    idx["manifests"] = {"0": idx["manifests"][0]}
    return idx


_OCI_EDITS: list[tuple[str, dict[str, Any], str]] = [
    ("oci-index-manifests-dict", {"index_edit": _manifests_to_dict}, "manifests is an object"),
    ("oci-index-manifests-missing", {"index_edit": _del(["manifests"])}, "no manifests key"),
    (
        "oci-index-size-string",
        {"index_edit": _set(["manifests", 0, "size"], "9")},
        "descriptor size is a string",
    ),
    (
        "oci-index-size-negative",
        {"index_edit": _set(["manifests", 0, "size"], -1)},
        "descriptor size is negative",
    ),
    (
        "oci-index-digest-number",
        {"index_edit": _set(["manifests", 0, "digest"], 12345)},
        "descriptor digest is a number",
    ),
    (
        "oci-index-mediatype-list",
        {"index_edit": _set(["manifests", 0, "mediaType"], [MT_OCI_MANIFEST])},
        "descriptor mediaType is a list",
    ),
    (
        "oci-manifest-layers-dict",
        {"manifest_edit": lambda m: _set(["layers"], {"0": m["layers"][0]})(m)},
        "manifest layers is an object",
    ),
    ("oci-manifest-config-missing", {"manifest_edit": _del(["config"])}, "manifest without config"),
    (
        "oci-manifest-layer-size-string",
        {"manifest_edit": _set(["layers", 0, "size"], "133")},
        "layer size is a string",
    ),
    (
        "oci-config-not-json",
        {"config_bytes": b"\x89PNG\r\n\x1a\n not json"},
        "config blob is not JSON",
    ),
    ("oci-config-is-list", {"config_bytes": b"[]"}, "config blob is a JSON list"),
    (
        "oci-config-diff-ids-string",
        {"config_edit": _set(["rootfs", "diff_ids"], "sha256:00")},
        "rootfs.diff_ids is a string",
    ),
    ("oci-config-rootfs-missing", {"config_edit": _del(["rootfs"])}, "config without rootfs"),
    (
        "oci-config-diff-ids-short",
        {"config_edit": lambda c: _set(["rootfs", "diff_ids"], c["rootfs"]["diff_ids"][:1])(c)},
        "two layers but one diff_id",
    ),
    (
        "oci-config-diff-id-not-hex",
        {"config_edit": _set(["rootfs", "diff_ids", 0], "sha256:" + "z" * 64)},
        "a diff_id that is not hex",
    ),
]
for _id, _kw, _why in _OCI_EDITS:
    case(_id, "oci", metadata=True, why=_why)(_oci_edit(**_kw))


@case("docker-config-not-json", "docker", metadata=True, why="the config member is not JSON")
def _(ws: Workspace) -> Input:
    return _archive(ws, build_docker(config_bytes=b"\x00\x00 not json"))


@case("docker-config-diff-ids-short", "docker", metadata=True, why="two layers but one diff_id")
def _(ws: Workspace) -> Input:
    good = build_docker()
    return _archive(ws, build_docker(diff_ids=good.diff_ids[:1], layer_tars=good.layer_tars))


@case(
    "oci-mediatype-says-index-is-manifest",
    "oci",
    metadata=True,
    why="index.json says image index, the blob is an image manifest",
)
def _(ws: Workspace) -> Input:
    return _archive(ws, build_oci(index_edit=_set(["manifests", 0, "mediaType"], MT_OCI_INDEX)))


@case(
    "oci-mediatype-says-manifest-is-index",
    "oci",
    metadata=True,
    why="index.json says image manifest, the blob is a nested image index",
)
def _(ws: Workspace) -> Input:
    inner = build_oci()
    nested = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "manifests": [
                {
                    "mediaType": MT_OCI_MANIFEST,
                    "digest": inner.manifest_digest,
                    "size": len(inner.manifest),
                }
            ],
        }
    )
    nd = digest_of(nested)
    idx = json.loads(inner.index)
    idx["manifests"][0].update({"digest": nd, "size": len(nested), "mediaType": MT_OCI_MANIFEST})
    inner.replace_member("index.json", data=canonical_json(idx))
    inner.members.insert(-1, Member(blob_name(nd), nested))
    return _archive(ws, inner)


@case(
    "oci-manifest-own-mediatype-index",
    "oci",
    metadata=True,
    why="the manifest blob's own mediaType says image index but it has config+layers",
)
def _(ws: Workspace) -> Input:
    return _archive(ws, build_oci(manifest_edit=_set(["mediaType"], MT_OCI_INDEX)))


# ---- digests that are not sha256 hex


def _layer_digest_case(
    ws: Workspace, make: Callable[[str], str], store_as: str | None = None
) -> Input:
    """Rewrite layer 0's digest with ``make``; store the blob where a lax reader looks."""
    good = build_oci()
    new = make(good.layer_digests[0])
    b = build_oci(manifest_edit=_set(["layers", 0, "digest"], new))
    b.replace_member(b.layer_names[0], name=store_as or blob_name(new))
    return _archive(ws, b)


@case(
    "digest-uppercase",
    "oci",
    metadata=True,
    why="layer digest in upper-case hex, blob stored under the upper-case name",
)
def _(ws: Workspace) -> Input:
    return _layer_digest_case(ws, lambda d: "sha256:" + hex_of(d).upper())


@case(
    "digest-short",
    "oci",
    metadata=True,
    why="layer digest truncated to 12 hex digits, blob stored under that name",
)
def _(ws: Workspace) -> Input:
    return _layer_digest_case(ws, lambda d: d[: len("sha256:") + 12])


@case(
    "digest-md5",
    "oci",
    metadata=True,
    why="layer digest md5:<hex> (blob stored at blobs/md5/<hex>): unverifiable algorithm",
)
def _(ws: Workspace) -> Input:
    good = build_oci()
    md5 = "md5:" + hashlib.md5(good.layer_blobs[0]).hexdigest()
    return _layer_digest_case(ws, lambda _d: md5)


@case(
    "digest-traversal-layer",
    "oci",
    metadata=True,
    why="layer digest 'sha256:../../<x>' and a root member <x> with the right bytes",
)
def _(ws: Workspace) -> Input:
    # blobs/sha256/../../<x> is <x> at the archive root
    return _layer_digest_case(ws, lambda _d: f"sha256:../../{ws.token}", store_as=ws.token)


@case(
    "digest-traversal-config", "oci", metadata=True, why="config digest 'sha256:../../etc/passwd'"
)
def _(ws: Workspace) -> Input:
    return _archive(
        ws, build_oci(manifest_edit=_set(["config", "digest"], "sha256:../../etc/passwd"))
    )


@case(
    "digest-traversal-manifest",
    "oci",
    metadata=True,
    why="index.json manifest digest 'sha256:../../<x>' and a root member <x> = the manifest",
)
def _(ws: Workspace) -> Input:
    b = build_oci(index_edit=_set(["manifests", 0, "digest"], f"sha256:../../{ws.token}"))
    b.members.insert(-1, Member(ws.token, b.manifest))
    return _archive(ws, b)


def _layout_layer_named(ws: Workspace, digest: str) -> Input:
    """A layout dir whose layer 0 is named ``digest`` and not stored; a decoy with its bytes
    waits at ``outside/layer-decoy``."""
    _decoy(ws, "layer-decoy", build_oci().layer_blobs[0])
    b = build_oci(manifest_edit=_set(["layers", 0, "digest"], digest))
    b.drop_member(b.layer_names[0])
    return Input(write_layout(b, ws.inp / "layout"))


@case(
    "layout-digest-traversal-decoy",
    "layout",
    metadata=True,
    why="layout dir: layer digest 'sha256:../../../../outside/layer-decoy' (right bytes there)",
)
def _(ws: Workspace) -> Input:
    # <root>/in/layout/blobs/sha256/../../../../outside/layer-decoy == <root>/outside/layer-decoy
    return _layout_layer_named(ws, "sha256:../../../../outside/layer-decoy")


@case(
    "layout-digest-absolute-decoy",
    "layout",
    metadata=True,
    why="layout dir: layer digest 'sha256:/abs/outside/layer-decoy' (right bytes there)",
)
def _(ws: Workspace) -> Input:
    return _layout_layer_named(ws, f"sha256:{ws.outside / 'layer-decoy'}")


# ---- wrong diff_id, lying sizes, layers that are not tars


def _wrong_diff_id(
    ws: Workspace,
    build: Callable[..., Built],
    layer: int,
    image_names: Callable[[Built], tuple[str, ...]],
) -> Input:
    """The valid archive from ``build`` whose config gives ``layer`` a diff_id of other bytes:
    the error must name both diff_ids and the image."""
    good = build()
    wrong = digest_of(b"something else")
    diff_ids = list(good.diff_ids)
    diff_ids[layer] = wrong
    b = build(diff_ids=diff_ids)
    return _archive(
        ws,
        b,
        must_mention=(hex_of(wrong)[:12], hex_of(good.diff_ids[layer])[:12]),
        image_names=image_names(b),
    )


def _size_off_by(
    ws: Workspace, delta: int, edit: str, path: Sequence[str | int], blob: Callable[[Built], bytes]
) -> Input:
    """A valid OCI archive but for the size at ``path`` (in the JSON that ``edit`` names):
    the size of ``blob`` plus ``delta``."""
    good = build_oci()
    lying_size: dict[str, Any] = {edit: _set(path, len(blob(good)) + delta)}
    return _archive(ws, build_oci(**lying_size))


@case(
    "docker-wrong-diff-id",
    "docker",
    metadata=False,
    why="config diff_id for layer 1 is the sha256 of something else",
)
def _(ws: Workspace) -> Input:
    return _wrong_diff_id(ws, build_docker, 1, _docker_names)


@case(
    "oci-wrong-diff-id",
    "oci",
    metadata=False,
    why="config diff_id for layer 0 is the sha256 of something else (blob digests all fine)",
)
def _(ws: Workspace) -> Input:
    return _wrong_diff_id(ws, build_oci, 0, _oci_names)


@case("oci-layer-size-too-big", "oci", metadata=False, why="layer descriptor size is 1 too big")
def _(ws: Workspace) -> Input:
    return _size_off_by(ws, +1, "manifest_edit", ["layers", 0, "size"], lambda b: b.layer_blobs[0])


@case("oci-layer-size-too-small", "oci", metadata=False, why="layer descriptor size is 1 too small")
def _(ws: Workspace) -> Input:
    return _size_off_by(ws, -1, "manifest_edit", ["layers", 0, "size"], lambda b: b.layer_blobs[0])


@case("oci-config-size-lies", "oci", metadata=True, why="config descriptor size is 1 too big")
def _(ws: Workspace) -> Input:
    return _size_off_by(ws, +1, "manifest_edit", ["config", "size"], lambda b: b.config)


@case("oci-manifest-size-lies", "oci", metadata=True, why="index.json manifest size is 1 too small")
def _(ws: Workspace) -> Input:
    return _size_off_by(ws, -1, "index_edit", ["manifests", 0, "size"], lambda b: b.manifest)


NOT_A_TAR = b"this is a text file, not a tar archive\n" * 40


def _first_layer_stored_as(
    ws: Workspace, blob: bytes, build: Callable[..., Built] = build_oci
) -> Input:
    """The valid archive from ``build`` with layer 0 stored as ``blob``; diff_ids unchanged."""
    good = build()
    blobs = [blob, *good.layer_blobs[1:]]
    return _archive(ws, build(layer_blobs=blobs, diff_ids=good.diff_ids))


@case(
    "oci-layer-not-a-tar",
    "oci",
    metadata=False,
    why="gzip layer whose content is plain text; digest and diff_id both match it",
)
def _(ws: Workspace) -> Input:
    good = build_oci()
    tars = [NOT_A_TAR, good.layer_tars[1]]
    return _archive(ws, build_oci(layer_tars=tars))


@case(
    "docker-layer-not-a-tar",
    "docker",
    metadata=False,
    why="layer.tar is plain text; its diff_id matches it",
)
def _(ws: Workspace) -> Input:
    good = build_docker()
    return _archive(ws, build_docker(layer_tars=[good.layer_tars[0], NOT_A_TAR]))


@case(
    "oci-layer-gzip-garbage",
    "oci",
    metadata=False,
    why="layer says tar+gzip but is not gzip (like the 'insert binary content here' fixtures)",
)
def _(ws: Workspace) -> Input:
    return _first_layer_stored_as(ws, b"insert binary content here #1\n")


@case("empty-file", "oci", metadata=True, stdin=True, why="a zero-byte input")
def _(ws: Workspace) -> Input:
    return Input(_write(ws, b""))


@case("random-bytes", "oci", metadata=True, stdin=True, why="8 KiB of pseudo-random bytes")
def _(ws: Workspace) -> Input:
    data = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(256))
    return Input(_write(ws, data))


# ---- link cycles, deeply nested JSON


@case(
    "symlink-cycle",
    "docker",
    metadata=True,
    why="manifest.json -> config.json -> manifest.json (ggcr TestSymlinkCycle): 'link cycle'",
)
def _(ws: Workspace) -> Input:
    b = build_docker()
    b.replace_member("manifest.json", type=tarfile.SYMTYPE, linkname="config.json", data=b"")
    b.members.insert(0, Member("config.json", type=tarfile.SYMTYPE, linkname="manifest.json"))
    return _archive(ws, b)


@case("symlink-self", "oci", metadata=False, why="blobs/sha256/<layer> is a symlink to itself")
def _(ws: Workspace) -> Input:
    b = build_oci()
    name = b.layer_names[0]
    return _oci_link(ws, "layer", tarfile.SYMTYPE, name.rsplit("/", 1)[1])[1]


DEEP = 200_000  # far beyond Python's recursion limit: json.loads raises RecursionError


@case(
    "json-deep-docker-manifest",
    "docker",
    metadata=True,
    why="manifest.json is 200 000 nested arrays (RecursionError in a naive parser)",
)
def _(ws: Workspace) -> Input:
    return _archive(ws, build_docker(manifest_bytes=b"[" * DEEP + b"]" * DEEP))


@case("json-deep-oci-index", "oci", metadata=True, why="index.json is 200 000 nested objects")
def _(ws: Workspace) -> Input:
    raw = b'{"a":' * DEEP + b"1" + b"}" * DEEP
    return _archive(ws, build_oci(index_bytes=raw))


@case(
    "json-deep-oci-config",
    "oci",
    metadata=True,
    why="config.history is 200 000 nested arrays (descriptor correct)",
)
def _(ws: Workspace) -> Input:
    good = json.loads(build_oci().config)
    head, tail = canonical_json(good).rsplit(b"}", 1)
    raw = head + b',"x":' + b"[" * DEEP + b"]" * DEEP + b"}" + tail
    return _archive(ws, build_oci(config_bytes=raw))


# ---- decompression bombs
# No ratio marks a bomb (a real layer with a 1 GB file of zeros inflates 1000:1), so sealift bounds
# decompression by what it knows: the uncompressed size recorded beside a layer, the free space
# where it writes, and a cap far above any real layer (1 TiB). A bomb that only the cap stops
# would take minutes to reach it, so those cases lower the cap (SEALIFT_MAX_UNCOMPRESSED) to
# show it is enforced, and enforced early; the free-space bound is tested in test_codecs.py.

GZIP_BOMB_MIB = 16 * 1024  # 16 GiB of zeros in ~16 MiB of gzip
ZSTD_BOMB_BYTES = 64 * GIB  # 64 GiB of zeros in ~2 MiB of zstd
UNCOMPRESSED_SIZE_KEY = "io.sealift.layer.uncompressed.size"
LOW_CAP = {"SEALIFT_MAX_UNCOMPRESSED": str(256 * MIB)}


def _recorded_size(size: int) -> JsonEdit:
    """A manifest edit recording ``size`` as layer 0's uncompressed size (as sealift does)."""

    def edit(manifest: Any) -> None:
        manifest["layers"][0]["annotations"] = {UNCOMPRESSED_SIZE_KEY: str(size)}

    return edit


def _first_layer_lying(ws: Workspace, blob: bytes, how: Compression) -> Input:
    """An OCI archive whose layer 0 is ``blob`` and whose manifest records 1 MiB for it."""
    good = build_oci(compression=how)
    blobs = [blob, *good.layer_blobs[1:]]
    built = build_oci(
        compression=how,
        layer_blobs=blobs,
        diff_ids=good.diff_ids,
        manifest_edit=_recorded_size(MIB),
    )
    return _archive(ws, built)


@case(
    "bomb-oci-gzip-layer-lies-about-its-size",
    "oci",
    metadata=False,
    bomb=True,
    why="a tar+gzip layer recorded as 1 MiB uncompressed that inflates to 16 GiB of zeros",
)
def _(ws: Workspace) -> Input:
    return _first_layer_lying(ws, gzip_zeros_bomb(GZIP_BOMB_MIB), "gzip")


@case(
    "bomb-oci-zstd-layer-lies-about-its-size",
    "oci",
    metadata=False,
    bomb=True,
    why="a tar+zstd layer recorded as 1 MiB uncompressed that inflates to 64 GiB of zeros",
)
def _(ws: Workspace) -> Input:
    return _first_layer_lying(ws, zstd_zeros_bomb(ZSTD_BOMB_BYTES), "zstd")


@case(
    "bomb-oci-zstd-layer-over-the-cap",
    "oci",
    metadata=False,
    bomb=True,
    env=LOW_CAP,
    why="a tar+zstd layer with no recorded size that inflates to 64 GiB of zeros, past the cap",
)
def _(ws: Workspace) -> Input:
    zstd_oci = partial(build_oci, compression="zstd")
    return _first_layer_stored_as(ws, zstd_zeros_bomb(ZSTD_BOMB_BYTES), zstd_oci)


@case(
    "bomb-docker-gzip-layer-over-the-cap",
    "docker",
    metadata=False,
    bomb=True,
    env=LOW_CAP,
    why="a docker-save layer.tar that is gzip of 16 GiB of zeros, past the cap",
)
def _(ws: Workspace) -> Input:
    return _first_layer_stored_as(ws, gzip_zeros_bomb(GZIP_BOMB_MIB), build_docker)


def _member_header(name: str, size: int) -> bytes:
    """A tar header announcing ``size`` bytes of content for ``name``."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    return info.tobuf(tarfile.GNU_FORMAT)


def _oci_stream_start_with_huge_blob(ws: Workspace, size: int) -> bytes:
    """An OCI archive's first tar member, then the header of a blob of ``size`` bytes."""
    head = tar_bytes([Member("oci-layout", OCI_LAYOUT)])[:1024]  # member, no EOF blocks
    head += _member_header("blobs/sha256/" + sha256_hex(ws.token.encode()), size)
    assert len(head) % 512 == 0
    return head


@case(
    "bomb-outer-zstd",
    "oci",
    metadata=True,
    bomb=True,
    stdin=True,
    env=LOW_CAP,
    why="a .tar.zst whose stream is a tar header for a 64 GiB member, then zeros",
)
def _(ws: Workspace) -> Input:
    head = _oci_stream_start_with_huge_blob(ws, ZSTD_BOMB_BYTES)
    return Input(_write(ws, zstd_zeros_bomb(ZSTD_BOMB_BYTES, prefix=head), "input.tar.zst"))


@case(
    "bomb-outer-gzip",
    "oci",
    metadata=True,
    bomb=True,
    stdin=True,
    env=LOW_CAP,
    why="a .tar.gz whose stream is a tar header for a 16 GiB member, then zeros",
)
def _(ws: Workspace) -> Input:
    head = _oci_stream_start_with_huge_blob(ws, GZIP_BOMB_MIB * MIB)
    return Input(_write(ws, gzip_zeros_bomb(GZIP_BOMB_MIB, prefix=head), "input.tar.gz"))


@case(
    "bomb-metadata-json",
    "docker",
    metadata=True,
    bomb=True,
    stdin=True,
    why="a .tar.zst whose manifest.json member is 8 GiB of spaces: metadata must be capped",
)
def _(ws: Workspace) -> Input:
    head = _member_header("manifest.json", 8 * GIB)
    return Input(_write(ws, zstd_zeros_bomb(8 * GIB, prefix=head, fill=b" "), "input.tar.zst"))


del _


# --------------------------------------------------------------------------------------
# running the CLI (shared by the test modules in this directory)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"
PEER_FIXTURES = SHARED / "fixtures" / "peer"
TOOL_FIXTURES = SHARED / "fixtures" / "tools"
ERROR_PREFIX = "sealift: error: "


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: str
    elapsed: float

    def __str__(self) -> str:
        out = self.stdout[:2000].decode(errors="replace")
        return (
            f"sealift {' '.join(self.args)}\n  exit {self.returncode} in {self.elapsed:.1f}s\n"
            f"  stderr: {self.stderr[:3000]!r}\n  stdout: {out!r}"
        )

    def json(self) -> Any:
        return json.loads(self.stdout)


def _limits(fsize: int, address_space: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return apply


def run_sealift(
    *args: str,
    cwd: Path,
    tmp: Path | None = None,
    stdin: bytes | Path | None = None,
    timeout: float = 60,
    limited: bool = False,
    env: Mapping[str, str] | None = None,
) -> Result:
    """Run ``python -m sealift ARGS`` in a subprocess.

    ``stdin`` bytes are piped; a ``stdin`` path is opened and given as the file itself
    (as ``sealift ... - < file`` does).

    ``limited`` caps each written file at 1 GiB and the address space at 4 GiB, so a tool
    without its own caps cannot fill the disk or the memory of the test machine.
    A run that exceeds ``timeout`` is killed and reported with returncode -9.
    ``env`` adds to the environment.
    """
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT / "src"), environment.get("PYTHONPATH", "")) if p
    )
    if tmp is not None:
        environment["TMPDIR"] = str(tmp)
    environment.pop("SEALIFT_DEBUG", None)
    start = time.monotonic()
    stdin_file = stdin.open("rb") if isinstance(stdin, Path) else None
    piped = stdin if isinstance(stdin, bytes) else None
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sealift", *args],
            cwd=cwd,
            env=environment,
            input=piped,
            stdin=stdin_file if stdin_file else (None if piped is not None else subprocess.DEVNULL),
            capture_output=True,
            timeout=timeout,
            preexec_fn=_limits(GIB, 4 * GIB) if limited else None,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if exc.stderr else ""
        return Result(tuple(args), -9, exc.stdout or b"", stderr + "\n<killed: timeout>", timeout)
    finally:
        if stdin_file:
            stdin_file.close()
    return Result(
        tuple(args),
        proc.returncode,
        proc.stdout,
        proc.stderr.decode(errors="replace"),
        time.monotonic() - start,
    )


def assert_clean_error(r: Result, code: int = 1) -> str:
    """Exit ``code``, exactly one stderr line starting ``sealift: error: ``, no traceback."""
    assert "Traceback" not in r.stderr, str(r)
    assert r.returncode == code, str(r)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}\n{r}"
    assert lines[0].startswith(ERROR_PREFIX), str(r)
    return lines[0]


def assert_ok(r: Result) -> None:
    assert "Traceback" not in r.stderr, str(r)
    assert r.returncode == 0, str(r)
    assert ERROR_PREFIX not in r.stderr, str(r)


_HEX64 = set("0123456789abcdef")


def _is_digest(value: object) -> bool:
    if not isinstance(value, str) or not value.startswith("sha256:"):
        return False
    hexpart = value[len("sha256:") :]
    return len(hexpart) == 64 and set(hexpart) <= _HEX64


def check_inspect_shape(report: Any) -> None:
    """``inspect --json`` has the documented shape (extra keys are allowed)."""
    assert isinstance(report, dict) and isinstance(report.get("images"), list), report
    for img in report["images"]:
        assert _is_digest(img["id"]), img["id"]
        assert isinstance(img["tags"], list) and all(isinstance(t, str) for t in img["tags"])
        for t in img["tags"]:
            # normalised like docker: a domain, a path, and a tag or digest
            assert "/" in t and (":" in t.rsplit("/", 1)[1] or "@" in t), t
        assert isinstance(img["ref_names"], list)
        assert all(isinstance(r, str) for r in img["ref_names"])
        assert isinstance(img["platform"], str) and img["platform"].count("/") >= 1
        assert img["manifest_digest"] is None or _is_digest(img["manifest_digest"]), img
        assert isinstance(img["layers"], list)
        for layer in img["layers"]:
            assert _is_digest(layer["digest"]), layer
            assert _is_digest(layer["diff_id"]), layer
            assert isinstance(layer["size"], int) and not isinstance(layer["size"], bool)
            assert layer["size"] >= 0
            assert isinstance(layer["media_type"], str) and layer["media_type"], layer
            assert isinstance(layer["shared"], bool), layer


# --------------------------------------------------------------------------------------
# an independent reader for what sealift writes (does not trust sealift's own verify)


def _decompress_layer(blob: bytes, media_type: str) -> bytes:
    if media_type.endswith("gzip"):
        return gzip.decompress(blob)
    if media_type.endswith("zstd"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    assert media_type.endswith(".tar") or media_type.endswith("tar"), media_type
    return blob


def _written_files(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            assert not p.is_symlink(), f"{p} is a symlink"
            if p.is_file():
                files[str(p.relative_to(path))] = p.read_bytes()
            else:
                assert p.is_dir(), f"{p} is neither a file nor a directory"
        return files
    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            name = info.name
            assert not name.startswith("/") and ".." not in name.split("/"), name
            assert info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE), name
            if info.isdir():
                continue
            assert name not in files, f"duplicate member {name}"
            f = tar.extractfile(info)
            assert f is not None
            files[name] = f.read()
    return files


def check_written_archive(path: Path) -> set[str]:
    """Check an archive (or layout directory) sealift wrote, with Python alone.

    Returns the image (config) ids. The tar must be tame (relative names, no ``..``, only
    files and directories, no duplicate names; a layout has no symlinks); every blob must
    hash to its name and descriptor; every layer must decompress to its config's diff_id,
    through ``index.json`` and through ``manifest.json`` when present.
    """
    files = _written_files(path)
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert sha256_hex(data) == name.rsplit("/", 1)[1], f"{name} does not match its name"
    ids: set[str] = set()

    def blob(desc: dict[str, Any]) -> bytes:
        name = blob_name(desc["digest"])
        assert name in files, f"{path.name}: referenced blob {name} is missing"
        data = files[name]
        assert len(data) == desc["size"], desc
        return data

    def image(manifest: dict[str, Any]) -> None:
        config_raw = blob(manifest["config"])
        ids.add(manifest["config"]["digest"])
        if manifest["config"]["mediaType"] not in (MT_OCI_CONFIG, MT_DOCKER_CONFIG):
            for layer in manifest["layers"]:  # an artifact: opaque blobs
                blob(layer)
            return
        config = json.loads(config_raw)
        diff_ids = config["rootfs"]["diff_ids"]
        assert len(diff_ids) == len(manifest["layers"])
        for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            assert digest_of(_decompress_layer(blob(layer), layer["mediaType"])) == diff_id

    def attestation(manifest: dict[str, Any]) -> None:
        """BuildKit's attestation manifest: its blobs are in-toto JSON, and it is no image."""
        blob(manifest["config"])
        for layer in manifest["layers"]:
            json.loads(blob(layer))

    def walk(desc: dict[str, Any]) -> None:
        doc = json.loads(blob(desc))
        if "manifests" in doc:
            for child in doc["manifests"]:
                walk(child)
        elif (desc.get("annotations") or {}).get(ATTESTATION_KEY) == "attestation-manifest":
            attestation(doc)
        else:
            image(doc)

    if "index.json" in files:
        for desc in json.loads(files["index.json"])["manifests"] or []:
            walk(desc)
    if "manifest.json" in files:
        docker_ids: set[str] = set()
        for entry in json.loads(files["manifest.json"]):
            config_raw = files[entry["Config"]]
            config = json.loads(config_raw)
            docker_ids.add(digest_of(config_raw))
            for name, diff_id in zip(entry["Layers"], config["rootfs"]["diff_ids"], strict=True):
                data = files[name]
                kind = (
                    "gzip"
                    if data[:2] == b"\x1f\x8b"
                    else "zstd"
                    if data[:4] == _ZSTD_MAGIC
                    else "tar"
                )
                assert digest_of(_decompress_layer(data, kind)) == diff_id, name
        if "index.json" in files:
            assert docker_ids <= ids or not ids, "manifest.json and index.json disagree"
        ids |= docker_ids
    assert ids, "no image found"
    return ids
