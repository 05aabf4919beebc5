"""Every multi-stage `./my` recipe in the README and docs/ runs, in quick mode: the same command line with the
Fashion-MNIST dataset file swapped for a synthetic one of the same shape and a few dozen images, and each trainer's
own number of epochs cut to two, so a recipe that
breaks (a trainer layered over another, a stage that cannot load the previous one) fails here, not in a user's
week-long run."""

import re
import shlex
from pathlib import Path

import pytest

from mayo_lite.cli import ACTION_HELP, main

ROOT = Path(__file__).resolve().parent.parent
QUICK_DATASET = """
_import: {fashion_mnist}
dataset:
  source: {{type: synthetic, seed: 0}}
  num_examples_per_epoch: {{train: 64, validate: 32}}
"""
# Stages of these actions make a recipe multi-stage.
STAGES = {"train", "prune", "eval", "info", "reset-num-epochs"}


def recipes():
    """(document, command arguments) of every `./my` command in a code block that trains or prunes more than once
    or mixes training with a later stage, on Fashion-MNIST."""
    found = []
    # The tutorial runs as a whole, in order, in test_tutorial.py.
    for document in [ROOT / "README.md", *sorted(set((ROOT / "docs").glob("*.md")) - {ROOT / "docs/tutorial.md"})]:
        text = re.sub(r"\\\n\s*", " ", document.read_text())
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("./my "):
                continue
            arguments = shlex.split(line)[1:]
            actions = [argument for argument in arguments if argument in ACTION_HELP]
            if "datasets/fashion_mnist.yaml" in arguments and (
                    sum(action in ("train", "prune") for action in actions) >= 2 or (
                        {"train", "prune"} & set(actions) and len(actions) >= 3)):
                found.append((document.name, arguments))
    return found


RECIPES = recipes()


def test_the_docs_have_the_recipes_this_test_expects():
    names = {name for name, _ in RECIPES}
    assert {"README.md", "fbs.md", "pruning.md"} <= names, names
    assert len(RECIPES) >= 5


@pytest.mark.parametrize("document, arguments", RECIPES, ids=[f"{d}:{' '.join(a)[:70]}" for d, a in RECIPES])
def test_a_documented_recipe_runs_in_quick_mode(document, arguments, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick_fashion_mnist.yaml").write_text(
        QUICK_DATASET.format(fashion_mnist=ROOT / "configs/datasets/fashion_mnist.yaml"))
    quick = []
    for argument in arguments:
        if argument.startswith("dataset.validate_from_train="):
            argument = "dataset.validate_from_train=16"  # a carve the quick dataset's 64 training images allow
        quick.append("quick_fashion_mnist.yaml" if argument == "datasets/fashion_mnist.yaml" else argument)
        if argument.startswith("trainers/"):
            # A trainer's own schedule (300 epochs for M-CifarNet) shortened; an epoch count the recipe sets
            # after the trainer still wins, as it does in the real command.
            quick.append("system.max_epochs=2")
    assert main(quick) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    evaluations = [argument for argument in arguments if argument == "eval"]
    assert out.count("top1: ") >= len(evaluations)
