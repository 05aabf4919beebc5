"""A user's checkpoint survives whatever happens: corrupt files, NaN data or weights, a stop request while the
pipeline is busy; and epochs end where `num_examples_per_epoch` says."""

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mayo_lite.cli import main
from mayo_lite.errors import CheckpointError
from mayo_lite.weights import checkpoint
from mayo_lite.session.loop import Loops
from tests.conftest import digest_file
from tests.test_reliability import MODEL

ROOT = Path(__file__).resolve().parent.parent
LATEST = Path("checkpoints/steady/synthetic/latest.npz")


@pytest.fixture
def trained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "steady.yaml").write_text(MODEL)
    assert main(["steady.yaml", "system.max_epochs=1", "train"]) == 0
    return tmp_path


digest = digest_file


# -- corrupt checkpoints: the right values or the project's error, never another exception, never a change ------

@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint") / "good.npz"
    rng = np.random.default_rng(0)
    arrays = {"model/conv/kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
              "model/conv/bias": rng.normal(size=4).astype(np.float32),
              "optimizer/iterations": np.int64(7)}
    checkpoint.CheckpointStore(path.parent).save("good", arrays, 2.5, {"model": "m"})
    return path, arrays


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "zero"]), st.floats(0, 1),
                                 st.integers(0, 255)), min_size=1, max_size=4))
def test_a_corrupted_checkpoint_loads_right_or_fails_cleanly(original, tmp_path_factory, damage):
    path, arrays = original
    data = bytearray(path.read_bytes())
    for kind, where, byte in damage:
        if not data:  # cut to nothing already
            break
        at = int(where * (len(data) - 1))
        if kind == "flip":
            data[at] ^= byte or 1
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = bytes([byte]) * 16
        else:
            data[at:at + 64] = bytes(len(data[at:at + 64]))
    damaged = tmp_path_factory.mktemp("damaged") / "damaged.npz"
    damaged.write_bytes(bytes(data))
    before = digest(damaged)
    try:
        variables, epoch, meta = checkpoint.read(damaged)
    except CheckpointError as error:
        assert str(damaged) in str(error)
    else:  # what it read is what was written (zip CRCs catch changed data)
        assert epoch == 2.5 and meta == {"model": "m"}
        assert set(variables) == set(arrays)
        for name, value in arrays.items():
            np.testing.assert_array_equal(variables[name], value)
    assert digest(damaged) == before


# -- non-finite weights never replace a good checkpoint ------------------------------------------------------------

@pytest.mark.parametrize("pixels", [1, 64])
def test_nan_in_the_data_never_reaches_the_checkpoint(trained, monkeypatch, capsys, pixels):
    """One NaN pixel per image (the ReLU and pooling of a network can keep it out of the loss), or a whole row."""
    from mayo_lite.session import session as session_module
    make_dataset = session_module.make_dataset

    def poisoned(*arguments, **options):
        def poison(images, labels):
            mask = np.zeros(images.shape[1:], np.float32)
            mask.reshape(-1)[:pixels] = np.nan
            return images + mask, labels
        return make_dataset(*arguments, **options).map(poison)
    monkeypatch.setattr(session_module, "make_dataset", poisoned)
    before = digest(LATEST)
    board = LATEST.parent / "tensorboard"
    events = sorted(board.rglob("*"))
    assert any(path.name.startswith("events.out.tfevents") for path in events)  # the first, good run's
    assert main(["steady.yaml", "system.max_epochs=2", "train"]) == 2
    assert "training diverged" in capsys.readouterr().err
    assert digest(LATEST) == before
    assert sorted(board.rglob("*")) == events  # the failed run's event file is gone, the good run's kept


def test_a_full_disk_when_tensorboard_starts_is_one_line_and_leaves_nothing(trained, monkeypatch, capsys):
    import tensorflow as tf

    def full(*arguments, **options):
        raise tf.errors.ResourceExhaustedError(None, None, "tb/run/train; No space left on device")
    monkeypatch.setattr(tf.summary, "create_file_writer", full)
    before = digest(LATEST)
    capsys.readouterr()
    assert main(["steady.yaml", "system.max_epochs=2", "system.log.tensorboard=tb/run", "train"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("my: error: cannot write the TensorBoard log in tb/run: ") and "No space" in lines[-1]
    assert "Traceback" not in "\n".join(lines) and not Path("tb").exists()
    assert digest(LATEST) == before


def test_a_disk_that_fills_during_training_stops_the_tensorboard_log_not_the_training(trained, monkeypatch, capsys):
    """TensorFlow's writer raises when it flushes to a full disk (seen on a 300 KB tmpfs): one warning, the log
    stops, the run trains on and saves its checkpoints."""
    import tensorflow as tf
    scalar, calls = tf.summary.scalar, [0]

    def filling(*arguments, **options):
        calls[0] += 1
        if calls[0] > 3:  # the first epoch's summaries fit, then the disk is full
            raise tf.errors.ResourceExhaustedError(
                None, None, "{{function_node __wrapped__WriteSummary}} tb/run/train/events.out.tfevents.1; No space "
                "left on device\n\tFailed to flush 11 events")
        return scalar(*arguments, **options)
    monkeypatch.setattr(tf.summary, "scalar", filling)
    capsys.readouterr()
    assert main(["steady.yaml", "system.max_epochs=3", "system.log.tensorboard=tb/run", "train"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("TensorBoard:")]
    assert warnings == ["TensorBoard: cannot write to tb/run (No space left on device); training goes on without "
                        "its TensorBoard log"], err
    assert "Traceback" not in err
    assert checkpoint.read(LATEST)[1] == 3.0


def test_a_weight_turned_nan_mid_training_never_reaches_the_checkpoint(trained, monkeypatch, capsys):
    before = digest(LATEST)
    build = Loops._build_train_step

    def poisoned(self):
        step = build(self)
        calls = [0]

        def wrapped(batch):
            calls[0] += 1
            if calls[0] == 3:  # a moving mean: training uses batch statistics, so the loss stays finite
                mean = self.model.get_layer("conv0.bn").moving_mean
                mean.assign(np.full(mean.shape, np.nan, np.float32))
            return step(batch)
        return wrapped
    monkeypatch.setattr(Loops, "_build_train_step", poisoned)
    assert main(["steady.yaml", "system.max_epochs=2", "train"]) == 2
    assert "hold NaN or infinite values" in capsys.readouterr().err
    assert digest(LATEST) == before


# -- epochs end at their boundary ----------------------------------------------------------------------------------

def test_an_epoch_smaller_than_the_split_runs_exactly_its_steps(tmp_path, monkeypatch):
    """Fashion-MNIST's 60,000 training images, epochs of 96: each epoch is exactly 3 steps of 32."""
    monkeypatch.chdir(tmp_path)
    steps = []
    build = Loops._build_train_step

    def counting(self):
        step = build(self)

        def wrapped(batch):
            steps.append(float(self.session.epoch.value))
            return step(batch)
        return wrapped
    monkeypatch.setattr(Loops, "_build_train_step", counting)
    assert main(["models/lenet5.yaml", "datasets/fashion_mnist.yaml", "trainers/lenet5.yaml",
                 "dataset.num_examples_per_epoch.train=96", "system.batch_size_per_gpu=32", "system.max_epochs=3",
                 "system.checkpoint.load=null", "train"]) == 0
    assert len(steps) == 9
    np.testing.assert_allclose(steps, np.arange(9) / 3, atol=1e-9)  # the counter before each step
    run = Path("checkpoints/lenet5/fashion_mnist")
    assert sorted(p.name for p in run.glob("*.npz")) == ["epoch-1.npz", "epoch-2.npz", "epoch-3.npz", "latest.npz"]
    assert checkpoint.read(run / "epoch-2.npz")[1] == 2.0
    assert checkpoint.read(run / "latest.npz")[1] == 3.0


# -- stop requests --------------------------------------------------------------------------------------------------

def _my(arguments, cwd, **options):
    return subprocess.Popen([str(ROOT / "my"), *arguments], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **options)


def test_sigterm_on_the_real_pipeline_saves_and_exits_within_ten_seconds(tmp_path):
    process = _my(["models/cifarnet_slim.yaml", "datasets/fashion_mnist.yaml", "trainers/cifarnet.yaml",
                   "system.max_epochs=1", "system.checkpoint.load=null", "train"], tmp_path)
    latest = tmp_path / "checkpoints/cifarnet_slim/fashion_mnist/latest.npz"
    started = time.monotonic()
    for line in iter(process.stderr.readline, ""):  # the first progress bar line: training is under way
        if "epoch 1/1" in line or time.monotonic() - started > 120:
            break
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        process.wait(timeout=10)
    finally:
        process.kill()
    assert time.monotonic() - sent < 10
    assert process.returncode == 130
    assert latest.is_file()
    epoch = checkpoint.read(latest)[1]
    assert 0 < epoch < 1


def test_sigterm_before_training_is_one_line_and_status_130(tmp_path):
    process = _my(["models/lenet5.yaml", "datasets/fashion_mnist.yaml", "info"], tmp_path)
    time.sleep(1.0)  # importing, before any training loop exists
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "my: stopped (SIGTERM)"
    assert "Traceback" not in err


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """`my --help | head -1`: the pipe closes before the usage is written."""
    read, write = os.pipe()
    process = subprocess.Popen([str(ROOT / "my"), "--help"], stdout=write, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path)
    os.close(write)
    os.close(read)  # nobody reads: writing the usage fails with a broken pipe
    _, err = process.communicate(timeout=30)
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert process.returncode in (0, 141)


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_ctrl_c_in_the_first_moments_is_one_line_without_traceback(tmp_path, delay):
    """Ctrl-C while Python imports mayo-lite and TensorFlow, or while the model is built."""
    process = _my(["models/lenet5.yaml", "datasets/fashion_mnist.yaml", "info"], tmp_path)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    # Before Python runs any of its code the signal kills it (-2); after, it is the launcher's one line.
    assert process.returncode in (130, -signal.SIGINT, 0), err
    if process.returncode == 130:
        assert err.strip().splitlines()[-1] in ("my: interrupted", "my: stopped (SIGTERM)")


def test_ctrl_c_inside_a_c_extension_import_is_an_interruption(monkeypatch, capsys):
    """TensorFlow's pybind11 modules turn a KeyboardInterrupt during their import into "ImportError:
    initialization failed" raised from it (seen once in CI at delay 0.8 above): still Ctrl-C, not a failure."""
    import mayo_lite.cli as cli

    def interrupted_import(self, name):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as cause:
            raise ImportError("initialization failed") from cause

    monkeypatch.setattr(cli.Runner, "act", interrupted_import)
    assert main(["models/lenet5.yaml", "info"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "my: interrupted"

    def broken_import(self, name):
        raise ImportError("initialization failed")

    monkeypatch.setattr(cli.Runner, "act", broken_import)
    assert main(["models/lenet5.yaml", "info"]) == 1
    assert "ImportError: initialization failed" in capsys.readouterr().err


def test_a_full_disk_while_writing_a_result_file_leaves_the_previous_one(trained, monkeypatch, capsys):
    import errno
    assert main(["steady.yaml", "export"]) == 0
    before = digest("export.yaml")

    def full(*arguments):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    assert main(["steady.yaml", "system.max_epochs=5", "export"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "my: error: cannot write export.yaml: No space left on device (nothing was changed)")
    assert digest("export.yaml") == before
    assert sorted(p.name for p in Path(".").iterdir() if p.name.startswith(".export")) == []
