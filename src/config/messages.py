"""Building blocks of the recipe's error messages: one paragraph naming the key and the fix."""

from __future__ import annotations

import difflib
from typing import Any

from distilprune.errors import ConfigError


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def short(value: Any, limit: int = 80) -> str:
    """repr() cut to ``limit`` characters: error messages stay one readable paragraph."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""
