"""``sealift serve``: a read-only OCI distribution registry over one archive or layout.

``source`` opens what is served, ``content`` turns its images into the tables a registry needs
(and verifies every blob once, at start-up), ``api`` answers the distribution API's read
requests, ``server`` listens (HTTP or HTTPS, threaded, bounded).
"""

from sealift.serving.content import Content, ServedBlob, ServedManifest, verify_blobs
from sealift.serving.server import (
    ListenAddress,
    RegistryServer,
    exposure_warning,
    is_loopback,
    tls_context,
)
from sealift.serving.source import PinnedArchive, open_served_source

__all__ = [
    "Content",
    "ListenAddress",
    "PinnedArchive",
    "RegistryServer",
    "ServedBlob",
    "ServedManifest",
    "exposure_warning",
    "is_loopback",
    "open_served_source",
    "tls_context",
    "verify_blobs",
]
