"""Sparse execution of gated models: the same outputs as the gated Keras model in inference, with only the active
channels computed, for every shipped gated model."""

import keras
import numpy as np
import pytest

from mayo_lite.config import Config
from mayo_lite.layers import GatedConv2D
from mayo_lite.net import build_model
from mayo_lite.sparse import InferenceProgram, SparseGatedModel, UnsupportedModel


def gated_model(path, shape, density, threshold="online", **gate):
    keras.utils.set_random_seed(0)
    cfg = Config()
    cfg.load(path)
    cfg.set("dataset", {"name": "x", "task": {"num_classes": 10}})
    cfg.override(f"_gate.density={density}")
    cfg.override(f"_gate.threshold={threshold}")
    for key, value in gate.items():
        cfg.override(f"_gate.{key}={value}")
    model = build_model(cfg.get("model"), shape)
    randomize_statistics(model)
    return model


def randomize_statistics(model, seed=1):
    """Trained-looking statistics, so that normalisation and offsets matter (a fresh model has mean 0, variance 1,
    offsets 0, which would hide a wrong fold)."""
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        if variable.path.endswith(("gate_kernel", "gate_bias")):
            # Gammas about 1 but far apart: near-ties at the threshold could flip with float rounding (XLA and
            # Keras add in different orders), switching a different channel off, which is not what is tested here;
            # and gammas that grow with their input would blow a deep random network up.
            bias = variable.path.endswith("bias")
            values = rng.uniform(0.5, 1.5, variable.shape) if bias else rng.normal(
                0.0, 0.1 / np.sqrt(variable.shape[0]), variable.shape)
            variable.assign(values.astype(np.float32))
        name = variable.path.rsplit("/", 1)[-1]
        if name == "moving_variance":
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype(np.float32))
        elif name in ("moving_mean", "beta"):
            variable.assign(rng.normal(0.0, 0.3, variable.shape).astype(np.float32))
        elif name == "gamma":
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(np.float32))
        elif name == "threshold":
            variable.assign(np.float32(0.9))


def assert_same_outputs(model, program, shape, images=3, atol=1e-4):
    rng = np.random.default_rng(2)
    for _ in range(images):
        image = rng.random((1, *shape), dtype=np.float32)
        expected = model(image, training=False).numpy()
        difference = np.max(np.abs(np.asarray(program(image)) - expected))
        assert difference < atol * max(1.0, np.max(np.abs(expected))), difference


SHIPPED = [
    ("models/gate/lenet5.yaml", (28, 28, 1)),  # flatten and dense layers after the gates
    ("models/gate/cifarnet.yaml", (32, 32, 3)),
    ("models/gate/cifarnet_slim.yaml", (28, 28, 1)),
    ("models/gate/vgg16.yaml", (32, 32, 3)),  # CIFAR head: flatten after the last gate
    ("models/gate/resnet18.yaml", (64, 64, 3)),  # gates inside residual blocks
    ("models/gate/mobilenet.yaml", (64, 64, 3)),  # depthwise batch-norm offsets after the gates
]


# The layer at which the native runtime stops, for the models it does not run (they stay on TensorFlow).
NOT_NATIVE = {"models/gate/mobilenet.yaml": "conv0.act: the native runtime has no relu6 activation"}


@pytest.mark.parametrize("path, shape", SHIPPED)
@pytest.mark.parametrize("density", [1.0, 0.75, 0.5, 0.3])
def test_every_shipped_gated_model_runs_sparsely_with_the_keras_outputs(path, shape, density):
    model = gated_model(path, shape, density)
    program = SparseGatedModel(model, engine="xla")
    assert program.jit_compile  # online thresholds: static shapes, compiled whole
    assert_same_outputs(model, program, shape)
    if path in NOT_NATIVE:
        with pytest.raises(UnsupportedModel, match=NOT_NATIVE[path]):
            SparseGatedModel(model, engine="native")
        return
    native = SparseGatedModel(model, engine="native")
    for mode in ("gather", "every"):  # what tuning chooses between: either gives the Keras outputs
        for operation in native.native.operations:
            operation.mode = mode
        assert_same_outputs(model, native, shape)


@pytest.mark.parametrize("path, shape", [SHIPPED[2], SHIPPED[4], SHIPPED[5]])
@pytest.mark.parametrize("threshold", ["local", "global"])
def test_moving_thresholds_give_the_keras_outputs(path, shape, threshold):
    model = gated_model(path, shape, 0.5, threshold)
    program = SparseGatedModel(model, engine="xla")
    assert not program.jit_compile  # how many channels pass a fixed threshold differs from image to image
    assert_same_outputs(model, program, shape)


@pytest.mark.parametrize("gate", [
    {"policy": "squeeze"},
    {"policy": "naive", "regularizer": "{mse: 1.0}"},
    {"parametric_beta": "true"},
    {"add_beta_first": "true"},
    {"factor": 4, "pool": "max"},
    {"pool": "l2", "enable": "false"},
])
def test_other_gate_settings_give_the_keras_outputs(gate):
    model = gated_model("models/gate/cifarnet_slim.yaml", (28, 28, 1), 0.5, **gate)
    assert_same_outputs(model, SparseGatedModel(model, engine="xla"), (28, 28, 1))
    try:
        native = SparseGatedModel(model, engine="native")
    except UnsupportedModel as error:  # said per layer; the auto engine stays on TensorFlow
        assert str(error).startswith("layer conv0: ")
        assert not gate.keys() <= {"add_beta_first", "enable"}
    else:
        assert gate.keys() <= {"add_beta_first", "enable"}
        assert_same_outputs(model, native, (28, 28, 1))


def test_ties_at_the_threshold_are_switched_off_as_keras_does():
    model = gated_model("models/gate/cifarnet_slim.yaml", (28, 28, 1), 0.5)
    layer = model.get_layer("conv1")
    layer.gate_kernel.assign(np.zeros(layer.gate_kernel.shape, np.float32))  # every gamma equal: all tied
    for engine in ("xla", "native"):
        assert_same_outputs(model, SparseGatedModel(model, engine=engine), (28, 28, 1))


def test_a_functional_model_with_a_branch_and_a_constant_fill():
    """A hand-written graph: a gate, then a batch norm with an offset (absent channels become constants), a 1×1
    convolution that must add those constants, a concatenation and a dense head."""
    inputs = keras.Input((16, 16, 3))
    gated = GatedConv2D(12, 3, density=0.5, name="gate")(inputs)
    norm = keras.layers.BatchNormalization(name="norm")(gated)
    wide = keras.layers.Conv2D(8, 1, name="pointwise")(keras.layers.Activation("sigmoid")(norm))
    side = keras.layers.Conv2D(8, 3, padding="same", name="side")(gated)
    joined = keras.layers.Concatenate()([wide, side])
    pooled = keras.layers.GlobalAveragePooling2D()(joined)
    model = keras.Model(inputs, keras.layers.Dense(5)(pooled))
    randomize_statistics(model)
    assert_same_outputs(model, SparseGatedModel(model), (16, 16, 3))


def test_a_dense_model_runs_folded_and_compiled():
    model = build_model(_dense("models/resnet18.yaml"), (64, 64, 3))
    randomize_statistics(model)
    program = InferenceProgram(model, engine="xla")
    assert not any(type(step).__name__ == "BatchNormStep" for step in program.steps)  # all folded
    assert_same_outputs(model, program, (64, 64, 3))
    native = InferenceProgram(model, engine="native")
    # Each ReLU layer after a folded convolution is that convolution's activation in the native program.
    kinds = [spec["kind"] for spec in native.native.specs]
    assert "relu" not in kinds[:4] and kinds.count("identity") >= 4
    assert_same_outputs(model, native, (64, 64, 3))


def _dense(path):
    cfg = Config()
    cfg.load(path)
    cfg.set("dataset", {"name": "x", "task": {"num_classes": 10}})
    return cfg.get("model")


def test_what_it_cannot_run_is_refused_with_the_reason():
    with pytest.raises(UnsupportedModel, match="no gated"):
        SparseGatedModel(build_model(_dense("models/lenet5.yaml"), (28, 28, 1)))
    with pytest.raises(UnsupportedModel, match="conv0: sparse execution needs norm='batch'"):
        SparseGatedModel(gated_model("models/gate/cifarnet_slim.yaml", (28, 28, 1), 0.5, norm="channel"))

    class Subclassed(keras.Model):
        def call(self, x):
            return x
    with pytest.raises(UnsupportedModel, match="functional or Sequential"):
        InferenceProgram(Subclassed())


def test_it_takes_one_image_at_a_time():
    sparse = SparseGatedModel(gated_model("models/gate/lenet5.yaml", (28, 28, 1), 0.5))
    with pytest.raises(ValueError, match="one image at a time"):
        sparse(np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match=r"takes images of shape \(28, 28, 1\)"):
        sparse(np.zeros((1, 32, 32, 1), np.float32))


def test_bench_times_every_way_to_run_a_gated_model_side_by_side(tmp_path, monkeypatch, capsys):
    import yaml
    from mayo_lite.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["models/gate/cifarnet_slim.yaml", "datasets/synthetic.yaml", "_gate.density=0.5",
                 "system.checkpoint.load=null", "system.bench.images=3", "system.bench.repeats=1",
                 "system.info.plumbing=true", "system.bench.profile=true", "bench"]) == 0
    out = capsys.readouterr().out
    assert "latency of one image of cifarnet_slim_gate, 3 validation images, median of 1 passes" in out
    for label in ("dense model (Keras)", "dense, batch norm folded (XLA or native)",
                  "dense, TensorFlow Lite (XNNPACK)", "gated, every channel computed (Keras)",
                  "gated, active channels only (sparse)", "static network of the gates' width",
                  "static network, TensorFlow Lite"):
        assert label in out
    record = yaml.safe_load((tmp_path / "bench.yaml").read_text())
    for key in ("dense_ms", "dense_folded_ms", "gated_ms", "sparse_ms", "tflite_ms", "static_ms",
                "static_tflite_ms", "speedup", "speedup_vs_folded", "speedup_vs_tflite", "sparse_over_static"):
        assert record[key] > 0, key
    assert record["speedup"] == pytest.approx(record["dense_ms"] / record["sparse_ms"])
    assert record["speedup_vs_folded"] == pytest.approx(record["dense_folded_ms"] / record["sparse_ms"])
    assert record["speedup_vs_tflite"] == pytest.approx(record["tflite_ms"] / record["sparse_ms"])
    assert record["sparse_over_static"] == pytest.approx(record["sparse_ms"] / record["static_ms"])
    assert record["engine"] in ("native", "xla")
    assert max(record["output_differences"].values()) < 1e-4
    # The profile: a row per layer of the native program, the gated ones stage by stage, and a total.
    profile = out.split("per-layer time on the native runtime")[1].splitlines()[1:]
    assert profile[0].split() == ["layer", "mode", "gate", "patches", "gather", "multiply", "scale", "total",
                                  "dense", "×dense"]
    rows = {line.split()[0]: line.split() for line in profile[1:] if line.startswith("  ")}
    for layer in ("conv0", "conv1", "conv7"):
        cells = rows[layer]
        assert cells[1] in ("gather", "every")
        stages = [float(value) for value in cells[2:7]]
        # Six numbers rounded to 3 decimals: the total and the sum of five stages differ by up to 6 half-units.
        assert float(cells[7]) == pytest.approx(sum(stages), abs=0.0031)
    assert rows["all"][1] == "layers"


def test_bench_on_a_model_without_gates_says_why_there_is_no_sparse_row(tmp_path, monkeypatch, capsys):
    from mayo_lite.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["models/lenet5.yaml", "datasets/synthetic.yaml", "system.checkpoint.load=null",
                 "system.bench.images=2", "system.bench.repeats=1", "system.bench.tflite=false", "bench"]) == 0
    out = capsys.readouterr().out
    assert "sparse" not in out.split("no sparse row")[0]
    assert "no sparse row: lenet5 has no gated (FBS) convolutions" in out


def test_bench_refuses_a_gate_the_sparse_path_cannot_run_in_one_line(tmp_path, monkeypatch, capsys):
    from mayo_lite.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["models/gate/cifarnet_slim.yaml", "datasets/synthetic.yaml", "_gate.norm=channel",
                 "system.checkpoint.load=null", "bench"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("my: error: ") and line.endswith(
        "configs/models/gate/cifarnet.yaml: model.layers.conv0.gate_params.norm: bench runs gated models "
        "sparsely, which needs norm: batch (moving statistics); norm: channel normalises each image by its own "
        "moments")


@pytest.mark.parametrize("gather_cost", [0, 10 ** 9])  # every small layer gathering, or computing every channel
@pytest.mark.parametrize("path, shape, threshold", [
    ("models/gate/resnet18.yaml", (64, 64, 3), "online"),
    ("models/gate/mobilenet.yaml", (64, 64, 3), "online"),
    ("models/gate/cifarnet.yaml", (32, 32, 3), "local"),
])
def test_small_layers_give_the_keras_outputs_gathered_or_whole(path, shape, threshold, gather_cost, monkeypatch):
    from mayo_lite.sparse import gated_step
    monkeypatch.setattr(gated_step, "GATHER_COST", gather_cost)
    model = gated_model(path, shape, 0.5, threshold)
    assert_same_outputs(model, SparseGatedModel(model, engine="xla"), shape)
