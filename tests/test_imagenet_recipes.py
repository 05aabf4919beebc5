"""Every `./my` command of docs/imagenet.md resolves: its files exist, its keys are known and every reference and
expression resolves — checked by running it with its actions replaced by `export` (no ImageNet data here)."""

import re
import shlex
from pathlib import Path

import pytest

from mayo_lite.cli import ACTION_HELP, main

ROOT = Path(__file__).resolve().parent.parent


def commands():
    text = re.sub(r"\\\n\s*", " ", (ROOT / "docs/imagenet.md").read_text())
    return [shlex.split(line.strip())[1:] for line in text.splitlines() if line.strip().startswith("./my ")]


COMMANDS = commands()


def test_the_page_has_the_four_experiments():
    models = {arguments[0] for arguments in COMMANDS}
    assert {"models/vgg16_bn.yaml", "models/resnet50.yaml", "models/gate/vgg16.yaml",
            "models/gate/resnet18.yaml"} <= models


@pytest.mark.parametrize("arguments", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_a_documented_imagenet_command_resolves(arguments, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([argument for argument in arguments if argument not in ACTION_HELP] + ["export"]) == 0, \
        capsys.readouterr().err
    # Module bodies keep their `!arith` and `^()` until the model is built; the rest is resolved.
    exported = (tmp_path / "export.yaml").read_text()
    assert re.search(r"^dataset:\n(  .*\n)*  name: imagenet$", exported, flags=re.M)
    assert "$(" not in exported
