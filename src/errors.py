"""The project's own exceptions.

Every problem a user can cause (a bad recipe, a missing file, data that does not fit the model) is
raised as a :class:`DistilpruneError` whose message is one paragraph naming the problem and the fix.
The entry points print that paragraph and exit non-zero instead of showing a traceback
(:func:`exit_code_of`).
"""

from __future__ import annotations

from typing import Callable


class DistilpruneError(Exception):
    """Base class: a problem the user can fix. The message says what is wrong and what to do."""

    exit_code = 2


class ConfigError(DistilpruneError):
    """A recipe that does not load: unknown key, wrong type, invalid value, missing file."""


class AssetError(DistilpruneError):
    """A built-in asset that cannot be fetched, or whose checksum does not match."""


class DataError(DistilpruneError):
    """A dataset that does not fit the recipe: missing columns, empty splits, bad labels."""


class ModelError(DistilpruneError):
    """A teacher or student that cannot be built as asked."""


class ExportError(DistilpruneError):
    """An export or verification step that failed (parity, quantization, latency budget)."""


class DivergenceError(DistilpruneError):
    """Training diverged (NaN or infinite loss); the last good checkpoint is kept."""

    exit_code = 3


def exit_code_of(action: Callable[[], object]) -> int:
    """Run ``action`` for a command-line entry point: 0 when it returns, the error's exit code after
    printing its one-paragraph message as ``error: ...`` on stderr, 130 on Ctrl-C."""
    from rich.console import Console
    from rich.markup import escape  # messages quote user input and commands: "[key=value ...]" is text

    try:
        action()
    except DistilpruneError as error:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(str(error))}", highlight=False, soft_wrap=True)
        return error.exit_code
    except KeyboardInterrupt:
        Console(stderr=True).print("[bold red]interrupted[/bold red]: outputs written so far are complete files.")
        return 130
    return 0
