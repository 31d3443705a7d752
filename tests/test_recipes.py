"""Recipes are airtight: every shipped recipe loads; mistakes fail at load time with a suggestion."""

import re
from pathlib import Path

import pytest

from distilprune.config import RECIPES_DIR, available_recipes, load_recipe, save_recipe
from distilprune.errors import ConfigError


@pytest.mark.parametrize("name", available_recipes())
def test_every_shipped_recipe_loads_and_opens_with_a_command(name):
    recipe = load_recipe([f"recipe={name}"])
    assert recipe.name == name
    text = (RECIPES_DIR / f"{name}.yaml").read_text()
    assert text.startswith("#") and f"python train/distill.py recipe={name}" in text


def test_command_line_overrides_yaml_which_overrides_defaults():
    recipe = load_recipe(["recipe=quickstart", "train.epochs=7", "recipe.data.max_seq_len=64"])
    assert recipe.train.epochs == 7 and recipe.data.max_seq_len == 64
    assert recipe.student.init_layers == [0, 2, 4, 5]  # from the YAML
    assert recipe.distill.temperature == 2.0  # schema default


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        load_recipe(["recipe=quickstart", "train.epoch=2"])


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError, match="'train.epochs' .* expects int"):
        load_recipe(["recipe=quickstart", "train.epochs=two"])


def test_missing_recipe_lists_the_available_ones():
    with pytest.raises(ConfigError, match="Did you mean recipe=quickstart.*Available recipes: .*rotten_tomatoes/minilm6_to_distil4"):
        load_recipe(["recipe=quickstrat"])


def test_invalid_choice_is_rejected():
    with pytest.raises(ConfigError, match="train.precision"):
        load_recipe(["recipe=quickstart", "train.precision=fp8"])


def test_resolved_recipe_replays_to_an_equal_recipe(tmp_path: Path):
    recipe = load_recipe(["recipe=quickstart", "train.epochs=5"])
    save_recipe(recipe, tmp_path / "recipe.yaml")
    assert load_recipe([f"recipe={tmp_path / 'recipe.yaml'}"]) == recipe


def test_argument_without_equals_sign_is_explained():
    with pytest.raises(ConfigError, match="key=value"):
        load_recipe(["quickstart"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("pruning.attention_density=0", "must be in (0, 1]"),
        ("pruning.ffn_density=1.2", "must be in (0, 1]"),
        ("pruning.block_shapes.query=[0,32]", "positive sides or -1"),
        ("pruning.method=magnitude", "choose one of topk, sigmoid_threshold"),
        ("pruning.warmup=0.9", "their sum below 1"),
    ],
)
def test_bad_pruning_settings_fail_at_load(override, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_recipe(["recipe=quickstart", override])


def test_a_recipe_file_given_by_a_relative_path_is_named_after_it(monkeypatch):
    # recipe=recipes/quickstart.yaml from the repository root: the run name is computed from a relative path.
    from conftest import REPO

    monkeypatch.chdir(REPO)
    assert load_recipe(["recipe=recipes/quickstart.yaml"]).name == "quickstart"
    assert load_recipe(["recipe=recipes/rotten_tomatoes/minilm6_to_distil4.yaml"]).name == "rotten_tomatoes/minilm6_to_distil4"


@pytest.mark.parametrize("argv", [[], ["recipe="], ["train.epochs=1"]], ids=["nothing", "empty-recipe", "no-recipe"])
def test_a_run_must_name_its_recipe(argv):
    with pytest.raises(ConfigError, match="No recipe given.*Built-in recipes: .*quickstart"):
        load_recipe(argv)


def test_an_empty_recipe_file_is_named(tmp_path: Path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here yet\n")
    with pytest.raises(ConfigError, match=re.escape(f"The recipe {empty} is empty")):
        load_recipe([f"recipe={empty}"])
