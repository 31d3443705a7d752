"""The recipe YAML dialect: safe YAML with YAML 1.2 core scalars, and a dumper that writes it back."""

from __future__ import annotations

import re
from typing import Any

import yaml

from distilprune.errors import ConfigError


class RecipeLoader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 core scalars, for recipe files and ``key=value`` values.

    PyYAML follows YAML 1.1, where ``yes``/``no``/``on``/``off`` are booleans, ``2024-01-01`` is a
    date, ``0123`` is octal and ``1e-4`` is a string. Recipes get the 1.2 meaning: only
    true/false are booleans, there are no dates, integers are decimal and ``1e-4`` is a float.
    """


class RecipeDumper(yaml.SafeDumper):
    """Quotes exactly the strings that :class:`RecipeLoader` would read as something else, so a
    saved recipe loads back to an equal one."""


_YAML_TAG = "tag:yaml.org,2002:"
RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag.removeprefix(_YAML_TAG) not in ("bool", "int", "float", "timestamp", "value")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    _YAML_TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
RecipeLoader.add_implicit_resolver(
    _YAML_TAG + "int", re.compile(r"^[-+]?[0-9][0-9_]*$"), list("-+0123456789"))
RecipeLoader.add_implicit_resolver(
    _YAML_TAG + "float",
    re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)
RecipeLoader.add_constructor(
    # Decimal always: PyYAML would read a leading zero as octal (0123 -> 83).
    _YAML_TAG + "int", lambda loader, node: int(loader.construct_scalar(node).replace("_", "")))
RecipeDumper.yaml_implicit_resolvers = RecipeLoader.yaml_implicit_resolvers


def parse_yaml(text: str, what: str, fix: str) -> Any:
    """``text`` parsed with :class:`RecipeLoader`; any failure is a :class:`ConfigError`."""
    try:
        return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as error:
        # ValueError: an integer beyond Python's 4300-digit conversion limit, or an explicit tag
        # (!!int, !!float) on text that is not a number. The YAML error spans several lines.
        detail = " ".join(str(error).split())[:300] or type(error).__name__
        raise ConfigError(f"{what} is not valid recipe YAML ({detail}). {fix}") from None
