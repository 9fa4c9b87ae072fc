"""Pushing and pulling images over SSH: the wire protocol, the remote agent and its staging.

See docs/protocol.md for the conversation; :mod:`sealift.remote.hosts` drives it for many hosts.
"""
