"""Models built from YAML: layer types, modules, graphs, slim defaults, and their cost against hand counts."""

import tempfile
from pathlib import Path

import numpy as np
import pytest

import keras

from mayo_lite.config import Config
from mayo_lite.errors import ConfigError
from mayo_lite.models.estimate import layer_table, totals
from mayo_lite.net import LAYER_TYPES, build_model


def model_from(text, num_classes=10, shape=(32, 32, 3)):
    """Builds a model from a YAML snippet whose `model` section may reference dataset.task.num_classes."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.yaml"
        path.write_text(text)
        cfg = Config()
        cfg.load(str(path))
    cfg.set("dataset.task.num_classes", num_classes)
    return build_model(cfg.get("model"), shape)


def bundled(model_file, dataset_shape, num_classes=10):
    cfg = Config()
    cfg.load(model_file)
    cfg.set("dataset.task.num_classes", num_classes)
    return build_model(cfg.get("model"), dataset_shape)


def conv_macs(height, width, kernel, channels_in, channels_out):
    return height * width * kernel * kernel * channels_in * channels_out


def test_cifarnet_costs_the_published_174301824_macs_on_cifar_shapes():
    model = bundled("models/cifarnet.yaml", (32, 32, 3))
    # Hand count: conv0 is a valid 3×3 convolution (30×30), stride 2 at conv2 (15×15) and conv5 (8×8).
    expected = (conv_macs(30, 30, 3, 3, 64) + conv_macs(30, 30, 3, 64, 64) + conv_macs(15, 15, 3, 64, 128)
                + 2 * conv_macs(15, 15, 3, 128, 128) + conv_macs(8, 8, 3, 128, 192)
                + 2 * conv_macs(8, 8, 3, 192, 192) + 192 * 10)
    assert expected == 174_301_824
    rows = layer_table(model)
    assert totals(rows)["macs"] == expected
    assert totals(rows)["params"] == model.count_params()
    assert [row["name"] for row in rows][:3] == ["conv0", "conv1", "conv2"]
    assert model.output.shape[1:] == (10,)


def test_cifarnet_takes_fashion_mnist_shape():
    model = bundled("models/cifarnet.yaml", (28, 28, 1))
    assert model.output.shape[1:] == (10,)
    assert model(np.zeros((2, 28, 28, 1), "float32")).shape == (2, 10)


def test_lenet5_macs_match_hand_count():
    model = bundled("models/lenet5.yaml", (28, 28, 1))
    expected = conv_macs(24, 24, 5, 1, 20) + conv_macs(8, 8, 5, 20, 50) + 800 * 500 + 500 * 10
    assert totals(layer_table(model))["macs"] == expected == 2_293_000


def test_slim_cifarnet_is_cifarnet_at_quarter_width():
    model = bundled("models/cifarnet_slim.yaml", (32, 32, 3))
    assert [model.get_layer(f"conv{i}").filters for i in range(8)] == [16, 16, 32, 32, 32, 48, 48, 48]
    expected = (conv_macs(30, 30, 3, 3, 16) + conv_macs(30, 30, 3, 16, 16) + conv_macs(15, 15, 3, 16, 32)
                + 2 * conv_macs(15, 15, 3, 32, 32) + conv_macs(8, 8, 3, 32, 48)
                + 2 * conv_macs(8, 8, 3, 48, 48) + 48 * 10)
    assert totals(layer_table(model))["macs"] == expected


def test_tf_slim_cifarnet_builds_with_lrn_and_fully_connected_layers():
    model = bundled("models/tfslim_cifarnet.yaml", (32, 32, 3))
    names = [layer.name for layer in model.layers]
    assert "norm1" in names and "fc3" in names
    assert model.output.shape[1:] == (10,)


def test_slim_defaults_relu_and_no_bias_under_a_normalizer():
    model = model_from("""
model:
  name: m
  layers:
    a: {type: convolution, kernel_size: 3, num_outputs: 4, normalizer_fn: batch_norm}
    b: {type: convolution, kernel_size: 3, num_outputs: 4}
  graph: {from: input, with: [a, b], to: output}
""")
    layers = {layer.name: layer for layer in model.layers}
    assert layers["a"].use_bias is False and layers["b"].use_bias is True
    assert isinstance(layers["a.bn"], keras.layers.BatchNormalization)
    assert layers["a.act"].activation.__name__ == "relu" and layers["b.act"].activation.__name__ == "relu"


def test_explicit_integer_padding_equals_numpy_convolution():
    model = model_from("""
model:
  name: m
  layers:
    conv: {type: convolution, kernel_size: 3, num_outputs: 2, padding: 1, activation_fn: null}
  graph: {from: input, with: conv, to: output}
""", shape=(5, 5, 1))
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 5, 5, 1)).astype("float32")
    kernel, bias = model.get_layer("conv").get_weights()
    padded = np.pad(image[0, :, :, 0], 1)
    expected = np.zeros((5, 5, 2))
    for i in range(5):
        for j in range(5):
            for c in range(2):
                expected[i, j, c] = np.sum(padded[i:i + 3, j:j + 3] * kernel[:, :, 0, c]) + bias[c]
    np.testing.assert_allclose(model(image)[0], expected, atol=1e-5)


MODULE = """
model:
  name: m
  layers:
    _block: &block
      type: module
      kwargs: {stride: 1, depth: null, shortcut: identity}
      layers:
        conv1: {type: convolution, kernel_size: 3, stride: ^(stride), num_outputs: ^(depth)}
        conv2: {type: convolution, kernel_size: 3, num_outputs: !arith ^(depth) * 2, activation_fn: null}
        identity: {type: identity}
        downsample: {type: convolution, kernel_size: 1, stride: ^(stride), num_outputs: !arith ^(depth) * 2}
        add: {type: add}
      graph:
        - {from: input, with: [conv1, conv2], to: residual}
        - {from: input, with: ^(shortcut), to: shortcut}
        - {from: [residual, shortcut], with: add, to: output}
    b1: {<<: *block, depth: 4, shortcut: downsample}
    b2: {<<: *block, stride: 2, depth: 4, shortcut: downsample}
    pool: {type: reduce_mean, axis: [1, 2]}
    logits: {type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}
  graph:
    - {from: input, with: [b1, b2], to: features}
    - {from: features, with: [pool, logits], to: output}
"""


def test_modules_take_keyword_arguments_and_are_flattened():
    model = model_from(MODULE, shape=(8, 8, 3))
    layers = {layer.name: layer for layer in model.layers}
    assert layers["b2.conv1"].strides == (2, 2) and layers["b1.conv1"].strides == (1, 1)
    assert layers["b1.conv2"].filters == 8
    assert layers["b2.add"].output.shape[1:] == (4, 4, 8)
    assert model.output.shape[1:] == (10,)


@pytest.mark.parametrize("kind", sorted(LAYER_TYPES))
def test_every_layer_type_builds(kind):
    specs = {
        "convolution": {"kernel_size": 3, "num_outputs": 4},
        "gated_convolution": {"kernel_size": 3, "num_outputs": 4, "gate_params": {"density": 0.5},
                              "normalizer_fn": "batch_norm"},
        "depthwise_convolution": {"kernel_size": 3},
        "depthwise_separable_convolution": {"kernel_size": 3, "num_outputs": 4},
        "fully_connected": {"num_outputs": 4},
        "max_pool": {"kernel_size": 2},
        "average_pool": {"kernel_size": 2},
        "dropout": {"keep_prob": 0.5},
        "squeeze": {"axis": [3]},
        "reduce_mean": {"axis": [1, 2]},
        "pad": {"paddings": [[0, 0], [1, 1], [1, 1], [0, 0]]},
        "concat": {"axis": -1},
        "activation": {"mode": "relu6"},
        "local_response_normalization": {"depth_radius": 2},
        "crop": {"cropping": 1},
        "space_to_depth": {"block_size": 2},
        "hadamard_convolution": {"kernel_size": 3, "num_outputs": 8},
        "local_gating": {"policy": {"type": "threshold_based", "alpha": 0.1}},
    }
    spec = {"type": kind, **specs.get(kind, {})}
    # The Hadamard transform needs a power of 2 channels.
    shape = (4, 4, 1) if kind == "squeeze" else (4, 4, 4) if kind.startswith("hadamard") else (4, 4, 3)
    edges = [{"from": "input", "with": "x", "to": "output"}]
    if kind in ("add", "concat", "mul"):
        edges = [{"from": "input", "with": "a", "to": "t"}, {"from": ["input", "t"], "with": "x", "to": "output"}]
    cfg = Config()
    cfg.set("model", {"name": "m", "layers": {"x": spec, "a": {"type": "identity"}}, "graph": edges})
    model = build_model(cfg.get("model"), shape)
    assert model(np.ones((2,) + shape, "float32")).shape[0] == 2


@pytest.mark.parametrize("layers, graph, message", [
    ({"x": {"type": "convolutoin", "kernel_size": 3, "num_outputs": 2}}, {"from": "input", "with": "x", "to": "output"},
     "did you mean convolution"),
    ({"x": {"type": "convolution", "kernel_size": 3, "num_output": 2}}, {"from": "input", "with": "x", "to": "output"},
     "num_output (did you mean num_outputs?)"),
    ({"x": {"type": "convolution", "kernel_size": 3, "num_outputs": 2, "overrider": {"type": "mayo.override.X"}}},
     {"from": "input", "with": "x", "to": "output"}, "use the `prune:` section"),
    ({"x": {"type": "identity"}}, {"from": "input", "with": "x", "to": "middle"}, "never reaches `output`"),
    ({"x": {"type": "identity"}}, {"from": "nowhere", "with": "x", "to": "output"}, "'nowhere'"),
    ({"x": {"type": "identity"}}, {"from": "input", "with": "y", "to": "output"}, "'y' is not a layer"),
    ({"x": {"type": "dropout", "keep_prob": 1.5}}, {"from": "input", "with": "x", "to": "output"}, "keep_prob"),
    ({"x": {"type": "convolution", "kernel_size": 0, "num_outputs": 2}}, {"from": "input", "with": "x", "to": "output"},
     "kernel_size"),
    ({"x": {"type": "convolution", "kernel_size": 3, "num_outputs": 2, "activation_fn": "relu7"}},
     {"from": "input", "with": "x", "to": "output"}, "did you mean relu"),
])
def test_bad_layer_specs_are_config_errors_naming_the_layer(layers, graph, message):
    with pytest.raises(ConfigError) as error:
        build_model({"name": "m", "layers": layers, "graph": graph}, (8, 8, 3))
    assert message in str(error.value)
    assert "\n" not in str(error.value)
