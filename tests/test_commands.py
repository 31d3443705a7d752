"""The command line around a run: ``--help``, the ``distilprune`` command and its subcommands.
Runs themselves are in test_cli.py; every mistake's error message in test_bad_inputs.py."""

from __future__ import annotations

import pytest

from distilprune.config import available_recipes
from distilprune.train.cli import main, train


def test_recipes_lists_every_built_in_recipe_with_its_header_line(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == available_recipes()
    quickstart = next(line for line in lines if line.split()[0] == "quickstart")
    assert "the built-in offline default" in quickstart


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_shows_usage_recipes_and_every_key_group_with_its_documentation(flag, capsys):
    assert train(["recipe=quickstart", flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python train/distill.py recipe=")
    for name in available_recipes():
        assert f"  {name} " in out
    for group in ("teacher:", "student:", "data:", "distill:", "train:", "tracking:", "export:", "pruning:"):
        assert f"\n  {group}\n" in out
    assert "    epochs=3  -- Fine-tuning epochs when ``finetuned`` is false" in out  # teacher.epochs
    assert "    attention_density=0.5  -- topk: final kept fraction of the attention blocks" in out


def test_distilprune_without_a_command_shows_the_commands_and_fails(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: distilprune <command>")
    for command in ("train", "export", "verify", "pareto", "recipes"):
        assert f"\n  {command} " in err


def test_an_unknown_command_is_named(capsys):
    assert main(["distil"]) == 2
    assert "there is no command 'distil'; choose one of train, export" in capsys.readouterr().err


def test_train_subcommand_reports_a_bad_recipe_as_one_error_paragraph(capsys):
    assert main(["train", "recipe=quikstart"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Did you mean recipe=quickstart?" in " ".join(err.split())
