"""Skip locally, fail under CI: how tests say that a prerequisite is missing."""

from __future__ import annotations

import os

import pytest

from tests.support.peers import missing_tools

__all__ = ["in_ci", "require", "require_tools"]


def in_ci() -> bool:
    """True when ``CI`` is set to 1/true/yes (CI runs ``.ci/run`` with ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(reason: str | None) -> None:
    """Skip (locally) or fail (under CI=true) when ``reason`` says something is missing."""
    if not reason:
        return
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def require_tools(*names: str) -> None:
    """Root and these commands (or absolute paths), else skip/fail as ``require`` does."""
    if os.geteuid() != 0:
        require("needs root")
    missing = missing_tools(*names)
    if missing:
        require(f"missing {', '.join(missing)} (run scripts/install-test-deps)")
