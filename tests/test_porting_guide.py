"""docs/porting-mayo.md's Mayo-style model file builds, trains and evaluates as the page says it does (on a synthetic
stand-in for Fashion-MNIST, one epoch)."""

import re
from pathlib import Path

from mayo_lite.cli import main
from tests.test_doc_recipes import QUICK_DATASET

ROOT = Path(__file__).resolve().parent.parent


def test_the_mayo_style_file_of_the_porting_guide_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "docs/porting-mayo.md").read_text()
    model = re.search(r"```yaml\n(.*?)```", text, flags=re.S)[1]
    command = re.search(r"^    \./my (lenet5_mayo\.yaml .*)$", text, flags=re.M)[1].split()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick_fashion_mnist.yaml").write_text(
        QUICK_DATASET.format(fashion_mnist=ROOT / "configs/datasets/fashion_mnist.yaml"))
    (tmp_path / "lenet5_mayo.yaml").write_text(model.replace("datasets/fashion_mnist.yaml",
                                                             "quick_fashion_mnist.yaml"))
    assert main(command) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "top1: " in out
    assert "2,293,000 MACs" in out  # LeNet-5 on 28×28×1, as Mayo counts it
