"""The training loop drives Keras callbacks as `fit` does: TensorBoard events and the CSV history by default, and
callbacks a trainer lists in `train.callbacks`."""

import csv
import os
import pty
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.synthetic import synthetic_dataset

GATED = """
model:
  name: small_gate
  layers:
    conv0: {type: gated_convolution, kernel_size: 3, num_outputs: 6, normalizer_fn: batch_norm,
            gate_params: {density: 0.5}}
    conv1: {type: gated_convolution, kernel_size: 3, num_outputs: 8, normalizer_fn: batch_norm,
            gate_params: {density: 0.5}, weights_regularizer: {type: tensorflow.contrib.layers.l2_regularizer, scale: 0.001}}
    pool: {type: reduce_mean, axis: [1, 2]}
    logits: {type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}
  graph: {from: input, with: [conv0, conv1, pool, logits], to: output}
""" + synthetic_dataset(channels=3, train=64, validate=32) + """
train:
  learning_rate: 0.05
  optimizer: {type: sgd, momentum: 0.9}
system: {batch_size_per_gpu: 16, max_epochs: 2, seed: 3}
"""
RUN = Path("checkpoints/small_gate/synthetic")


def scalars(directory):
    """Tag -> list of (step, value) of every scalar summary in the event files under `directory`."""
    found = {}
    for path in Path(directory).rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                found.setdefault(value.tag, []).append((event.step, number))
    return found


def test_training_writes_tensorboard_scalars_and_a_history(workspace):
    run = workspace({"gate.yaml": GATED})
    assert run("gate.yaml", "train") == 0
    found = scalars(RUN / "tensorboard")
    for tag in ("epoch_loss", "epoch_top1", "epoch_top5", "epoch_learning_rate", "epoch_regularization_loss",
                "epoch_density", "epoch_density/conv0", "epoch_density/conv1"):
        assert [step for step, _ in found[tag]] == [0, 1], tag
    assert all(value == pytest.approx(0.05) for _, value in found["epoch_learning_rate"])
    assert all(0 < value <= 0.5 + 1e-6 for _, value in found["epoch_density/conv0"])
    assert all(value > 0 for _, value in found["epoch_regularization_loss"])
    with open(RUN / "history.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [float(row["epoch"]) for row in rows] == [1.0, 2.0]  # the session's epoch counter
    assert list(rows[0]) == ["epoch", "density", "density/conv0", "density/conv1", "learning_rate", "loss",
                             "regularization_loss", "top1", "top5"]
    assert float(rows[1]["loss"]) == pytest.approx(found["epoch_loss"][1][1], rel=1e-5)


def test_tensorboard_and_history_can_be_turned_off(workspace):
    run = workspace({"gate.yaml": GATED})
    assert run("gate.yaml", "system.log.tensorboard=null", "system.log.history=null", "train") == 0
    assert sorted(p.name for p in RUN.iterdir()) == ["epoch-1.npz", "epoch-2.npz", "latest.npz"]


def test_a_callback_listed_in_the_trainer_is_called(workspace):
    """EarlyStopping from YAML: asking each epoch to improve the loss by 100 with no patience, it stops at the end of
    the second epoch (Keras' EarlyStopping never stops after the first)."""
    run = workspace({"gate.yaml": GATED})
    assert run("gate.yaml", "system.max_epochs=5",
               "train.callbacks=[{type: EarlyStopping, monitor: loss, min_delta: 100, patience: 0}]", "train") == 0
    assert sorted(p.name for p in RUN.glob("*.npz")) == ["epoch-1.npz", "epoch-2.npz", "latest.npz"]
    from mayo_lite.weights.checkpoint import read
    assert read(RUN / "latest.npz")[1] == 2.0


def test_an_unknown_callback_is_a_config_error_before_training(workspace, capsys):
    run = workspace({"gate.yaml": GATED})
    assert run("gate.yaml", "train.callbacks=[{type: EarlyStoping}]", "train") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "did you mean EarlyStopping?" in line
    assert not Path("checkpoints").exists()


def test_the_loop_logs_hold_every_gated_layer(workspace, monkeypatch):
    from mayo_lite.session import callbacks
    seen = []
    monkeypatch.setattr(callbacks.ProgressBar, "on_train_batch_end",
                        lambda self, batch, logs=None: seen.append(dict(logs)))
    run = workspace({"gate.yaml": GATED})
    assert run("gate.yaml", "system.max_epochs=1", "train") == 0
    assert len(seen) == 4
    assert {"loss", "top1", "top5", "learning_rate", "regularization_loss", "density", "density/conv0",
            "density/conv1", "step", "epoch", "total_loss"} <= set(seen[-1])
    assert [logs["step"] for logs in seen] == [1, 2, 3, 4]
    np.testing.assert_allclose([logs["epoch"] for logs in seen], [0.25, 0.5, 0.75, 1.0])


# -- the progress bar on a terminal (through a pipe: tests/test_cli.py) ---------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def test_a_run_on_a_terminal_keeps_the_bar_redrawn_at_every_step(tmp_path):
    (tmp_path / "gate.yaml").write_text(GATED)
    primary, secondary = pty.openpty()
    process = subprocess.Popen([str(ROOT / "my"), "gate.yaml", "system.max_epochs=1", "train"], cwd=tmp_path,
                               stdout=secondary, stderr=subprocess.DEVNULL)
    os.close(secondary)
    out = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(primary)
    assert process.wait(timeout=300) == 0
    # Redrawn in place (Keras draws at most every 0.05 s: at least the first step and the last), in colour.
    assert out.count(b"\r\x1b[1m") >= 2 and b"\x08" in out, out[:300]
