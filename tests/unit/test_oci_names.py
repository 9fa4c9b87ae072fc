"""``org.opencontainers.image.ref.name``: written in the familiar form docker prints (what skopeo
users type: ``oci-archive:stack.tar:myapp:1.0``), the fully qualified name kept in
``io.containerd.image.name``; read back in all three forms writers use."""

from __future__ import annotations

import json

import pytest

from sealift import media
from sealift.digest import sha256_of
from sealift.formats.read import names_from_annotations
from sealift.formats.write import index_document
from sealift.model import Descriptor, Entry, Image, ImageConfig, Manifest, canonical_json
from sealift.reference import Reference

REF = "org.opencontainers.image.ref.name"
FULL = "io.containerd.image.name"


@pytest.mark.parametrize(
    ("familiar", "full"),
    [
        ("myapp:1.0", "docker.io/library/myapp:1.0"),
        ("myorg/api:1.2", "docker.io/myorg/api:1.2"),
        ("registry:5000/x/y:1", "registry:5000/x/y:1"),
        ("ghcr.io/o/app:v2", "ghcr.io/o/app:v2"),
    ],
)
def test_the_ref_name_is_written_as_docker_prints_it(familiar: str, full: str) -> None:
    entry = Entry(sample_entry().target, (Reference.parse(familiar),))
    (descriptor,) = json.loads(index_document([entry]))["manifests"]
    assert descriptor["annotations"] == {REF: familiar, FULL: full}
    assert names_from_annotations(descriptor["annotations"]) == ((Reference.parse(full),), ())


@pytest.mark.parametrize(
    "annotations",
    [
        {REF: "myapp:1.0"},  # familiar (sealift, podman's short names)
        {REF: "docker.io/library/myapp:1.0"},  # fully qualified (sealift before, podman)
        {REF: "1.0", FULL: "docker.io/library/myapp:1.0"},  # Docker 25+: the bare tag
        {REF: "myapp:1.0", FULL: "docker.io/library/myapp:1.0"},
        {REF: "docker.io/library/myapp:1.0", FULL: "docker.io/library/myapp:1.0"},
    ],
)
def test_every_form_reads_back_as_the_same_tag(annotations: dict[str, str]) -> None:
    tags, ref_names = names_from_annotations(annotations)
    assert tags == (Reference.parse("myapp:1.0"),)
    if FULL in annotations:
        assert ref_names == (), "a ref name that restates the full name is not a name of its own"


def test_two_repositories_bare_tags_stay_apart() -> None:
    base = names_from_annotations({REF: "1", FULL: "docker.io/fixture/base:1"})
    app = names_from_annotations({REF: "1", FULL: "docker.io/fixture/app:1"})
    assert base == ((Reference.parse("fixture/base:1"),), ())
    assert app == ((Reference.parse("fixture/app:1"),), ())


def test_a_ref_name_that_is_no_reference_is_kept_as_it_is() -> None:
    assert names_from_annotations({REF: "app-1"}) == ((), ("app-1",))
    other = names_from_annotations({REF: "stable", FULL: "docker.io/library/myapp:1.0"})
    assert other == ((Reference.parse("myapp:1.0"),), ("stable",))


def sample_entry() -> Entry:
    """An image with a manifest (its layers are not needed to name it)."""
    config = ImageConfig.parse(
        canonical_json(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [str(sha256_of(b""))]},
            }
        )
    )
    config_descriptor = Descriptor(media.OCI_CONFIG, config.digest, len(config.raw))
    layer = Descriptor(media.OCI_LAYER, sha256_of(b""), 0)
    return Entry(Image(config, (), Manifest.build(config_descriptor, [layer])))
