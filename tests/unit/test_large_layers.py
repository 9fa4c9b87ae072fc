"""A real image may hold a 1 GiB file of zeros (a preallocated database, a disk image): its
layer compresses better than 1000:1 and is no decompression bomb. It must convert and verify,
however it is compressed, and so must every archive sealift writes of it.

The layer is built without compressing a gibibyte (hostile.py's zero streams), and sealift streams
it: nothing here holds it in memory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit import hostile
from tests.unit.hostile import MIB, Result, assert_ok, run_sealift

pytestmark = pytest.mark.timeout(240)

FILE_SIZE = 1024 * MIB
# the file, then the tar's end blocks and padding: zeros to a whole MiB after the header
ZEROS_AFTER_HEADER = FILE_SIZE + MIB


def zeros_layer(codec: hostile.Compression) -> tuple[bytes, str]:
    """A layer whose tar holds one 1 GiB file of zeros, compressed; and its diff_id."""
    info = tarfile.TarInfo("var/lib/db/preallocated.img")
    info.size = FILE_SIZE
    info.mtime = 0
    header = info.tobuf(tarfile.GNU_FORMAT)
    hasher = hashlib.sha256(header)
    chunk = bytes(MIB)
    for _ in range(ZEROS_AFTER_HEADER // MIB):
        hasher.update(chunk)
    diff_id = "sha256:" + hasher.hexdigest()
    if codec == "gzip":
        return hostile.gzip_zeros_bomb(ZEROS_AFTER_HEADER // MIB, prefix=header), diff_id
    return hostile.zstd_zeros_bomb(ZEROS_AFTER_HEADER, prefix=header), diff_id


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    for name in ("cwd", "tmp"):
        (tmp_path / name).mkdir()
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def sealift(work: Path, *args: str) -> Result:
    result = run_sealift(*args, cwd=work / "cwd", tmp=work / "tmp", timeout=180)
    assert_ok(result)
    return result


def only_layer(work: Path, archive: Path) -> dict[str, object]:
    (image,) = sealift(work, "inspect", "--json", str(archive)).json()["images"]
    (layer,) = image["layers"]
    assert isinstance(layer, dict)
    return layer


def recorded_sizes(archive: Path) -> list[str | None]:
    """The uncompressed sizes sealift recorded in the archive's manifests."""
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        sizes = []
        for descriptor in index["manifests"]:
            name = hostile.blob_name(descriptor["digest"])
            manifest = json.load(tar.extractfile(name))  # type: ignore[arg-type]
            for layer in manifest["layers"]:
                sizes.append(layer.get("annotations", {}).get(hostile.UNCOMPRESSED_SIZE_KEY))
    return sizes


@pytest.mark.parametrize(("stored", "other"), [("gzip", "zstd"), ("zstd", "gzip")])
def test_a_gibibyte_of_zeros_round_trips(
    stored: hostile.Compression, other: hostile.Compression, work: Path
) -> None:
    blob, diff_id = zeros_layer(stored)
    assert FILE_SIZE / len(blob) > 250, "past the ratio that used to be refused"
    built = hostile.build_oci(
        compression=stored, layer_tars=[b""], layer_blobs=[blob], diff_ids=[diff_id]
    )
    source = work / "input.tar"
    source.write_bytes(built.tar())
    sealift(work, "verify", str(source))

    converted = work / "converted.tar"
    sealift(work, "convert", "--compression", other, str(source), f"archive:{converted}")
    sealift(work, "verify", str(converted))
    assert only_layer(work, converted)["diff_id"] == diff_id
    assert recorded_sizes(converted) == [str(512 + ZEROS_AFTER_HEADER)]

    back = work / "back.tar"
    sealift(work, "convert", "--compression", stored, str(converted), f"archive:{back}")
    assert only_layer(work, back)["diff_id"] == diff_id  # convert checked it against that
    assert list((work / "tmp").iterdir()) == []
