"""The `my` command end to end on small data: actions, checkpoints, the epoch counter and every bad input."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mayo_lite.cli import ACTION_HELP, main
from mayo_lite.session.actions import ACTIONS, load
from mayo_lite.weights.checkpoint import read
from tests.conftest import digest_directory
from tests.synthetic import small_model, synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent
TINY = small_model("tiny", num_outputs=4) + synthetic_dataset(channels=1, train=96, validate=32) + """train:
  learning_rate: 0.05
  optimizer: {type: sgd, momentum: 0.9}
system: {batch_size_per_gpu: 32, max_epochs: 2, seed: 1}
"""


@pytest.fixture
def run(tmp_path, monkeypatch):
    """Runs `my` in-process in a scratch directory holding tiny.yaml; returns (status, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY)

    def call(*arguments, capsys=None):
        return main(list(arguments))
    return call


def checkpoints(tmp_path):
    return tmp_path / "checkpoints" / "tiny" / "synthetic"


digest = digest_directory


def test_every_action_has_help_and_an_implementation():
    assert set(ACTIONS) == set(ACTION_HELP)
    for name in ACTIONS:
        action, check = load(name)
        assert callable(action) and (check is None or callable(check)), name


def test_the_readme_table_of_actions_is_the_table_of_actions():
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z-]+)` \|", readme.split("| action | what it does |")[1], re.M)
    assert rows == list(ACTIONS)


def test_help_does_not_load_tensorflow():
    code = ("import sys, io, contextlib; from mayo_lite.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_help_lists_every_action(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ACTION_HELP:
        assert name in out


def test_train_saves_checkpoints_and_continues_from_the_saved_epoch(run, tmp_path, capsys):
    assert run("tiny.yaml", "system.max_epochs=1", "train") == 0
    directory = checkpoints(tmp_path)
    assert {p.name for p in directory.glob("*.npz")} == {"epoch-1.npz", "latest.npz"}
    assert read(directory / "latest.npz")[1] == 1.0
    # Running train again continues: only epoch 2 is trained.
    assert run("tiny.yaml", "train") == 0
    assert {p.name for p in directory.glob("*.npz")} == {"epoch-1.npz", "epoch-2.npz", "latest.npz"}
    assert read(directory / "latest.npz")[1] == 2.0
    # Already at max_epochs: nothing happens, nothing is rewritten.
    before = digest(directory)
    assert run("tiny.yaml", "train") == 0
    assert digest(directory) == before
    assert "already trained to epoch 2" in capsys.readouterr().err
    # reset-num-epochs trains a full schedule again, from the loaded weights.
    weights_before = read(directory / "latest.npz")[0]["model/conv0/kernel"]
    assert run("tiny.yaml", "reset-num-epochs", "train") == 0
    variables, epoch, _ = read(directory / "latest.npz")
    assert epoch == 2.0
    assert not np.array_equal(variables["model/conv0/kernel"], weights_before)


def test_fractional_max_epochs_stop_mid_epoch(run, tmp_path):
    assert run("tiny.yaml", "system.max_epochs=0.5", "train") == 0
    epoch = read(checkpoints(tmp_path) / "latest.npz")[1]
    # 96 examples in batches of 32: the counter moves in thirds, and stops at the first step past 0.5.
    assert epoch == pytest.approx(2 / 3)


def test_checkpoint_round_trip_restores_weights_optimizer_and_epoch(run, tmp_path):
    from mayo_lite.cli import Runner
    assert run("tiny.yaml", "system.max_epochs=1", "train") == 0
    runner = Runner()
    runner.cfg.load("tiny.yaml")
    session = runner.session()
    stored, epoch, meta = read(checkpoints(tmp_path) / "latest.npz")
    assert epoch == 1.0 and meta["model"] == "tiny"
    for name, variable in session.variables().items():
        np.testing.assert_array_equal(variable.numpy(), stored[name], err_msg=name)
    assert any(name.startswith("optimizer/") and "momentum" in name for name in stored)


def test_load_by_epoch_name_and_path(run, tmp_path, capsys):
    assert run("tiny.yaml", "system.max_epochs=2", "train") == 0
    directory = checkpoints(tmp_path)
    capsys.readouterr()
    assert run("tiny.yaml", "system.checkpoint.load=1", "eval") == 0
    assert "epoch-1.npz (epoch 1)" in capsys.readouterr().err
    assert run("tiny.yaml", f"system.checkpoint.load={directory / 'epoch-2.npz'}", "eval") == 0
    assert "(epoch 2)" in capsys.readouterr().err
    assert run("tiny.yaml", "save", "system.checkpoint.load=null", "eval") == 0


def test_eval_prints_top1_and_top5_and_plumbing(run, tmp_path, capsys):
    assert run("tiny.yaml", "system.max_epochs=1", "train", "system.info.plumbing=true", "eval") == 0
    out = capsys.readouterr().out
    assert "top1: " in out and "top5: 100.00%" in out  # 4 classes: the true class is always in the top 5
    data = yaml.safe_load((tmp_path / "eval.yaml").read_text())
    assert data["examples"] == 32 and 0 <= data["top1"] <= 1


def test_info_needs_no_data_and_writes_info_yaml(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no-data"))
    assert main(["models/cifarnet.yaml", "datasets/cifar10.yaml", "system.info.plumbing=true", "info"]) == 0
    out = capsys.readouterr().out
    assert "174,301,824" in out
    data = yaml.safe_load((tmp_path / "info.yaml").read_text())
    assert data["total"]["macs"] == 174_301_824
    assert [layer["name"] for layer in data["layers"]][0] == "conv0"
    assert not (tmp_path / "no-data").exists()


def test_export_writes_the_resolved_config(run, tmp_path):
    assert run("tiny.yaml", "system.batch_size_per_gpu=16", "export") == 0
    exported = yaml.safe_load((tmp_path / "export.yaml").read_text())
    assert exported["system"]["batch_size_per_gpu"] == 16
    assert exported["model"]["layers"]["logits"]["num_outputs"] == 4
    assert exported["system"]["checkpoint"]["path"] == "checkpoints/tiny/synthetic"


def test_eval_all_writes_a_row_per_checkpoint(run, tmp_path):
    assert run("tiny.yaml", "system.max_epochs=2", "train", "eval-all") == 0
    lines = (tmp_path / "eval_all.csv").read_text().splitlines()
    assert lines[0] == "checkpoint,epoch,top1,top5,macs,effective_macs"
    assert [line.split(",")[0] for line in lines[1:]] == ["epoch-1", "epoch-2", "latest"]
    # A 3×3 convolution of 1 to 4 channels on 8×8 and a 4→4 dense layer; no mask, no gate.
    assert {tuple(line.split(",")[4:]) for line in lines[1:]} == {("2320", "2320")}


def test_eval_all_without_checkpoints_is_one_line_naming_the_directory(run, tmp_path, capsys):
    """Before the model is built: the error is the only line."""
    assert run("tiny.yaml", "eval-all") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"my: error: eval-all: no checkpoints in {Path('checkpoints/tiny/synthetic')}"]
    assert not (tmp_path / "eval_all.csv").exists()


def test_config_change_discards_the_session(run, tmp_path, capsys):
    # The second train sees max_epochs=2 only through a fresh session that loads `latest` (epoch 1).
    assert run("tiny.yaml", "system.max_epochs=1", "train", "system.max_epochs=2", "train") == 0
    assert read(checkpoints(tmp_path) / "latest.npz")[1] == 2.0
    assert "loaded checkpoint" in capsys.readouterr().err


def test_new_variables_are_listed_when_loading_a_smaller_model(run, tmp_path, capsys):
    assert run("tiny.yaml", "system.max_epochs=1", "train") == 0
    capsys.readouterr()
    status = run("tiny.yaml", "model.layers.extra={type: fully_connected, num_outputs: 4}",
                 "model.graph.with=[conv0, pool, extra, logits]", "eval")
    assert status == 0
    err = capsys.readouterr().err
    assert "not in the checkpoint, keep their initial values: extra/kernel, extra/bias" in err


BAD_INPUTS = [
    (["nonexistent.yaml", "info"], "nonexistent.yaml"),
    (["tiny.yaml", "trian"], "trian"),
    (["tiny.yaml", "bad.yaml", "info"], "bad.yaml"),
    (["tiny.yaml", "system.max_epochs=[1", "info"], "system.max_epochs"),
    (["tiny.yaml", "model.layers.logits.num_outputs=$(dataset.nothing)", "info"], "dataset.nothing"),
    (["cycle_a.yaml", "info"], "cycle_a.yaml"),
    (["tiny.yaml", "model.layers.conv0.type=convolutoin", "info"], "convolutoin"),
    (["tiny.yaml", "model.layers.conv0.num_outputs=5", "eval"], "conv0"),
    (["tiny.yaml", "dataset.source={type: idx, path: nowhere}", "dataset.name=nothing", "eval"], "nothing"),
    (["tiny.yaml", "train.optimizer.type=adamm", "train"], "adamm"),
    (["tiny.yaml", "system.checkpoint.load=epoch-9", "eval"], "epoch-9"),
    (["tiny.yaml", "system.max_epochs=-1", "train"], "system.max_epochs"),
]


@pytest.mark.parametrize("arguments, culprit", BAD_INPUTS)
def test_bad_inputs_give_one_line_and_status_2_and_keep_checkpoints(run, tmp_path, capsys, arguments, culprit):
    (tmp_path / "bad.yaml").write_text("model: {name: [unclosed\n")
    (tmp_path / "cycle_a.yaml").write_text("_import: cycle_b.yaml\n")
    (tmp_path / "cycle_b.yaml").write_text("_import: cycle_a.yaml\n")
    assert run("tiny.yaml", "system.max_epochs=1", "train") == 0
    before = digest(checkpoints(tmp_path))
    capsys.readouterr()
    assert run(*arguments) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("my: error: ") and culprit in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert digest(checkpoints(tmp_path)) == before


def test_the_launcher_exits_2_without_traceback(tmp_path):
    result = subprocess.run([str(ROOT / "my"), "models/lenet5.yaml", "nonsense-action"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "nonsense-action" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_launcher_runs_from_another_directory(tmp_path):
    env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path))
    result = subprocess.run([str(ROOT / "my"), "models/lenet5.yaml", "datasets/mnist.yaml", "info"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert "2,293,000" in result.stdout


def test_a_run_whose_output_is_not_a_terminal_logs_one_line_per_epoch(tmp_path):
    """Under nohup, in CI or through a pipe, the progress bar is one plain line per epoch (Keras' `verbose=2`), not
    every step with a terminal's escape codes."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = subprocess.run([str(ROOT / "my"), "tiny.yaml", "system.max_epochs=3", "train", "eval"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout and "\x1b[" not in result.stdout and "\b" not in result.stdout
    lines = result.stdout.splitlines()
    steps = 96 // 32  # TINY's training examples over its batch
    assert [line.split(" - ")[0] for line in lines[:3]] == [f"{steps}/{steps}"] * 3, lines
    assert re.fullmatch(r"\d+/\d+ - .*", lines[3]) and lines[4].startswith("top1: ") and len(lines) == 5, lines


def test_lenet5_learns_fashion_mnist_in_a_fraction_of_an_epoch(tmp_path, monkeypatch, capsys):
    """Real data, end to end: a tenth of an epoch of LeNet-5 is far above chance (10%) on the test set."""
    monkeypatch.chdir(tmp_path)
    status = main(["models/lenet5.yaml", "datasets/fashion_mnist.yaml", "trainers/lenet5.yaml",
                   "system.max_epochs=0.1", "system.seed=0", "train", "eval"])
    assert status == 0
    out = capsys.readouterr().out
    top1 = float(re.search(r"^top1: ([\d.]+)%, top5: ", out, re.MULTILINE).group(1))
    assert top1 > 60.0, out


def test_two_replicas_train_through_the_same_step(tmp_path):
    """system.num_gpus=2 without GPUs splits the CPU into two replicas; the counts stay exact. A config change
    rebuilds the session, whose gated steps run on the same replicas (a second MirroredStrategy over the same
    devices collided with the first one's collective operations)."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = subprocess.run([str(ROOT / "my"), "tiny.yaml", "system.num_gpus=2", "system.batch_size_per_gpu=16",
                             "system.max_epochs=1", "train", "eval"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "2 replicas under MirroredStrategy" in result.stderr
    assert re.search(r"^top1: [\d.]+%, top5: 100.00%$", result.stdout, re.MULTILINE)
    variables, epoch, _ = read(tmp_path / "checkpoints" / "tiny" / "synthetic" / "latest.npz")
    assert epoch == 1.0 and np.isfinite(variables["model/conv0/kernel"]).all()
    gated = subprocess.run([str(ROOT / "my"), "models/gate/lenet5.yaml", "datasets/synthetic.yaml",
                            "trainers/lenet5.yaml", "system.num_gpus=2", "dataset.num_examples_per_epoch.train=2000",
                            "system.max_epochs=0.02", "train", "system.max_epochs=0.04", "eval"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert gated.returncode == 0, gated.stderr[-2000:]
    assert gated.stderr.count("2 replicas under MirroredStrategy") == 2
    assert re.search(r"^top1: [\d.]+%, top5: [\d.]+%, density: [\d.]+%$", gated.stdout, re.MULTILINE)


def test_save_keep_limits_numbered_checkpoints(run, tmp_path):
    assert run("tiny.yaml", "system.checkpoint.save.keep=1", "train") == 0
    assert {p.name for p in checkpoints(tmp_path).glob("*.npz")} == {"epoch-2.npz", "latest.npz"}


def test_a_corrupt_checkpoint_is_a_clear_error(run, tmp_path, capsys):
    assert run("tiny.yaml", "system.max_epochs=1", "train") == 0
    (checkpoints(tmp_path) / "broken.npz").write_bytes(b"not a zip file")
    capsys.readouterr()
    assert run("tiny.yaml", "system.checkpoint.load=broken", "eval") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "broken.npz: not a readable mayo-lite checkpoint" in err
