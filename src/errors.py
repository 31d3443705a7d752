"""The project's own exceptions.

Every problem a user can cause (a bad recipe, a missing file, data that does not fit the model) is
raised as a :class:`DistilpruneError` whose message is one paragraph naming the problem and the fix.
The entry points print that paragraph and exit non-zero instead of showing a traceback.
"""

from __future__ import annotations


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
