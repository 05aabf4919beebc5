"""`train.distill`: knowledge distillation from a dense teacher checkpoint, checked against a NumPy computation of
Hinton et al.'s loss on the teacher's and the student's own outputs."""

import keras
import numpy as np
import pytest

from mayo_lite.cli import main
from mayo_lite.config import Config
from mayo_lite.session.distill import Teacher
from mayo_lite.session.session import Session
from mayo_lite.weights.checkpoint import read
from tests.synthetic import synthetic_dataset

# No batch norm, no dropout: the student's training-mode outputs are its inference outputs, so the loss the loop
# logs can be recomputed exactly from the two models' outputs.
PLAIN = """
model:
  name: {name}
  layers:
    conv0: {{type: {kind}, kernel_size: 3, num_outputs: 6{gate}}}
    pool: {{type: reduce_mean, axis: [1, 2]}}
    logits: {{type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}}
  graph: {{from: input, with: [conv0, pool, logits], to: output}}
train:
  learning_rate: {rate}
  optimizer: {{type: sgd}}
system: {{batch_size_per_gpu: 16, max_epochs: 2, seed: {seed}}}
"""


def config(name, rate=0.1, seed=1, gated=False, norm=False):
    gate = ", normalizer_fn: batch_norm" if gated or norm else ""
    gate += ", gate_params: {density: 0.5}" if gated else ""
    return PLAIN.format(name=name, kind="gated_convolution" if gated else "convolution", gate=gate, rate=rate,
                        seed=seed) + synthetic_dataset(channels=1, train=64, validate=32)


@pytest.fixture
def teacher_run(tmp_path, monkeypatch):
    """A trained `teacher` run in tmp_path; returns its latest checkpoint."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "teacher.yaml").write_text(config("teacher"))
    assert main(["teacher.yaml", "train"]) == 0
    return tmp_path / "checkpoints" / "teacher" / "synthetic" / "latest.npz"


def session(tmp_path, text, *overrides):
    (tmp_path / "student.yaml").write_text(text)
    cfg = Config()
    cfg.load(str(tmp_path / "student.yaml"))
    for override in overrides:
        cfg.override(override)
    return Session(cfg)


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def hinton(student, teacher, labels, temperature, weight):
    """Per example: (1 − w) · crossentropy + w · T² · KL(softmax(teacher / T) ‖ softmax(student / T))."""
    crossentropy = -log_softmax(student)[np.arange(len(labels)), labels]
    soft_teacher = log_softmax(teacher / temperature)
    divergence = np.sum(np.exp(soft_teacher) * (soft_teacher - log_softmax(student / temperature)), -1)
    return (1 - weight) * crossentropy + weight * temperature ** 2 * divergence


def test_blend_is_hintons_loss():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 5)).astype(np.float32)
    teacher_model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    student = rng.normal(size=(8, 4)).astype(np.float32) * 3
    labels = rng.integers(0, 4, 8)
    crossentropy = keras.losses.sparse_categorical_crossentropy(labels, student, from_logits=True)
    for temperature, weight in [(1.0, 0.5), (4.0, 0.9), (2.5, 1.0), (3.0, 0.0)]:
        blended = Teacher(teacher_model, temperature, weight, "test").blend(images, student, crossentropy)
        expected = hinton(student, np.asarray(teacher_model(images)), labels, temperature, weight)
        np.testing.assert_allclose(np.asarray(blended), expected, rtol=1e-5, atol=1e-6)


def test_the_loop_minimises_the_blend_from_the_teachers_checkpoint(tmp_path, teacher_run):
    """With a learning rate of 1e-9 (0 is refused) the logged loss of an epoch is the mean blend over the training
    set, which NumPy recomputes from the teacher checkpoint's weights and the student's."""
    student = session(tmp_path, config("student", rate=1e-9, seed=7),
                      f"train.distill={{teacher: {teacher_run}, temperature: 3, weight: 0.3}}")
    teacher = student.teacher
    stored, _, _ = read(teacher_run)
    for variable in teacher.model.variables:
        np.testing.assert_array_equal(variable.numpy(), stored["model/" + variable.path])
    images, labels = [], []
    for batch_images, batch_labels in student.pipeline("train"):
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    outputs = np.asarray(student.model(images)), np.asarray(teacher.model(images))
    expected = hinton(*outputs, labels, 3.0, 0.3)
    # The soft term's share of the loss is well above the comparison's tolerance (the teacher and the random
    # student disagree), so a loop that left it out would fail.
    assert 0.3 * np.mean(hinton(*outputs, labels, 3.0, 1.0)) > 10 * 1e-4 * np.mean(expected)

    epochs = []
    student.loops.train(1, [keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epochs.append(logs))])
    assert epochs[-1]["loss"] == pytest.approx(float(np.mean(expected)), rel=1e-4)


def test_a_gated_student_has_the_dense_teacher_and_a_pruned_teacher_its_masks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dense.yaml").write_text(config("dense", norm=True))
    assert main(["dense.yaml", "system.max_epochs=1", "train", "prune.percent=0.5", "prune"]) == 0
    latest = tmp_path / "checkpoints" / "dense" / "synthetic" / "latest.npz"
    pruned = latest.parent / "pruned.npz"
    stored, _, _ = read(pruned)
    student = session(tmp_path, config("student", gated=True), f"train.distill.teacher={pruned}")
    teacher = student.teacher
    assert teacher.temperature == 4.0 and teacher.weight == 0.5  # the defaults
    assert [type(layer).__name__ for layer in student.model.layers if "conv0" in layer.name] == ["GatedConv2D"]
    assert "GatedConv2D" not in {type(layer).__name__ for layer in teacher.model.layers}
    kernel = teacher.model.get_layer("conv0").kernel.numpy()
    np.testing.assert_array_equal(kernel, stored["model/conv0/kernel"] * stored["model/conv0/mask"])
    assert np.mean(kernel == 0) >= 0.4  # the masks took

    # And by model name, as system.checkpoint.load reads one: the `latest` of the teacher's run on this dataset.
    by_name = session(tmp_path, config("student", gated=True), "train.distill.teacher=dense")
    assert by_name.teacher.source.resolve() == latest


BAD = [
    (["train.distill.weight=2"], "train.distill.weight"),
    (["train.distill.temperature=0"], "train.distill.temperature"),
    (["train.distill.temprature=3"], "temprature"),
    (["train.distill.teacher=nowhere"], "nowhere"),
    (["train.distill=teacher"], "train.distill"),
]


@pytest.mark.parametrize("overrides, culprit", BAD)
def test_bad_distill_settings_are_one_line_before_training(tmp_path, teacher_run, capsys, overrides, culprit):
    (tmp_path / "student.yaml").write_text(config("student"))
    arguments = ["student.yaml", "train.distill={teacher: teacher}", *overrides, "train"]
    capsys.readouterr()
    assert main(arguments) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("my: error: ") and culprit in err[-1], err
    assert not (tmp_path / "checkpoints" / "student").exists()
    assert read(teacher_run)[1] == 2.0  # the teacher's checkpoint untouched


def test_a_narrowed_student_learns_from_the_full_width_teacher(tmp_path, teacher_run):
    """A channel-pruned (narrower) student: the teacher is built as wide as its checkpoint."""
    student = session(tmp_path, config("student"), "model.layers.conv0.num_outputs=3",
                      f"train.distill.teacher={teacher_run}")
    assert student.model.get_layer("conv0").filters == 3
    assert student.teacher.model.get_layer("conv0").filters == 6
    epochs = []
    student.loops.train(1, [keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epochs.append(logs))])
    assert np.isfinite(epochs[-1]["loss"])
