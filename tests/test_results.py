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


def _rows(page):
    """The results table's rows, as lists of cells."""
    methods = ("dense", "FBS (distilled)", "network slimming", "slimming + FBS")
    cells = [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in page.splitlines()
             if line.startswith("| ")]
    return [row for row in cells if row[0] in methods and len(row) == 14]  # not the choices table's rows


def test_every_method_has_a_row_averaged_over_the_seeds(quick):
    workdir, _, _ = quick
    page = (workdir / "out" / "results.md").read_text()
    results = json.loads((workdir / "out" / "results.json").read_text())
    rows = _rows(page)
    assert {row[0] for row in rows} == {"dense", "FBS (distilled)", "network slimming", "slimming + FBS"}
    for row, entry in zip(rows, results["rows"]):
        records = entry["records"]
        assert len(records) == 2 and row[12] == "2"  # both seeds
        # The test top-1 cell is the mean ± sample standard deviation of the seeds' test scores (NumPy, ddof=1).
        scores = np.array([record["test_top1"] for record in records])
        assert row[3] == f"{scores.mean():.2f}% ± {scores.std(ddof=1):.2f}"
        validation = np.array([record["val_top1"] for record in records])
        assert row[2] == f"{validation.mean():.2f}% ± {validation.std(ddof=1):.2f}"
        if not (entry["method"] == "slimming" and entry["density"] == 1.0):
            float(row[9].removesuffix(" ms"))  # seed 0's model was timed
    assert "| 8,258,592 |" in page  # dense MACs as `info` counts slim M-CifarNet on 28×28 images
    assert "python benchmarks/results.py --quick" in page and "seeds 0, 1" in page
    assert "code version" in page and ("**met**" in page or "**NOT met**" in page)


def test_choices_are_scored_on_the_validation_split_carved_from_training(quick):
    workdir, _, _ = quick
    steps = json.loads((workdir / "fashion_mnist" / "steps.json").read_text())
    results = json.loads((workdir / "out" / "results.json").read_text())
    for record in steps.values():
        command = record["command"]
        first_action = next(i for i, a in enumerate(command) if "=" not in a and not a.endswith(".yaml"))
        # `my` applies its arguments in order: the split must be set before the first action runs.
        assert command.index("dataset.validate_from_train=500") < first_action
    for method, prefix in (("FBS", "fbs_lr"), ("network slimming", "slimming_lr")):
        choice = results["choices"][method]
        scores = {float(rate): steps[f"cifarnet_slim/s0/{prefix}{rate}/0.5"]["val_top1"] for rate in choice["scores"]}
        assert len(scores) == 2 and choice["chosen"] == max(scores, key=lambda rate: (scores[rate], -rate))
        # The other seeds run the chosen rate only.
        assert not any(key.startswith("cifarnet_slim/s1/") and prefix in key and str(choice["chosen"]) not in key
                       for key in steps)
    # Choices never see the test split: a step records its test score only when it is a row of the table.
    assert all("test_top1" not in record for key, record in steps.items()
               if ("fbs_lr" in key or "slimming_lr" in key)
               and not any(str(results["choices"][m]["chosen"]) in key for m in results["choices"]))


def test_the_static_and_combined_methods_meet_the_mac_budget_fbs_reached(quick):
    workdir, _, _ = quick
    results = json.loads((workdir / "out" / "results.json").read_text())
    records = {(entry["method"], entry["density"]): entry["records"] for entry in results["rows"]}
    for seed in (0, 1):
        fbs = records[("fbs", 0.5)][seed]["effective_macs"]
        slimming = records[("slimming", 0.5)][seed]
        assert slimming["budget"] == fbs
        # What `info` counted after fine-tuning is what the search pruned to: within the budget, and close to it.
        assert slimming["macs"] == slimming["searched_macs"] <= fbs and slimming["macs"] > 0.9 * fbs
        assert "effective_macs" not in slimming  # really narrower: plain MACs, no masks
        combined = records[("combined", 0.25)][seed]
        assert combined["effective_macs"] <= records[("fbs", 0.25)][seed]["effective_macs"] == combined["budget"]
        assert combined["widths"] == slimming["widths"]  # FBS on the network slimmed to FBS-0.5's MACs


def test_the_figure_is_a_picture(quick):
    workdir, _, _ = quick
    from PIL import Image
    with Image.open(workdir / "out" / "results.png") as image:
        assert image.size[0] > 1000 and image.size[1] > 400
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # lines, labels and legends, not a blank canvas


def test_a_second_run_reuses_the_finished_steps(quick):
    workdir, command, _ = quick
    latency = json.loads((workdir / "fashion_mnist" / "latency.json").read_text())
    second = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    reused = re.findall(r"^\[(\S+)\] done before", second.stdout, re.MULTILINE)
    steps = json.loads((workdir / "fashion_mnist" / "steps.json").read_text())
    assert sorted(set(reused)) == sorted(steps)  # a step two chains share is reported by each
    assert "$ my" not in second.stdout
    # The latencies were not measured again: the cache of the timed checkpoints and code version answered.
    assert json.loads((workdir / "fashion_mnist" / "latency.json").read_text()) == latency


def test_a_bad_model_name_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/results.py"), "--models", "resnet",
                             "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "resnet" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_bad_seeds_are_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/results.py"), "--seeds", "0,one",
                             "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--seeds" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and not (tmp_path / "fashion_mnist").exists()


def test_cifar10_needs_its_prepared_data_and_says_so_in_one_line(tmp_path):
    env = {**__import__("os").environ, "TFDS_DATA_DIR": str(tmp_path / "tfds")}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/results.py"), "--dataset", "cifar10",
                             "--workdir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "cifar10" in last and str(tmp_path / "tfds") in last and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # refused before any work
