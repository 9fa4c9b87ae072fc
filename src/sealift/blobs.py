"""A content-addressed blob store on disk: temp file + rename, skip if present.

Used as the spool for streamed inputs and transcoded layers, and as the storage of an OCI layout.
Blobs are written under a temporary name and renamed to their digest only once complete, so a
crash or Ctrl-C never leaves a half blob under a digest name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, cast

from sealift.digest import Digest
from sealift.errors import DigestMismatchError
from sealift.verify import HashingWriter


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: Digest) -> Path:
        return self.root / digest.algorithm / digest.encoded

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def open(self, digest: Digest) -> IO[bytes]:
        return self.path(digest).open("rb")

    def size(self, digest: Digest) -> int:
        return self.path(digest).stat().st_size

    def add(
        self, write: Callable[[IO[bytes]], None], expected: Digest | None = None
    ) -> tuple[Digest, int]:
        """Store what ``write`` writes; return its digest and size. Skips a blob already present."""
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=self.root / "sha256", prefix=".incoming-")
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as file:
                hashing = HashingWriter(file)
                write(cast(IO[bytes], hashing))
            digest = hashing.digest
            if expected is not None and digest != expected:
                raise DigestMismatchError(f"blob {expected}: content hashes to {digest}")
            final = self.path(digest)
            if final.exists():
                temp.unlink()
            else:
                temp.replace(final)
            return digest, hashing.size
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def add_bytes(self, data: bytes) -> tuple[Digest, int]:
        def write(out: IO[bytes]) -> None:
            out.write(data)

        return self.add(write)


def make_spool_dir(prefix: str = "sealift-") -> tempfile.TemporaryDirectory[str]:
    """A private temporary directory for spooling, under SEALIFT_TMPDIR or the system default."""
    base = os.environ.get("SEALIFT_TMPDIR") or None
    return tempfile.TemporaryDirectory(prefix=prefix, dir=base)
