"""The recipe loader under random input: it loads a Recipe or raises ConfigError, never anything else.

Property-based (hypothesis, derandomized so CI sees the same examples every run): random nested
dicts go to ``recipe_from_dict``, random ``key=value`` lists to ``load_recipe``, and every Recipe
that loads survives ``save_recipe`` / ``load_recipe`` unchanged. The example-based tests below them
pin what the fuzzer found (nan accepted as a learning rate, ``1e-4`` read as a string, YAML 1.1
dates and yes/no, octal ``0123``, values YAML cannot parse, integers too large to print).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import types
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distilprune.config import (
    ATTENTION_TARGETS,
    CHOICES,
    DataConfig,
    Recipe,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
)
from distilprune.config.schema import TASK_NAMES
from distilprune.errors import ConfigError

FUZZ = settings(
    max_examples=250, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _leaf_fields() -> dict[str, typing.Any]:
    """{dotted key: annotation} for every leaf field of the schema (``train.lr`` -> float)."""
    out = {}
    for section in dataclasses.fields(Recipe):
        tp = typing.get_type_hints(Recipe)[section.name]
        if dataclasses.is_dataclass(tp):
            for name, sub in typing.get_type_hints(tp).items():
                out[f"{section.name}.{name}"] = sub
        else:
            out[section.name] = tp
    return out


LEAVES = _leaf_fields()
# Closed choice lists: the schema's CHOICES and those the data section keeps itself.
FIELD_CHOICES = {**CHOICES, "task": TASK_NAMES, "data.dedupe": DataConfig.DEDUPE_MODES,
                 "data.label_granularity": DataConfig.LABEL_GRANULARITIES}
SECTIONS = [name for name, tp in typing.get_type_hints(Recipe).items() if dataclasses.is_dataclass(tp)]

# -- strategies -------------------------------------------------------------------------------------
nasty_ints = st.sampled_from([0, -1, 1, 2**31, 2**32, 2**63, -(2**63) - 1, 10**400, -(10**30)])
nasty_floats = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-320, 1e308, 0.5, 1.0])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), nasty_ints, st.floats(), nasty_floats,
    st.text(max_size=20), st.sampled_from(["", "null", "yes", "1e-4", "topk", "auto", "query", "minilm-l6"]),
    st.dates(), st.binary(max_size=8),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.none(), st.booleans()), inner, max_size=4),
    ),
    max_leaves=12,
)


# Strings YAML reads as something else, or whose characters a YAML emitter may fold or drop.
NASTY_STRINGS = [
    "null", "~", "yes", "off", "0123", "1e-4", ".inf", "2024-01-01", "[1]", "{a: 1}", "- x", "a: b", "#x", "&a",
    "*a", "!t", "%x", "@x", "`x", "|", ">", "'", '"', "\\", " lead", "trail ", "x\ny", "\t", "\x85", "a\x85b",
    "\u2028", "\ufeff", "\xa0", "\x7f", "\x00", "\U0001F600", "é", "=", "<<",
]


def plausible(tp) -> st.SearchStrategy:
    """Values of the annotated type, mostly in a sensible range, so some recipes pass validation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[st.none() if a is type(None) else plausible(a) for a in typing.get_args(tp)])
    if origin is list:
        return st.lists(plausible(typing.get_args(tp)[0]), min_size=0, max_size=4)
    if origin is dict and typing.get_args(tp)[1] is str:  # data.splits: project split -> source split
        return st.dictionaries(st.sampled_from(["train", "validation", "test", "dev"]),
                               st.sampled_from(["validation", "validation_matched", "test", "dev", ""]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.sampled_from(ATTENTION_TARGETS), st.sampled_from([[32, 32], [-1, 32], [64, -1]]), max_size=4)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(min_value=-2, max_value=200)
    if tp is float:
        return st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from([1e-4, 0.5, 2.0, 1e-9]))
    if tp is str:
        return st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(NASTY_STRINGS))
    return junk


@st.composite
def recipe_dicts(draw) -> dict:
    """A nested dict: known keys with plausible or random values, unknown keys, odd nesting."""
    data: dict = {}
    for dotted in draw(st.lists(st.sampled_from(sorted(LEAVES)), max_size=8, unique=True)):
        value = draw(st.one_of(plausible(LEAVES[dotted]), junk)) if draw(st.booleans()) else draw(plausible(LEAVES[dotted]))
        if dotted in FIELD_CHOICES and draw(st.booleans()):
            value = draw(st.sampled_from(FIELD_CHOICES[dotted]))
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else node
        node[leaf] = value
    if draw(st.integers(0, 4)) == 0:  # a whole section replaced by junk (None, a list, a number ...)
        data[draw(st.sampled_from(SECTIONS))] = draw(junk)
    if draw(st.integers(0, 4)) == 0:  # an unknown key, possibly not a string, possibly nested
        where = data.setdefault(draw(st.sampled_from(SECTIONS)), {}) if draw(st.booleans()) else data
        if isinstance(where, dict):
            where[draw(st.one_of(st.text(max_size=10), st.integers(), st.none(), st.floats(), st.tuples(st.integers())))] = draw(junk)
    return data


yaml_snippets = st.sampled_from([
    "", "null", "~", "true", "yes", "no", "on", "1", "-1", "0", "0123", "0x1F", "1_000", "1e-4", "1.0e-4",
    ".nan", ".inf", "-.inf", "nan", "2024-01-01", "2001-12-14t21:59:43.10-05:00", "1:30", "[", "]", "{",
    "[1, 2]", "[0, 5]", "{query: [48, 32]}", "{a: 1}", "=", "<<", "!!python/object:os.system", "&a [*a]",
    "!!binary aGVsbG8=", "!!set {a, b}", "!!int x", "!!float y", "'quoted'", '"dq"', "- a\n- b", "a: b: c",
    "9" * 5000, "1" + "0" * 400 + ".0", "\t", "\x00", "\x85", "\ud7ff", "x" * 300, "[[[[[[[[[[1]]]]]]]]]]",
])
cli_values = st.one_of(yaml_snippets, st.text(max_size=30), st.integers().map(str), st.floats().map(repr))
cli_keys = st.one_of(
    st.sampled_from(sorted(LEAVES)), st.sampled_from(SECTIONS), st.text(max_size=15),
    st.sampled_from(["recipe.train.lr", "train.", ".lr", "a..b", "pruning.block_shapes.query", "pruning.block_shapes.ffn",
                     "data.splits.test", "data.splits.dev",
                     "--train.epochs", "recipe.", "teacher.model.x"]),
)
recipe_names = st.one_of(
    st.sampled_from(["quickstart", "quikstart", "nope.yaml", "rotten_tomatoes/minilm6_to_distil4", "", "~", "~nobody-here/x.yaml",
                     "/dev/null.yaml", "../pyproject", "recipes/quickstart.yaml"]),
    st.text(max_size=20),
)
# Valid overrides mixed in, so that a fair share of argument lists loads (the property is checked on
# both outcomes) whatever else the schema grows.
valid_overrides = st.sampled_from([
    "train.epochs=2", "data.max_seq_len=64", "task=question_answering", "task=token_classification",
    "pruning.enabled=false", "export.latency_rounds=3", "seed=7", "data.doc_stride=16",
])
argv_lists = st.tuples(
    st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", cli_keys, cli_values), valid_overrides), max_size=5),
    st.lists(st.builds(lambda n: f"recipe={n}", recipe_names), max_size=1),
    # An argument without '=' ends parsing at once, so it is added only now and then.
    st.lists(st.text(max_size=15), max_size=1).filter(lambda extra: not extra or len(extra[0]) % 4 == 0),
    st.randoms(use_true_random=False),
).map(lambda parts: parts[3].sample(parts[0] + parts[1] + parts[2], len(parts[0] + parts[1] + parts[2])))
# A run must name its recipe (test_recipes.py checks the refusal); lists without one start from quickstart.
argv_lists = argv_lists.map(lambda argv: argv if any(a.lstrip("-").startswith("recipe=") for a in argv)
                            else ["recipe=quickstart", *argv])


# -- properties ---------------------------------------------------------------------------------------
def _loads_or_config_error(call) -> Recipe | None:
    try:
        recipe = call()
    except ConfigError as error:
        message = str(error)
        assert message and "\n\n" not in message  # one paragraph
        return None
    assert isinstance(recipe, Recipe)
    return recipe


def test_recipe_from_dict_loads_or_raises_config_error():
    loaded = []

    @FUZZ
    @given(recipe_dicts())
    def prop(data):
        recipe = _loads_or_config_error(lambda: recipe_from_dict(data))
        if recipe is not None:
            loaded.append(recipe)
            assert recipe_from_dict(recipe_to_dict(recipe)) == recipe  # validation is idempotent

    prop()
    assert len(loaded) >= 10, "the fuzzer should also reach recipes that load, not only errors"


def test_recipe_from_dict_with_junk_at_the_top():
    @FUZZ
    @given(junk)
    def prop(data):
        _loads_or_config_error(lambda: recipe_from_dict(data))

    prop()


def test_load_recipe_with_random_arguments_loads_or_raises_config_error(tmp_path: Path):
    saved = tmp_path / "recipe.yaml"
    loaded = []

    @FUZZ
    @given(argv_lists)
    def prop(argv):
        recipe = _loads_or_config_error(lambda: load_recipe(argv))
        if recipe is not None:
            loaded.append(recipe)
            save_recipe(recipe, saved)
            assert load_recipe([f"recipe={saved}"]) == recipe

    prop()
    assert len(loaded) >= 10


def test_every_loaded_recipe_round_trips_through_save_and_load(tmp_path: Path):
    """Overrides of known keys with values of the right type: what loads replays to an equal Recipe."""
    saved = tmp_path / "recipe.yaml"
    loaded = []
    settable = sorted(k for k in LEAVES if "." in k or k in ("name", "seed", "output_dir"))

    def as_cli(value) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if value is None:
            return "null"
        if isinstance(value, (list, dict)):
            return str(value).replace("'", "")
        return str(value)

    @FUZZ
    @given(st.lists(st.sampled_from(settable), max_size=6, unique=True).flatmap(
        lambda keys: st.tuples(*[st.tuples(st.just(k), plausible(LEAVES[k])) for k in keys])))
    def prop(pairs):
        argv = ["recipe=quickstart"] + [f"{key}={as_cli(value)}" for key, value in pairs]
        recipe = _loads_or_config_error(lambda: load_recipe(argv))
        if recipe is None:
            return
        loaded.append(recipe)
        save_recipe(recipe, saved)
        again = load_recipe([f"recipe={saved}"])
        assert again == recipe
        assert recipe_to_dict(again) == recipe_to_dict(recipe)

    prop()
    assert len(loaded) >= 50


# -- what the fuzzer found, pinned ------------------------------------------------------------------
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1" + "0" * 400 + ".0"])
def test_non_finite_numbers_are_rejected(value):
    with pytest.raises(ConfigError, match="finite"):
        load_recipe(["recipe=quickstart", f"train.lr={value}"])
    with pytest.raises(ConfigError, match="finite"):
        recipe_from_dict({"export": {"latency_budget_ms": float("inf")}, "distill": {"temperature": float("nan")}})


@pytest.mark.parametrize("value", [str(2**63), "9" * 5000, str(-(2**64))])
def test_integers_beyond_64_bits_are_rejected(value):
    with pytest.raises(ConfigError, match="train.epochs"):
        load_recipe(["recipe=quickstart", f"train.epochs={value}"])


def test_exponent_floats_parse_as_numbers():
    recipe = load_recipe(["recipe=quickstart", "train.lr=1e-4", "teacher.lr=5E-5", "pruning.scores_lr=1_0.5e-3"])
    assert (recipe.train.lr, recipe.teacher.lr) == (1e-4, 5e-5)
    assert recipe.pruning.scores_lr == pytest.approx(10.5e-3)


def test_string_fields_keep_the_text_as_typed():
    recipe = load_recipe(["recipe=quickstart", "name=2024-01-01", "data.text_column=yes", "data.label_column=0123",
                          "tracking.wandb_project=on"])
    assert (recipe.name, recipe.data.text_column, recipe.data.label_column, recipe.tracking.wandb_project) == (
        "2024-01-01", "yes", "0123", "on")


def test_integers_are_decimal_and_dates_are_not_parsed(tmp_path: Path):
    assert load_recipe(["recipe=quickstart", "train.epochs=010"]).train.epochs == 10
    path = tmp_path / "r.yaml"
    path.write_text("name: 2024-01-01\ndata:\n  text_column: no\n")
    recipe = load_recipe([f"recipe={path}"])
    assert (recipe.name, recipe.data.text_column) == ("2024-01-01", "no")
    with pytest.raises(ConfigError, match="expects bool"):
        load_recipe(["recipe=quickstart", "tracking.wandb=yes"])  # YAML 1.2: only true/false


@pytest.mark.parametrize("value", ["[", "{a: [1", "!!python/object:os.system", "=", "!!int x", "&a [*a"])
def test_values_yaml_cannot_read_are_config_errors(value):
    with pytest.raises(ConfigError):
        load_recipe(["recipe=quickstart", f"train.epochs={value}"])


def test_recipe_file_that_is_not_utf8_or_not_yaml(tmp_path: Path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_recipe([f"recipe={binary}"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid recipe YAML") as error:
        load_recipe([f"recipe={broken}"])
    assert "\n" not in str(error.value)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_recipe([f"recipe={listing}"])


def test_non_string_and_odd_keys_are_unknown_keys():
    for data in ({1: 2}, {None: 1}, {"train": {(1,): 2}}, {"pruning": {"block_shapes": {7: [32, 32]}}}):
        with pytest.raises(ConfigError):
            recipe_from_dict(data)


def test_unknown_block_shape_target_fails_at_load():
    with pytest.raises(ConfigError, match="Did you mean 'query'"):
        load_recipe(["recipe=quickstart", "pruning.block_shapes={qeury: [32, 32]}"])


def test_dates_and_bytes_in_a_dict_are_type_errors():
    with pytest.raises(ConfigError, match="expects str"):
        recipe_from_dict({"name": datetime.date(2024, 1, 1)})
    with pytest.raises(ConfigError, match="expects int"):
        recipe_from_dict({"seed": b"42"})
