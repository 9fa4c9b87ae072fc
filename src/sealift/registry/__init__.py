"""The client side of the OCI distribution API: talk to a registry as docker and podman do.

- ``names``: ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` references, parsed strictly.
- ``credentials``: the logins docker and podman users already have (config.json, auth.json,
  ``docker-credential-*`` helpers).
- ``tls``: which CAs to trust and when plain HTTP is allowed.
- ``auth``: HTTP basic and the bearer-token flow (challenge, scoped token, refresh).
- ``transport``: a pooled, thread-safe HTTP session with retries and error translation.
- ``client``: the API calls (manifests, blobs, mounts, tags, catalog).
- ``upload``: one blob up, monolithic or chunked, resumed after a cut.

The image ends built on it are in :mod:`sealift.ends.registry`.
"""
