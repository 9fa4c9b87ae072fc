"""A minimal ssh-agent client: list the agent's keys and ask it to sign (draft-miller-ssh-agent).

Only two requests are needed: REQUEST_IDENTITIES and SIGN_REQUEST (with the rsa-sha2-512 flag
for RSA keys). The agent is found through ``SSH_AUTH_SOCK``, as ssh and ssh-keygen find it.
"""

from __future__ import annotations

import os
import socket

from sealift.signing.keys import RSA, PublicKey
from sealift.signing.wire import SignatureError, WireReader, string, uint32

REQUEST_IDENTITIES = 11
IDENTITIES_ANSWER = 12
SIGN_REQUEST = 13
SIGN_RESPONSE = 14
FAILURE = 5
RSA_SHA2_512 = 4
_MAX_MESSAGE = 256 * 1024
_TIMEOUT = 60.0  # long enough for an agent that confirms each use (ssh-add -c)


class Agent:
    """A connection to the ssh-agent listening on ``socket_path``."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    @classmethod
    def from_environment(cls) -> Agent | None:
        path = os.environ.get("SSH_AUTH_SOCK")
        return cls(path) if path else None

    def keys(self) -> list[PublicKey]:
        reply = self._request(bytes([REQUEST_IDENTITIES]), IDENTITIES_ANSWER, "list its keys")
        count = reply.uint32()
        keys = []
        for _ in range(count):
            keys.append(PublicKey(reply.string()))
            reply.string()  # comment
        return keys

    def has(self, key: PublicKey) -> bool:
        return key in self.keys()

    def sign(self, key: PublicKey, data: bytes) -> bytes:
        """The agent's SSH signature blob of ``data`` with ``key``."""
        flags = RSA_SHA2_512 if key.key_type == RSA else 0
        message = bytes([SIGN_REQUEST]) + string(key.blob) + string(data) + uint32(flags)
        reply = self._request(message, SIGN_RESPONSE, f"sign with {key}")
        signature = reply.string()
        reply.end()
        return signature

    def _request(self, message: bytes, expected: int, doing: str) -> WireReader:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(_TIMEOUT)
                connection.connect(self.socket_path)
                connection.sendall(string(message))
                length = int.from_bytes(_receive(connection, 4), "big")
                if not 0 < length <= _MAX_MESSAGE:
                    raise SignatureError(f"ssh-agent sent a malformed reply ({length} bytes)")
                reply = _receive(connection, length)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise SignatureError(f"cannot reach ssh-agent at {self.socket_path}: {reason}") from exc
        if reply[0] == FAILURE:
            raise SignatureError(f"ssh-agent refused to {doing}")
        if reply[0] != expected:
            raise SignatureError(f"ssh-agent answered {reply[0]} when asked to {doing}")
        return WireReader(reply[1:], "ssh-agent's reply")


def _receive(connection: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = connection.recv(min(size, 65536))
        if not chunk:
            raise SignatureError("ssh-agent closed the connection mid-reply")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
