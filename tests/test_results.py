"""`benchmarks/results.py --quick`: the results command runs end to end on real Fashion-MNIST (a few hundred images
per step), writes its page and figure from the steps it ran, and a second run reuses the finished steps."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    if not DATA.is_dir():
        pytest.fail(f"Fashion-MNIST is not in {DATA}: apt-get install dataset-fashion-mnist (scripts/setup does)")
    workdir = tmp_path_factory.mktemp("results")
    command = [sys.executable, str(ROOT / "benchmarks/results.py"), "--quick", "--workdir", str(workdir),
               "--out", str(workdir / "out")]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    return workdir, command, first.stdout


def test_every_method_has_a_row_with_the_numbers_of_its_step(quick):
    workdir, _, _ = quick
    page = (workdir / "out" / "results.md").read_text()
    steps = json.loads((workdir / "fashion_mnist" / "steps.json").read_text())
    rows = [line.split(" | ") for line in page.splitlines() if line.startswith("| ") and "%" in line]
    methods = {row[0].strip("| ") for row in rows}
    assert methods == {"dense", "FBS (distilled)", "FBS, no distillation", "kernel pruning", "network slimming",
                       "kernel 30%, reference fine-tuning", "kernel 30%, documented recipe"}
    # Every top-1 on the page is one a step printed, and every step's top-1 is on the page.
    printed = sorted(f"{record['top1']:.2f}%" for record in steps.values())
    assert sorted(row[2] for row in rows) == printed
    # Dense MACs as `info` counts slim M-CifarNet on 28×28 images.
    assert "| 8,258,592 |" in page
    for row in rows:
        float(row[7].removesuffix(" ms"))  # a latency was measured for every row
    assert "python benchmarks/results.py --quick" in page and "seed: 0" in page


def test_the_static_methods_meet_the_mac_budget_fbs_reached(quick):
    workdir, _, _ = quick
    steps = json.loads((workdir / "fashion_mnist" / "steps.json").read_text())
    fbs = steps["cifarnet_slim/fbs/0.5"]["effective_macs"]
    for method in ("kernel", "slimming"):
        record = steps[f"cifarnet_slim/{method}/0.5"]
        assert record["budget"] == fbs
        measured = record.get("effective_macs") or record["macs"]
        # What `info` counted after fine-tuning is what the search pruned to, and within the budget.
        assert measured == record["searched_macs"] <= fbs
        assert measured > 0.9 * fbs  # as close as the granularity allows, not far below
    # Network slimming's model is really narrower: its `info` counts plain MACs, no masks.
    assert "effective_macs" not in steps["cifarnet_slim/slimming/0.5"]
    assert any(width.startswith("model.layers.conv0.num_outputs=")
               for width in steps["cifarnet_slim/slimming/0.5"]["widths"])


def test_the_figure_is_a_picture(quick):
    workdir, _, _ = quick
    from PIL import Image
    with Image.open(workdir / "out" / "results.png") as image:
        assert image.size[0] > 1000 and image.size[1] > 400
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # lines, labels and legends, not a blank canvas


def test_a_second_run_reuses_the_finished_steps(quick):
    workdir, command, _ = quick
    second = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    reused = re.findall(r"^\[(\S+)\] done before", second.stdout, re.MULTILINE)
    steps = json.loads((workdir / "fashion_mnist" / "steps.json").read_text())
    assert sorted(reused) == sorted(steps)
    assert "$ my" not in second.stdout


def test_a_bad_model_name_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/results.py"), "--models", "resnet",
                             "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "resnet" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_cifar10_needs_its_prepared_data_and_says_so_in_one_line(tmp_path):
    env = {**__import__("os").environ, "TFDS_DATA_DIR": str(tmp_path / "tfds")}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/results.py"), "--dataset", "cifar10",
                             "--workdir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "cifar10" in last and str(tmp_path / "tfds") in last and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # refused before any work
