"""Command-line entry points: ``python train/distill.py`` and the ``distilprune`` command.

    distilprune train recipe=quickstart [key=value ...]    # same as python train/distill.py ...
    distilprune export runs/<recipe>/<time> [--checkpoint NAME] [--threads N] [--runs N]
    distilprune verify <bundle dir> [--threads N] [--runs N] [--rounds N]
    distilprune pareto runs/<recipe>/<time> [...] [--out DIR]
    distilprune serve <bundle dir> [--host 127.0.0.1 --port 8000 --max-batch 32 --max-delay-ms 5 --threads N]
    distilprune recipes

Each subcommand imports only what it needs (Lightning only for ``train``). Every problem a user can
cause ends as one ``error:`` paragraph on stderr and exit code 2 (see :func:`distilprune.errors.exit_code_of`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Callable

from distilprune.errors import exit_code_of

HELP_FLAGS = ("-h", "--help")


def recipes_text() -> str:
    """The built-in recipes, one a line, each with its header line."""
    from distilprune.config.docs import recipe_headers

    headers = recipe_headers()
    width = max(map(len, headers), default=0)
    return "\n".join(f"  {name:<{width}}  {header}" for name, header in headers.items())


def train_help() -> str:
    """Usage, the built-in recipes and every recipe key with its default and one-line documentation."""
    from distilprune.config import USAGE, Recipe
    from distilprune.config.docs import key_docs

    defaults = Recipe()
    lines = [f"usage: {USAGE}", "       python train/distill.py resume=<run dir>", "",
             "Distil a frozen teacher into a DistilBERT student, prune it, export it and report accuracy vs latency.",
             "", "Built-in recipes (recipe=NAME; or recipe=path/to/file.yaml):", recipes_text(), "",
             "Recipe keys (override any with section.key=value):"]
    for section, keys in key_docs().items():
        owner = getattr(defaults, section) if section else defaults
        lines.append(f"  {section or '(top level)'}:")
        for key, doc in keys:
            default = getattr(owner, key)
            shown = key if dataclasses.is_dataclass(default) else f"{key}={json.dumps(default)}"
            lines.append(f"    {shown}" + (f"  -- {doc}" if doc else ""))
    return "\n".join(lines)


def train(argv: list[str]) -> int:
    """``python train/distill.py ARGS``: a run, or its help."""
    if any(arg in HELP_FLAGS for arg in argv):
        print(train_help())
        return 0
    from distilprune.train.pipeline import load_and_run

    return exit_code_of(lambda: load_and_run(argv))


def _export(argv: list[str]) -> int:
    from distilprune.export.cli import main

    return main(argv)


def _verify(argv: list[str]) -> int:
    from distilprune.export.verify import main

    return main(argv)


def _pareto(argv: list[str]) -> int:
    from distilprune.export.pareto import main

    return main(argv)


def _serve(argv: list[str]) -> int:
    from distilprune.export.serving.http_server import main

    return main(argv)


def _recipes(argv: list[str]) -> int:
    print(recipes_text())
    return 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "train": (train, "distil, prune, export and report one recipe (python train/distill.py)"),
    "export": (_export, "re-export and re-measure the kept checkpoints of a finished run"),
    "verify": (_verify, "verify a serving bundle on this machine (parity, INT8 accuracy, latency)"),
    "pareto": (_pareto, "Pareto table and plot of accuracy vs latency over runs"),
    "serve": (_serve, "serve a bundle over HTTP: text in, labels out (dynamic batching, metrics)"),
    "recipes": (_recipes, "list the built-in recipes"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    return "usage: distilprune <command> [arguments]\n\ncommands:\n" + "\n".join(
        f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()
    ) + "\n\n'distilprune <command> --help' describes a command's arguments."


def main(argv: list[str] | None = None) -> int:
    """The ``distilprune`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in HELP_FLAGS:
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: there is no command {command!r}; choose one of {', '.join(COMMANDS)}.\n\n{usage()}",
              file=sys.stderr)
        return 2
    return COMMANDS[command][0](rest)


if __name__ == "__main__":
    sys.exit(main())
