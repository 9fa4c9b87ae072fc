"""Helpers for tests that drive real engines and tools.

dockerd, containerd, podman, skopeo, sshd and a registry, each private to the test session.
"""
