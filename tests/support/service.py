"""What every process the tests start and stop has in common.

A :class:`Service` is started with ``start()`` and stopped with ``stop()``; ``with`` does both.
:func:`running` is the body of a pytest fixture that owns one.
"""

from __future__ import annotations

import atexit
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TypeVar

__all__ = ["Service", "running"]


class Service(ABC):
    """A daemon the tests start; its output goes to ``log_path``."""

    log_path: Path
    _log: IO[bytes] | None = None

    @abstractmethod
    def start(self) -> Self:
        """Start and wait until ready; on failure, stop what was started and raise."""

    @abstractmethod
    def stop(self) -> None:
        """Stop everything started, also after a failed or partial start."""

    def _open_log(self) -> IO[bytes]:
        """Open ``log_path`` for appending, to take the daemon's output; see :meth:`_close_log`."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the daemon
        return self._log

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


ServiceT = TypeVar("ServiceT", bound=Service)


def running(service: ServiceT) -> Iterator[ServiceT]:
    """Start ``service``, yield it, stop it; also stopped at exit should the session die first.

    For fixtures: ``yield from running(Registry(workdir))``.
    """
    atexit.register(service.stop)
    with service:
        yield service
