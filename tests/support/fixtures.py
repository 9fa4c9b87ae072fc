"""What each archive in ``../shared/fixtures/tools`` holds (see its SOURCES.md).

Note on image IDs: an image ID is the digest of the config blob. The Docker-written archives
carry Docker's config (IDs ``DOCKER_APP_ID`` / ``DOCKER_BASE_ID``, as SOURCES.md lists). skopeo and
podman rewrote the config when they made OCI images from them (Docker-only fields dropped), so
every OCI fixture carries another config: ``OCI_APP_ID`` / ``OCI_BASE_ID``. A faithful converter
keeps whichever config it was given, so loading a converted OCI fixture must give the OCI IDs.
The layers (diff_ids) are the same in all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "BUILDX_APP_ID",
    "BUILDX_INDEX_DIGEST",
    "DIFF_IDS",
    "DOCKER26_MANIFEST_DIGESTS",
    "DOCKER_APP_ID",
    "DOCKER_BASE_ID",
    "OCI_APP_ID",
    "OCI_BASE_ID",
    "TOOL_FIXTURE_IMAGES",
    "ToolFixture",
]

DOCKER_BASE_ID = "sha256:fad09a2bf06a39fe27f663fab24fd6181ea54a8ac9c88443aaab0d1453263a7a"
DOCKER_APP_ID = "sha256:8abab36f1a39cc694e1d7d1a64f83d3afa533724c2312bbd483d16956bca7b5c"
OCI_BASE_ID = "sha256:672f0254de937d57f04ec6087253507ff199b111c6fb2e1731b1119c5380b636"
OCI_APP_ID = "sha256:05a5e4872bd3c36052605024e96515c9b7b71fbc6a5cba894740f79036f55ea2"

# docker26-buildx-provenance.tar: att/app:1, built by buildx, with a provenance attestation
BUILDX_APP_ID = "sha256:3f339950253b04fd8d891b48d76567991702a4f91d46a9ef4d72b846b6767371"
BUILDX_INDEX_DIGEST = "sha256:b26fa8b8d20a574584f4319214da467281cf7df4827148356434207feeb4429b"
BUILDX_MANIFEST_DIGEST = "sha256:382054257fb2ea997e245335f39bf2836d5a9bf7cfe2383c0e2ba65e1af13c1c"
BUILDX_ATTESTATION_DIGEST = (
    "sha256:7caedf51e324dbc8664fff506a97155517c8ee58e69ec79a5cef619068bea195"
)
# docker26-save-multi.tar: the manifests Docker 26 made (uncompressed layers) and reports
DOCKER26_MANIFEST_DIGESTS = {
    DOCKER_BASE_ID: "sha256:d3a03b45244fcecdea9f05ab85575a340797c2afc81990506ab1335af9478e44",
    DOCKER_APP_ID: "sha256:a20baf01bc901621788b2d56b8ebc7f60e0190dcb31c1635ee9a9599f948519f",
}

DIFF_IDS = (
    "sha256:fac4b9de311b7801d9df27bdbf2745b1b020cb8571db8e632515b43018b3b66a",
    "sha256:e5e1a2198f0e950d8cea163f3bd49d28593b24620bd45f7f65c3b734cade6b60",
    "sha256:3fa626e6504b41f01fdb448a86bd3a5118d17475fadb6c15be6b2c46ab02a9a4",
)
APP_OUTPUT = "app v1\ndemo\n"

Kind = Literal["docker-archive", "oci-archive", "oci-layout"]


@dataclass(frozen=True)
class ToolFixture:
    """One fixture: its format and ``ref as named inside -> image ID``."""

    kind: Kind
    ids: dict[str, str]
    # For an index with several platforms: "os/arch[/variant]" -> image ID.
    platforms: dict[str, str] = field(default_factory=dict)

    @property
    def image_ids(self) -> set[str]:
        return set(self.ids.values())

    @property
    def single_image(self) -> bool:
        return len(self.image_ids) == 1 and not self.platforms


TOOL_FIXTURE_IMAGES: dict[str, ToolFixture] = {
    "docker20-save-multi.tar": ToolFixture(
        "docker-archive",
        {
            "fixture/base:1": DOCKER_BASE_ID,
            "fixture/base:latest": DOCKER_BASE_ID,
            "fixture/app:1": DOCKER_APP_ID,
        },
    ),
    "docker20-save-app.tar.gz": ToolFixture("docker-archive", {"fixture/app:1": DOCKER_APP_ID}),
    "docker20-save-app.tar.zst": ToolFixture("docker-archive", {"fixture/app:1": DOCKER_APP_ID}),
    "docker20-save-app.tar.xz": ToolFixture("docker-archive", {"fixture/app:1": DOCKER_APP_ID}),
    "docker26-save-multi.tar": ToolFixture(
        "docker-archive",
        {
            "fixture/base:1": DOCKER_BASE_ID,
            "fixture/base:latest": DOCKER_BASE_ID,
            "fixture/app:1": DOCKER_APP_ID,
        },
    ),
    # an index holding the image and its attestation: only the image counts, and loads
    "docker26-buildx-provenance.tar": ToolFixture("docker-archive", {"att/app:1": BUILDX_APP_ID}),
    "podman-save-multi.tar": ToolFixture(
        "docker-archive",
        {"localhost/fixture/app:1": DOCKER_APP_ID, "localhost/fixture/base:1": DOCKER_BASE_ID},
    ),
    "skopeo-oci-archive-gzip.tar": ToolFixture("oci-archive", {"app-1": OCI_APP_ID}),
    "skopeo-oci-archive-zstd.tar": ToolFixture("oci-archive", {"app-1": OCI_APP_ID}),
    "podman-oci-archive.tar": ToolFixture("oci-archive", {"localhost/fixture/app:1": OCI_APP_ID}),
    "skopeo-oci-layout": ToolFixture("oci-layout", {"app-1": OCI_APP_ID, "base-1": OCI_BASE_ID}),
    "podman-multiplatform-oci-layout": ToolFixture(
        "oci-layout",
        {"multi-1": OCI_APP_ID},
        platforms={"linux/amd64": OCI_APP_ID, "linux/arm64/v8": OCI_BASE_ID},
    ),
}
