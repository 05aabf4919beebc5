"""docs/tutorial.md's `./my` commands run in order, in one directory, in quick mode (a synthetic stand-in for
Fashion-MNIST, two epochs per trainer, a few images for the export checks and the timing), each stage from the
checkpoints of the one before, as a reader runs them."""

import re
import shlex
from pathlib import Path

from mayo_lite.cli import main
from tests.test_doc_recipes import QUICK_DATASET

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs/tutorial.md"


def commands():
    text = re.sub(r"\\\n\s*", " ", TUTORIAL.read_text())
    return [shlex.split(line.strip())[1:] for line in text.splitlines() if line.strip().startswith("./my ")]


def quick(arguments):
    result = []
    for argument in arguments:
        result.append("quick_fashion_mnist.yaml" if argument == "datasets/fashion_mnist.yaml" else argument)
        if argument.startswith("trainers/"):
            result.append("system.max_epochs=2")
    return ["system.export.images=8", "system.bench.images=2", "system.bench.repeats=1"] + result


def test_the_tutorial_runs_from_start_to_end(tmp_path, monkeypatch, capsys):
    steps = commands()
    assert len(steps) == 6
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick_fashion_mnist.yaml").write_text(
        QUICK_DATASET.format(fashion_mnist=ROOT / "configs/datasets/fashion_mnist.yaml"))
    outputs = []
    for arguments in steps:
        status = main(quick(arguments))
        captured = capsys.readouterr()
        assert status == 0, (arguments, captured.err[-2000:])
        outputs.append(captured.out)
    train, gate, prune, export, plot, bench = outputs
    assert "top1: " in train and "density: 50.00%" in gate and "weight density" in prune
    assert export.count("top-1 agreement") == 5
    assert "gates_conv1.png" in plot and "accuracy_macs.png" in plot
    assert "sparse" in bench
    assert (tmp_path / "exported/cifarnet_slim_gate.onnx").is_file()
