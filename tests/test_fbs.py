"""FBS through the runner: gated models from YAML, gate parameter errors, dense-to-gated loading, the recipe in one
command, densities in the progress bar, `eval` and `info`. The layer itself is checked against NumPy in
test_gated.py."""

import re
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from mayo_lite.cli import Runner
from mayo_lite.config import Config
from mayo_lite.layers import GatedConv2D
from mayo_lite.models.estimate import layer_table, totals
from mayo_lite.net import build_model
from mayo_lite.weights.checkpoint import read
from tests.synthetic import synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent

DENSE = """
model:
  name: small
  layers:
    _conv: &conv
      type: convolution
      kernel_size: 3
      normalizer_fn: batch_norm
      normalizer_params: {scale: true}
    conv0: {<<: *conv, num_outputs: 8}
    conv1: {<<: *conv, num_outputs: 6, stride: 2}
    pool: {type: reduce_mean, axis: [1, 2]}
    logits: {type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}
  graph: {from: input, with: [conv0, conv1, pool, logits], to: output}
""" + synthetic_dataset(channels=3, train=64, validate=32) + """train:
  learning_rate: 0.05
  optimizer: {type: sgd, momentum: 0.9}
system: {batch_size_per_gpu: 32, max_epochs: 1, seed: 1}
"""

GATED = """
_import: dense.yaml
_gate: {density: 1.0}
_trainable: true
model:
  name: small_gate
  layers:
    conv0: &gated {type: gated_convolution, gate_params: $(_gate), trainable: $(_trainable)}
    conv1: *gated
"""


@pytest.fixture
def run(workspace):
    """Runs `my` in-process in a scratch directory holding dense.yaml and gate.yaml; returns the exit status."""
    return workspace({"dense.yaml": DENSE, "gate.yaml": GATED})


def gated_layers_of(files, overrides=(), shape=(32, 32, 3), name="cifar10"):
    cfg = Config()
    for path in files:
        cfg.load(path)
    cfg.set("dataset", {"name": name, "task": {"num_classes": 10, "shape": dict(zip(
        ("height", "width", "channels"), shape))}})
    for override in overrides:
        cfg.override(override)
    model = build_model(cfg.get("model"), shape)
    return model, [layer for layer in model.layers if isinstance(layer, GatedConv2D)]


# gated config -> (input shape, dataset name, gated layers, convolutions left dense)
GATED_CONFIGS = {
    "models/gate/lenet5.yaml": ((28, 28, 1), "fashion_mnist", 2, 0),
    "models/gate/cifarnet.yaml": ((32, 32, 3), "cifar10", 8, 1),
    "models/gate/cifarnet_slim.yaml": ((28, 28, 1), "fashion_mnist", 8, 1),
    "models/gate/vgg16.yaml": ((64, 64, 3), "imagenet", 13, 0),
    "models/gate/resnet18.yaml": ((64, 64, 3), "imagenet", 16, 4),  # the stem and three shortcuts stay dense
    "models/gate/mobilenet.yaml": ((64, 64, 3), "imagenet", 13, 2),  # pointwise only; conv0 and fc stay dense
}


@pytest.mark.parametrize("path", sorted(GATED_CONFIGS))
def test_the_density_on_the_command_line_reaches_every_gated_layer(path):
    shape, name, count, dense_left = GATED_CONFIGS[path]
    model, gated = gated_layers_of([path], ["_gate.density=0.5", "_gate.pool=max"], shape, name)
    assert len(gated) == count
    assert {layer.density for layer in gated} == {0.5}
    assert {layer.pool for layer in gated} == {"max"}
    plain = [layer for layer in model.layers
             if type(layer) is keras.layers.Conv2D]  # noqa: E721 - exactly the ungated convolutions
    assert len(plain) == dense_left


def test_the_gate_takes_the_batch_norm_settings_and_trainable_of_its_layer():
    _, gated = gated_layers_of(["models/gate/cifarnet.yaml"], ["_trainable=false", "_gate.trainable=true"])
    layer = gated[0]
    assert layer.momentum == pytest.approx(0.997) and layer.epsilon == pytest.approx(0.001)
    trainable = {variable.path.split("/")[-1] for variable in layer.trainable_variables}
    assert trainable == {"gate_kernel", "gate_bias", "beta"}


BAD_GATES = [
    ("_gate.density=0", "model.layers.conv0.gate_params.density"),
    ("_gate.density=1.5", "model.layers.conv0.gate_params.density"),
    ("_gate.policy=parametricc", "model.layers.conv0.gate_params.policy"),
    ("_gate.pool=mean", "model.layers.conv0.gate_params.pool"),
    ("_gate.threshold=moving", "model.layers.conv0.gate_params.threshold"),
    ("_gate.granularity=vector", "model.layers.conv0.gate_params.granularity"),
    ("_gate.policy=naive", "model.layers.conv0.gate_params.regularizer"),
    ("_gate.densty=0.5", "model.layers.conv0.gate_params: unknown key densty (did you mean density?)"),
    ("_gate={policy: parametric}", "model.layers.conv0.gate_params.density: missing"),
    ("model.layers.conv0.normalizer_params={scale: false}", "model.layers.conv0.normalizer_params.scale"),
    ("model.layers.conv0.normalizer_fn=null", "model.layers.conv0.normalizer_fn"),
    ("_gate.factor=-1", "model.layers.conv0.gate_params.factor"),
]


@pytest.mark.parametrize("override, culprit", BAD_GATES)
def test_bad_gate_parameters_are_config_errors_naming_the_layer(run, capsys, override, culprit):
    assert run("gate.yaml", override, "info") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("my: error: ")
    assert culprit in err[0]
    assert not Path("checkpoints").exists()


def test_a_naive_gate_with_an_mse_weight_builds():
    _, gated = gated_layers_of(["models/gate/cifarnet.yaml"], ["_gate.policy=naive", "_gate.regularizer={mse: 0.1}"])
    assert {layer.policy for layer in gated} == {"naive"}


# M-CifarNet on 32×32×3: (output height = width, kernel, input channels, output channels) of conv0 ... conv7.
CIFARNET = [(30, 3, 3, 64), (30, 3, 64, 64), (15, 3, 64, 128), (15, 3, 128, 128), (15, 3, 128, 128),
            (8, 3, 128, 192), (8, 3, 192, 192), (8, 3, 192, 192)]


def test_info_reports_the_effective_macs_of_fbs_md_at_nominal_density(run, capsys):
    assert run("models/gate/cifarnet.yaml", "datasets/cifar10.yaml", "_gate.density=0.5",
               "system.info.density_batches=0", "system.info.plumbing=true", "info") == 0
    out = capsys.readouterr().out
    figures = yaml.safe_load(Path("info.yaml").read_text())
    # docs/design/fbs-semantics.md: conv MACs × in density × out density, plus C_in·d_in · C_out·d_out + H·W·C_out per gate; the
    # classifier sees the last gate's density through dropout and pooling.
    effective, gates, density_in = 0.0, 0.0, 1.0
    for size, kernel, channels_in, channels_out in CIFARNET:
        effective += size * size * kernel * kernel * channels_in * channels_out * density_in * 0.5
        gates += channels_in * density_in * channels_out * 0.5 + size * size * channels_out
        density_in = 0.5
    effective += 192 * 10 * 0.5
    assert figures["total"]["macs"] == 174_301_824
    assert figures["total"]["gate_macs"] == round(gates)
    assert figures["total"]["effective_macs"] == round(effective + gates)
    assert 43.5e6 < figures["total"]["effective_macs"] < 44.5e6
    assert "3.94× fewer; nominal gate densities (system.info.density_batches=0)" in out
    assert figures["densities"] == "nominal gate densities (system.info.density_batches=0)"


def test_without_data_info_says_the_densities_are_nominal(run, capsys):
    assert run("gate.yaml", "dataset.source={type: idx, path: missing}", "_gate.density=0.5", "info") == 0
    assert "nominal gate densities: no validation data" in capsys.readouterr().out


DENSITY_GRAPH = """
model:
  name: branches
  layers:
    _gated: &gated
      type: gated_convolution
      kernel_size: 1
      normalizer_fn: batch_norm
      normalizer_params: {scale: true}
    a: {<<: *gated, num_outputs: 10, gate_params: {density: 0.5}}
    b: {<<: *gated, num_outputs: 10, gate_params: {density: 0.3}}
    c: {<<: *gated, num_outputs: 30, gate_params: {density: 0.2}}
    sum: {type: add}
    joined: {type: concat, axis: -1}
    depthwise: {type: depthwise_convolution, kernel_size: 3}
    plain: {type: convolution, kernel_size: 1, num_outputs: 5}
    after: {type: convolution, kernel_size: 1, num_outputs: 5}
  graph:
    - {from: input, with: a, to: x}
    - {from: input, with: b, to: y}
    - {from: input, with: c, to: z}
    - {from: [x, y], with: sum, to: s}
    - {from: [s, z], with: [joined, depthwise, plain, after], to: output}
"""


def test_densities_follow_additions_concatenations_and_depthwise_layers():
    model = build_model(yaml.safe_load(DENSITY_GRAPH)["model"], (4, 4, 2))
    rows = {row["name"]: row for row in layer_table(model, {"a": 0.4})}
    assert rows["a"]["out_density"] == pytest.approx(0.4)  # measured beats nominal
    assert rows["b"]["out_density"] == pytest.approx(0.3)
    assert rows["sum"]["out_density"] == pytest.approx(1 - 0.6 * 0.7)
    joined = (10 * (1 - 0.6 * 0.7) + 30 * 0.2) / 40
    assert rows["joined"]["out_density"] == pytest.approx(joined)
    assert rows["depthwise"]["in_density"] == pytest.approx(joined)
    assert rows["depthwise"]["effective_macs"] == pytest.approx(4 * 4 * 9 * 40 * joined)
    assert rows["plain"]["effective_macs"] == pytest.approx(4 * 4 * 40 * 5 * joined)
    assert rows["plain"]["out_density"] == 1.0
    assert rows["after"]["effective_macs"] == rows["after"]["macs"]
    assert rows["c"]["effective_macs"] == pytest.approx(4 * 4 * 2 * 30 * 0.2)
    assert rows["c"]["gate_macs"] == pytest.approx(2 * 30 * 0.2 + 4 * 4 * 30)
    total = totals(layer_table(model, {"a": 0.4}))
    assert total["effective_macs"] == pytest.approx(sum(r["effective_macs"] + r["gate_macs"] for r in rows.values()))


def test_a_dense_checkpoint_loads_into_the_gated_model_and_starts_the_gates_from_its_batch_norms(run, capsys):
    assert run("dense.yaml", "train") == 0
    capsys.readouterr()
    assert run("gate.yaml", "system.checkpoint.load=small", "info") == 0
    err = capsys.readouterr().err
    assert "the gates of conv0, conv1 start from the dense batch norms" in err
    assert "new variable(s), not in the checkpoint, keep their initial values: conv0/gate_kernel" in err
    dense, _, _ = read(Path("checkpoints/small/synthetic/latest.npz"))

    runner = Runner()
    runner.cfg.load("gate.yaml")
    runner.cfg.override("system.checkpoint.load=checkpoints/small/synthetic")
    session = runner.session()
    variables = {v.path: v.numpy() for v in session.model.variables}
    for layer in ("conv0", "conv1"):
        np.testing.assert_array_equal(variables[f"{layer}/kernel"], dense[f"model/{layer}/kernel"])
        np.testing.assert_array_equal(variables[f"{layer}/gate_bias"], dense[f"model/{layer}.bn/gamma"])
        np.testing.assert_array_equal(variables[f"{layer}/beta"], dense[f"model/{layer}.bn/beta"])
        for statistic in ("moving_mean", "moving_variance"):
            np.testing.assert_array_equal(variables[f"{layer}/{statistic}"], dense[f"model/{layer}.bn/{statistic}"])
        assert np.all(dense[f"model/{layer}.bn/gamma"] > 0)

    # With the predictor's weights at zero, gamma is exactly the dense scale: at density 1.0 the gated model
    # computes what the dense model does.
    for layer in session.model.layers:
        if isinstance(layer, GatedConv2D):
            layer.gate_kernel.assign(np.zeros(layer.gate_kernel.shape, np.float32))
    dense_runner = Runner()
    dense_runner.cfg.load("dense.yaml")
    dense_model = dense_runner.session().model
    images = np.random.default_rng(0).random((5, 8, 8, 3), dtype=np.float32)
    np.testing.assert_allclose(session.model(images, training=False), dense_model(images, training=False),
                               atol=1e-5)


def test_the_recipe_runs_in_one_command_and_each_step_continues_from_the_last(run, capsys):
    assert run("dense.yaml", "train", "gate.yaml", "reset-num-epochs", "train", "_gate.density=0.5",
               "reset-num-epochs", "train", "eval") == 0
    captured = capsys.readouterr()
    assert "continuing from checkpoints/small/synthetic/latest.npz" in captured.err
    assert "continuing from checkpoints/small_gate/synthetic/latest.npz" in captured.err
    assert captured.out.strip().splitlines()[-1].endswith("density: 50.00%")
    assert " - density: " in captured.out  # the training progress bar
    stored, epoch, meta = read(Path("checkpoints/small_gate/synthetic/latest.npz"))
    assert meta["model"] == "small_gate" and epoch == 1.0
    assert stored["model/conv0/last_density"] == pytest.approx(0.5)


def test_a_changed_checkpoint_selector_wins_over_continuing(run, capsys):
    assert run("dense.yaml", "train", "gate.yaml", "system.checkpoint.load=null", "eval") == 0
    err = capsys.readouterr().err
    assert "continuing from" not in err and "gates of" not in err


def test_a_name_that_is_neither_a_checkpoint_nor_a_run_is_an_error(run, capsys):
    assert run("gate.yaml", "system.checkpoint.load=nothing", "eval") == 2
    err = capsys.readouterr().err
    assert "system.checkpoint.load=nothing" in err and "nor is it a model name" in err


@pytest.mark.parametrize("threshold, variable", [("global", "global_threshold/threshold"),
                                                 ("local", "conv0/threshold")])
def test_moving_thresholds_move_during_training_and_are_checkpointed(run, threshold, variable):
    assert run("gate.yaml", "system.checkpoint.load=null", f"_gate.threshold={threshold}", "_gate.decay=0.5",
               "_gate.density=0.5", "train") == 0
    stored, _, _ = read(Path("checkpoints/small_gate/synthetic/latest.npz"))
    assert stored[f"model/{variable}"] != pytest.approx(-0.1)


def test_eval_reports_layer_densities_and_info_reuses_them(run, capsys):
    assert run("gate.yaml", "_gate.density=0.5", "system.info.plumbing=true", "eval", "info") == 0
    out = capsys.readouterr().out
    figures = yaml.safe_load(Path("eval.yaml").read_text())
    assert figures["density"] == pytest.approx(0.5)
    assert figures["layer_densities"] == {"conv0": pytest.approx(0.5), "conv1": pytest.approx(0.5)}
    assert "gate densities measured by eval on 32 validation images" in out


def test_info_measures_densities_on_validation_batches(run, capsys):
    assert run("gate.yaml", "_gate.density=0.7", "system.info.density_batches=1", "info") == 0
    out = capsys.readouterr().out
    assert "gate densities measured on 32 validation images" in out
    # conv0 keeps ceil(8 · 0.7) = 6 of 8 channels, conv1 ceil(6 · 0.7) = 5 of 6.
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("conv")}
    assert lines["conv0"][4:6] == ["1.000", f"{6 / 8:.3f}"]
    assert lines["conv1"][4:6] == [f"{6 / 8:.3f}", f"{5 / 6:.3f}"]


def test_two_replicas_train_a_gated_model_with_a_global_threshold(tmp_path):
    """The gates' density and the shared threshold are updated inside `strategy.run`, replica by replica."""
    (tmp_path / "dense.yaml").write_text(DENSE)
    (tmp_path / "gate.yaml").write_text(GATED)
    result = subprocess.run([str(ROOT / "my"), "gate.yaml", "system.num_gpus=2", "system.batch_size_per_gpu=16",
                             "_gate.threshold=global", "_gate.decay=0.5", "_gate.density=0.5", "train", "eval"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "2 replicas under MirroredStrategy" in result.stderr
    assert re.search(r"^top1: [\d.]+%, top5: 100.00%, density: [\d.]+%$", result.stdout, re.MULTILINE)
    stored, _, _ = read(tmp_path / "checkpoints" / "small_gate" / "synthetic" / "latest.npz")
    assert stored["model/global_threshold/threshold"] != pytest.approx(-0.1)
