"""The recipe's own documentation, read from the schema and the recipe files: what ``--help`` and
``distilprune recipes`` print."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing

from distilprune.config.loading import RECIPES_DIR, available_recipes
from distilprune.config.schema import Recipe


def recipe_headers() -> dict[str, str]:
    """{built-in recipe name: its header line (the first comment line, without the name)}."""
    headers = {}
    for name in available_recipes():
        lines = (RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()
        first = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else ""
        headers[name] = first.removeprefix(f"{name}:").strip()
    return headers


def key_docs() -> dict[str, list[tuple[str, str]]]:
    """{section ("" for top-level keys): [(key, first line of the key's documentation)]} in schema order."""
    groups: dict[str, list[tuple[str, str]]] = {"": _field_docs(Recipe)}
    hints = typing.get_type_hints(Recipe)
    for section in dataclasses.fields(Recipe):
        if dataclasses.is_dataclass(hints[section.name]):
            groups[section.name] = _field_docs(hints[section.name])
    groups[""] = [(key, doc) for key, doc in groups[""] if key not in groups]
    return groups


def _field_docs(cls) -> list[tuple[str, str]]:
    """(field, first line of the string literal that follows it in the class body) for ``cls``."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = []
    for node, following in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = ""
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                doc = str(following.value.value).strip().splitlines()[0]
            docs.append((node.target.id, doc))
    return docs
