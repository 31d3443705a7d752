"""Paths as users type them."""

from __future__ import annotations

from pathlib import Path


def user_path(spec: str) -> Path:
    """``spec`` as a path, ``~`` expanded; ``~name`` for a user this machine does not know stays literal."""
    try:
        return Path(spec).expanduser()
    except RuntimeError:
        return Path(spec)
