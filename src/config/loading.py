"""Loading recipes: built-in names, files, ``key=value`` overrides, and saving the resolved recipe.

Precedence: schema defaults < recipe YAML < command line (``key=value``). An unknown key or a value
of the wrong type fails at load time with a :class:`~distilprune.errors.ConfigError` that names the
key and suggests the closest valid one. The fully resolved recipe is saved into each run directory,
and ``recipe=runs/<name>/<time>/recipe.yaml`` replays it.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml

from distilprune.config.coercion import build, field_names
from distilprune.config.dialect import RecipeDumper, parse_yaml
from distilprune.config.messages import short
from distilprune.config.schema import Recipe
from distilprune.errors import ConfigError
from distilprune.paths import user_path

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
USAGE = "python train/distill.py recipe=<name or file.yaml> [key=value ...]"


def available_recipes() -> list[str]:
    """Names accepted by ``recipe=NAME``: paths under recipes/ without the .yaml suffix."""
    return sorted(str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in RECIPES_DIR.rglob("*.yaml"))


def find_recipe(name: str) -> Path:
    """``quickstart`` -> recipes/quickstart.yaml; a path to a .yaml file is taken as it is."""
    as_path = user_path(name)
    if as_path.suffix in (".yaml", ".yml"):
        if as_path.is_file():
            return as_path
        raise ConfigError(
            f"Recipe file {name} does not exist. Give a path to an existing .yaml file (for example a "
            f"run's saved runs/<name>/<time>/recipe.yaml) or a built-in recipe name: "
            f"{', '.join(available_recipes())}."
        )
    candidate = RECIPES_DIR / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    names = available_recipes()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f" Did you mean recipe={close[0]}?" if close else ""
    raise ConfigError(
        f"There is no recipe named {name!r}.{hint} Available recipes: {', '.join(names)}. "
        f"Run: {USAGE}"
    )


def parse_cli(argv: list[str]) -> tuple[str | None, dict[str, str]]:
    """Split ``recipe=NAME a.b=1 ...`` into the recipe name and a {dotted key: raw value} dict."""
    recipe_name, overrides = None, {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("-")
        if not sep or not key:
            raise ConfigError(
                f"Cannot read the argument {arg!r}: arguments are key=value pairs, e.g. "
                f"recipe=quickstart train.epochs=2."
            )
        if key == "recipe":
            recipe_name = value
        else:
            overrides[key.removeprefix("recipe.")] = value
    return recipe_name, overrides


def load_recipe(argv: list[str]) -> Recipe:
    """Resolve a recipe from command-line arguments: schema < YAML < ``key=value`` overrides."""
    recipe_name, overrides = parse_cli(argv)
    if not recipe_name:
        raise ConfigError(
            f"No recipe given: a run must name one. Usage: {USAGE}. Built-in recipes: "
            f"{', '.join(available_recipes())}. Try: python train/distill.py recipe=quickstart"
        )
    path = find_recipe(recipe_name)
    data = _read_recipe_file(path)
    data.setdefault("name", str(path.resolve().relative_to(RECIPES_DIR.resolve()).with_suffix(""))
                    if _is_under(path, RECIPES_DIR) else path.stem)
    for dotted, raw in overrides.items():
        _set_dotted(data, dotted, _cli_value(dotted, raw))
    return recipe_from_dict(data, source=str(path))


def _read_recipe_file(path: Path) -> dict[str, Any]:
    """The recipe file's mapping; an unreadable, empty or non-mapping file is a :class:`ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"Cannot read the recipe {path} ({error}). Give a readable UTF-8 .yaml file."
        ) from None
    data = parse_yaml(text, f"The recipe {path}", "Fix the file's syntax (recipes are plain YAML mappings).")
    if data is None:
        raise ConfigError(
            f"The recipe {path} is empty (no keys). Write the settings into it as 'section:' lines with "
            f"indented 'key: value' pairs, like recipes/quickstart.yaml, or give another recipe."
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"The recipe {path} must be a mapping of keys to values, not a {type(data).__name__}. "
            f"Write it as 'section:' lines with indented 'key: value' pairs, like recipes/quickstart.yaml."
        )
    return data


def recipe_from_dict(data: dict[str, Any], source: str = "<dict>") -> Recipe:
    """Build and validate a :class:`Recipe` from nested plain data."""
    recipe = build(Recipe, data, prefix="", source=source)
    recipe.validate()
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write the fully resolved recipe; loading it back gives an equal Recipe."""
    header = (
        f"# Resolved recipe of run {path.parent}. Replay it with:\n"
        f"#   python train/distill.py recipe={path}\n"
    )
    body = yaml.dump(recipe_to_dict(recipe), Dumper=RecipeDumper, sort_keys=False)  # ASCII: escapes survive
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + body, encoding="utf-8")
    tmp.replace(path)


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _annotation_at(dotted: str) -> Any:
    """The schema type of ``dotted`` (e.g. ``data.text_column`` -> str), or None if it is no field."""
    node: Any = Recipe
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node) or part not in field_names(node):
            return None
        node = typing.get_type_hints(node)[part]
    return node


def _cli_value(dotted: str, raw: str) -> Any:
    """The value of one ``key=value`` argument.

    A string field takes the text as typed (``data.text_column=yes`` is the column "yes",
    ``name=2024-01-01`` the name "2024-01-01"); everything else is read as YAML
    (``train.lr=1e-4``, ``student.init_layers=[0,2]``, ``train.threads=null``).
    """
    if raw == "":
        return ""
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
    if _annotation_at(dotted) is str and not quoted:
        return raw
    return parse_yaml(
        raw, f"The value of {dotted}={short(raw)}",
        f"Write it as a YAML value (a number, true/false, null, [a, b] or {{key: value}}), or quote a "
        f"string: {dotted}='\"...\"'.",
    )



def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value
