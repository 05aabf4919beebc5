"""Interruptions lose nothing, resuming is exact, and failures while training or saving keep the last good
checkpoint."""

import errno
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from mayo_lite.weights import checkpoint as checkpoint_module
from mayo_lite.weights.checkpoint import read
from mayo_lite.session.loop import Loops
from tests.conftest import digest_directory
from tests.synthetic import small_model, synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent
# Dropout and a shuffled, augmented pipeline: resuming must restore the random state and the data order too.
MODEL = small_model("steady", keep_prob=0.7) + synthetic_dataset(channels=3, train=128, validate=32) + """
dataset.task.preprocess.train: [{type: random_flip}]
train:
  learning_rate: 0.05
  optimizer: {type: sgd, momentum: 0.9}
system: {batch_size_per_gpu: 16, max_epochs: 2, seed: 7}
"""
LATEST = Path("checkpoints/steady/synthetic/latest.npz")


@pytest.fixture
def run(workspace):
    return workspace({"steady.yaml": MODEL})


def signal_at_steps(monkeypatch, steps, number=signal.SIGINT):
    """Makes the training step send itself `number` after the given step counts (`steps` maps a count to how many
    signals; a set sends one)."""
    steps = dict.fromkeys(steps, 1) if isinstance(steps, set) else steps
    build = Loops._build_train_step

    def patched(self):
        step = build(self)
        done = [0]

        def counted(batch):
            results = step(batch)
            done[0] += 1
            for _ in range(steps.get(done[0], 0)):
                signal.raise_signal(number)
            return results
        return counted
    monkeypatch.setattr(Loops, "_build_train_step", patched)


def test_an_interrupted_run_resumes_exactly_where_it_stopped(run, capsys, monkeypatch, tmp_path):
    assert run("steady.yaml", "train") == 0
    straight, epoch, _ = read(LATEST)
    assert epoch == 2.0
    shutil.rmtree(LATEST.parent)

    with monkeypatch.context() as patch:
        signal_at_steps(patch, {3})  # mid-way through epoch 1 (8 steps of 16 images)
        assert run("steady.yaml", "train") == 130
    err = capsys.readouterr().err
    assert "my: interrupted (SIGINT) at epoch 0.375; the checkpoint `latest` holds the progress" in err
    assert read(LATEST)[1] == pytest.approx(0.375)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are restored

    assert run("steady.yaml", "train") == 0
    resumed, epoch, _ = read(LATEST)
    assert epoch == 2.0
    assert set(resumed) == set(straight)
    for name, value in straight.items():
        np.testing.assert_allclose(resumed[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_second_interrupt_stops_at_once_without_saving(run, capsys, monkeypatch):
    assert run("steady.yaml", "system.max_epochs=1", "train") == 0
    before = LATEST.read_bytes()
    signal_at_steps(monkeypatch, {2: 2})  # a second Ctrl-C before the step ends
    capsys.readouterr()
    assert run("steady.yaml", "train") == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "my: interrupted"
    assert LATEST.read_bytes() == before


def test_sigterm_saves_latest_before_exiting(tmp_path):
    # Many steps per epoch, so the signal arrives in the middle of training.
    (tmp_path / "steady.yaml").write_text(MODEL.replace("train: 128", "train: 100000"))
    process = subprocess.Popen([str(ROOT / "my"), "steady.yaml", "train"], cwd=tmp_path, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.startswith("epoch 1/2"):
            break
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    lines += process.stderr.readlines()
    assert process.wait(timeout=120) == 130, "".join(lines)
    assert any("interrupted (SIGTERM)" in line for line in lines)
    _, epoch, _ = read(tmp_path / LATEST)
    assert 0 < epoch < 1


digest = digest_directory


def test_divergence_stops_with_the_step_and_epoch_and_keeps_the_last_good_checkpoint(run, capsys):
    assert run("steady.yaml", "system.max_epochs=1", "train") == 0
    before = digest(LATEST.parent)
    capsys.readouterr()
    assert run("steady.yaml", "train.learning_rate=1e30", "train") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("my: error: training diverged: the loss became") and "(step " in err
    assert "of epoch 2)" in err
    assert digest(LATEST.parent) == before


def test_a_full_disk_is_a_clear_error_and_the_previous_checkpoint_survives(run, capsys, monkeypatch):
    assert run("steady.yaml", "system.max_epochs=1", "train") == 0
    before = digest(LATEST.parent)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoint_module.np, "savez", full)
    capsys.readouterr()
    assert run("steady.yaml", "train") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("my: error: cannot write checkpoint") and "No space left on device" in err
    assert digest(LATEST.parent) == before  # no temporary file left behind either


def test_an_unwritable_checkpoint_directory_is_a_clear_error(run, capsys):
    Path("blocked").write_text("a file where the checkpoint directory should be")
    assert run("steady.yaml", "system.checkpoint.path=blocked/run", "system.max_epochs=1", "train") == 2
    # Refused before any work: the only line on stderr.
    assert capsys.readouterr().err.strip().splitlines() == [
        "my: error: command line (system.checkpoint.path=blocked/run): system.checkpoint.path: blocked is a file, "
        "so blocked/run cannot be a directory"]


def test_a_half_written_checkpoint_from_a_killed_save_is_ignored(run):
    assert run("steady.yaml", "system.max_epochs=1", "train") == 0
    # What `kill -9` during a save leaves: a temporary file beside the intact `latest`.
    (LATEST.parent / ".latest.x1y2.tmp").write_bytes(b"PK\x03\x04 truncated")
    assert run("steady.yaml", "system.max_epochs=2", "train", "eval-all") == 0
    assert read(LATEST)[1] == 2.0
