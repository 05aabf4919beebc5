"""A Mayo user's own files run: Mayo-style YAML the tests write themselves (not copies of Mayo's), one behaviour each
— the input-shape rule, background-class labels, dead branches, pool kernels, nested and multi-input modules, the
keys Mayo passes to slim, the reference language, and errors that blame the right file."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from mayo_lite.config import Config
from mayo_lite.data import make_dataset
from mayo_lite.data.description import num_classes
from mayo_lite.data.preprocess import fit_to_shape
from mayo_lite.net import build_model
from tests.synthetic import synthetic_dataset
from tests.test_imagenet_data import slim_record

LENET = """
model:
  name: lenet5_mayo
  layers:
    conv0: {type: convolution, kernel_size: 5, padding: valid, num_outputs: 20}
    pool0: {type: max_pool, kernel_size: 2}
    conv1: {type: convolution, kernel_size: 5, padding: valid, num_outputs: 50}
    pool1: {type: max_pool, kernel_size: 2}
    flatten: {type: flatten}
    fc1: {type: fully_connected, num_outputs: 500}
    logits: {type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}
  graph: {from: input, with: [conv0, pool0, conv1, pool1, flatten, fc1, logits], to: output}
dataset:
  task:
    preprocess:
      shape: {height: 28, width: 28, channels: 1}
train: {learning_rate: 0.01, optimizer: {type: sgd}}
system: {batch_size_per_gpu: 16, max_epochs: 1, seed: 0}
"""
# A CIFAR-like dataset (32×32 colour), as Mayo's cifar10.yaml describes it, before the model's file.
CIFAR_LIKE = synthetic_dataset(channels=3, train=32, validate=32).replace("height: 8, width: 8", "height: 32, width: 32")


@pytest.fixture
def run(workspace):
    return workspace({"cifar_like.yaml": CIFAR_LIKE, "lenet5.yaml": LENET})


# ---------------------------------------------------------------------------------------------------------------
# 1. The input shape

def test_a_mayo_model_sets_the_network_input_and_images_are_fitted_to_it(run, capsys):
    assert run("cifar_like.yaml", "lenet5.yaml", "system.checkpoint.load=null", "info", "train", "eval") == 0
    out = capsys.readouterr().out
    # Mayo's LeNet-5 at 28×28×1 (2,293,000 MACs with 10 classes; 2,290,000 with these 4), not 4.3 M at 32×32×3.
    assert "2,290,000 MACs" in out
    assert "input 28×28×1: as the model's dataset.task.preprocess.shape sets it" in out
    assert "top1: " in out


def test_without_a_preprocess_shape_the_network_takes_the_dataset_shape(run, capsys):
    Path("plain.yaml").write_text(LENET.replace("    preprocess:\n      shape: {height: 28, width: 28, channels: 1}\n",
                                                "    preprocess: {}\n"))
    assert run("cifar_like.yaml", "plain.yaml", "system.checkpoint.load=null", "info") == 0
    out = capsys.readouterr().out
    assert "4,303,000 MACs" in out and "input 32×32×3: the dataset's own shape" in out


def test_fitting_converts_colour_to_grey_and_crops_to_the_aspect_before_resizing():
    image = np.random.default_rng(0).random((40, 60, 3)).astype(np.float32)
    fitted = fit_to_shape(tf.constant(image), (28, 28, 1)).numpy()
    # Reference: luminance, then the central 40×40 window (the target is square), then bilinear to 28×28.
    grey = tf.image.rgb_to_grayscale(image)
    expected = tf.image.resize(grey[:, 10:50], [28, 28]).numpy()
    np.testing.assert_allclose(fitted, expected, atol=1e-6)
    assert fit_to_shape(tf.constant(image[..., :1]), (40, 60, 3)).shape == (40, 60, 3)  # grey repeated


# ---------------------------------------------------------------------------------------------------------------
# 2. Labels

def write_records(path, labels):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for label in labels:
            writer.write(slim_record(np.zeros((8, 8, 3), np.uint8), label, []))


def record_dataset(directory, background):
    return {"name": "records", "source": {"type": "tfrecord"},
            "path": {"train": str(directory / "shard-*"), "validate": str(directory / "shard-*")},
            "task": {"num_classes": 10, "background_class": background, "shape": {"channels": 3},
                     "preprocess": {"shape": {"height": 8, "width": 8}}},
            "num_examples_per_epoch": {"train": 4, "validate": 4}}


@pytest.mark.parametrize("background, stored, expected, outputs", [
    ({}, [0, 3, 9, 5], [0, 3, 9, 5], 10),                           # Mayo's CIFAR records: 0-based, no background
    ({"has": True}, [1, 4, 9, 6], [0, 3, 8, 5], 9),                 # Mayo's imagenet.yaml: has, not used
    ({"has": True, "use": True}, [1, 4, 9, 6], [1, 4, 9, 6], 10),   # this project's imagenet.yaml
    ({"use": True}, [0, 3, 9, 5], [1, 4, 10, 6], 11),               # a background output added
])
def test_labels_follow_mayos_background_class_rule(tmp_path, background, stored, expected, outputs):
    write_records(tmp_path / "shard-0", stored)
    dataset = record_dataset(tmp_path, background)
    labels = np.concatenate([labels for _, labels in make_dataset(dataset, "validate", 4, False)])
    assert labels.tolist() == expected
    assert num_classes(dataset) == outputs


def test_a_label_outside_the_outputs_is_a_data_error_naming_the_file(run, capsys, tmp_path):
    write_records(tmp_path / "shard-0", [1, 2, 10, 3] * 4)  # 1-based records without `has`
    records = record_dataset(tmp_path, {})
    Path("records.yaml").write_text(f"dataset: {records}\n".replace("'", '"')
                                    .replace('"num_examples_per_epoch": {"train": 4, "validate": 4}',
                                             '"num_examples_per_epoch": {"train": 16, "validate": 16}'))
    Path("small.yaml").write_text(LENET.replace("height: 28, width: 28, channels: 1", "height: 28, width: 28, "
                                                                                       "channels: 3"))
    assert run("records.yaml", "small.yaml", "system.checkpoint.load=null", "train") == 2
    error = capsys.readouterr().err
    assert "label 10 with 10 outputs" in error and "background_class {has, use}" in error
    assert "records.yaml" in error and "Traceback" not in error


# ---------------------------------------------------------------------------------------------------------------
# 3. Graphs

def build(model_yaml, shape=(16, 16, 3)):
    cfg = Config()
    Path("m.yaml").write_text(model_yaml)
    cfg.load("m.yaml")
    return build_model(cfg.get("model"), shape, origin=cfg.origin)


def test_a_branch_that_never_reaches_the_output_is_not_built(workspace):
    workspace({})
    model = build("""
model:
  name: dead
  layers:
    conv: {type: convolution, kernel_size: 3, num_outputs: 4}
    side: {type: convolution, kernel_size: 7, num_outputs: 999, padding: valid, stride: 9}
    pool: {type: reduce_mean, axis: [1, 2]}
  graph:
    - {from: input, with: conv, to: x}
    - {from: x, with: side, to: unused}
    - {from: x, with: pool, to: output}
""")
    assert "side" not in [layer.name for layer in model.layers]


def test_pool_kernels_are_clamped_to_their_input_and_global_pools_the_whole_map(workspace):
    workspace({})
    model = build("""
model:
  name: pools
  layers:
    big: {type: max_pool, kernel_size: 40, stride: 1}
    whole: {type: average_pool, kernel_size: global, stride: 1}
  graph: {from: input, with: [big, whole], to: output}
""", shape=(6, 5, 3))
    assert model.get_layer("big").pool_size == (6, 5) and model.output.shape[1:] == (1, 1, 3)
    images = np.random.default_rng(0).random((2, 6, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(model(images)[:, 0, 0], images.max(axis=(1, 2)), atol=1e-6)


SE_BLOCK = """
model:
  name: se
  layers:
    _se: &se
      type: module
      kwargs: {ratio: null}
      layers:
        pool: {type: reduce_mean, axis: [1, 2], keepdims: true}
        squeeze: {type: convolution, kernel_size: 1, num_outputs: ^(ratio)}
        excite: {type: convolution, kernel_size: 1, num_outputs: 8, activation_fn: tensorflow.nn.sigmoid}
        scale: {type: mul}
      graph:
        - {from: input, with: [pool, squeeze, excite], to: weights}
        - {from: [input, weights], with: scale, to: output}
    _block: &block
      type: module
      kwargs: {depth: null}
      layers:
        conv: {type: convolution, kernel_size: 3, num_outputs: ^(depth)}
        se: {<<: *se, ratio: !arith ^(depth) // 4}
      graph: {from: input, with: [conv, se], to: output}
    b1: {<<: *block, depth: 8}
  graph: {from: input, with: b1, to: output}
"""


def test_an_inner_module_reads_its_own_arguments(workspace):
    workspace({})
    model = build(SE_BLOCK)
    layers = {layer.name: layer for layer in model.layers}
    assert layers["b1.se.squeeze"].filters == 2  # the inner ratio, from the outer depth 8 // 4
    assert model.output.shape[1:] == (16, 16, 8)


def test_a_module_takes_several_inputs(workspace):
    workspace({})
    model = build("""
model:
  name: two
  layers:
    a: {type: convolution, kernel_size: 1, num_outputs: 4}
    b: {type: convolution, kernel_size: 1, num_outputs: 4}
    join:
      type: module
      inputs: [left, right]
      layers: {add: {type: add}, conv: {type: convolution, kernel_size: 1, num_outputs: 2}}
      graph: {from: [left, right], with: [add, conv], to: output}
  graph:
    - {from: input, with: a, to: x}
    - {from: input, with: b, to: y}
    - {from: [x, y], with: join, to: output}
""")
    assert model.output.shape[1:] == (16, 16, 2)


# ---------------------------------------------------------------------------------------------------------------
# 4. Keys Mayo passes to slim, and its layer types and preprocessing spellings

def test_slim_keys_mayo_files_pass_are_honoured(workspace):
    workspace({})
    model = build("""
model:
  name: keys
  layers:
    conv: {type: convolution, kernel_size: 3, num_outputs: 8, biases_initializer: {type: tensorflow.zeros_initializer}}
    gate: {type: gated_convolution, kernel_size: 3, num_outputs: 8, gate_params: {density: 0.5},
           normalizer_fn: tensorflow.contrib.slim.batch_norm, normalizer_params: {scale: true},
           biases_initializer: {type: tensorflow.zeros_initializer}}
    dw: {type: depthwise_convolution, kernel_size: 3,
         depthwise_regularizer: {type: tensorflow.contrib.layers.l2_regularizer, scale: 0.1}}
    bn: {type: batch_normalization, activation_fn: tensorflow.nn.relu, normalizer_params: {decay: 0.9}}
    crop: {type: crop, cropping: [[1, 1], [2, 2]]}
    s2d: {type: space_to_depth, block_size: 2}
  graph: {from: input, with: [conv, gate, dw, bn, crop, s2d], to: output}
""")
    layers = {layer.name: layer for layer in model.layers}
    assert layers["dw"].depthwise_regularizer is not None
    assert layers["bn"].momentum == 0.9 and layers["bn.act"].activation.__name__ == "relu"
    assert model.output.shape[1:] == (7, 6, 32)
    image = np.random.default_rng(0).random((1, 14, 12, 8)).astype(np.float32)
    np.testing.assert_allclose(layers["s2d"](image), tf.nn.space_to_depth(image, 2), atol=0)


def test_mayo_preprocessing_spellings(tmp_path):
    from mayo_lite.data.preprocess import apply_steps, compile_steps

    image = tf.constant(np.random.default_rng(0).random((20, 40, 3)).astype(np.float32))
    steps = compile_steps([{"type": "permute_channels", "order": [2, 1, 0]},
                           {"type": "subtract_channel_means", "means": [0.1, 0.2, 0.3]},
                           {"type": "resize", "height": 10, "width": 10, "fill": True}], "test")
    result = apply_steps(image, steps, (10, 10, 3), {}, tf.constant(0, tf.int64)).numpy()
    expected = tf.image.resize(image.numpy()[:, 10:30, ::-1] - np.array([0.1, 0.2, 0.3]), [10, 10]).numpy()
    np.testing.assert_allclose(result, expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# 5. The reference language

def test_nested_references_are_resolved_inside_out(tmp_path):
    (tmp_path / "a.yaml").write_text("_which: small\n_sizes: {small: 8, big: 32}\n"
                                     "width: $(_sizes.$(_which))\nlabel: \"w$(_sizes.$(_which))\"\n"
                                     "twice: !arith $(_sizes.$(_which)) * 2\n")
    cfg = Config()
    cfg.load(tmp_path / "a.yaml")
    assert (cfg.get("width"), cfg.get("label"), cfg.get("twice")) == (8, "w8", 16)
    cfg.override("_which=big")
    assert cfg.get("width") == 32


# ---------------------------------------------------------------------------------------------------------------
# 8. Errors that blame the right file

def test_an_overlay_key_is_blamed_on_the_overlay_and_keras_errors_name_layer_and_file(run, capsys):
    Path("overlay.yaml").write_text("model.layers.conv1: {kernel_size: 40}\n")
    assert run("cifar_like.yaml", "lenet5.yaml", "overlay.yaml", "system.checkpoint.load=null", "info") == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "Traceback" not in error
    assert "overlay.yaml" in error and "conv1" in error
    Path("overlay2.yaml").write_text("model.layers.conv1: {stride: -2}\n")
    assert run("cifar_like.yaml", "lenet5.yaml", "overlay2.yaml", "system.checkpoint.load=null", "info") == 2
    error = capsys.readouterr().err.strip()
    assert "overlay2.yaml" in error and "conv1" in error and "stride" in error


def test_the_network_gets_num_classes_plus_use_minus_has_outputs(run, capsys):
    # Mayo writes the adjusted count back into the config, so `$(dataset.task.num_classes)` in the model reads it.
    assert run("cifar_like.yaml", "lenet5.yaml", "system.checkpoint.load=null",
               "dataset.task.background_class={has: true}", "info", "train") == 0
    out = capsys.readouterr().out
    logits = next(line for line in out.splitlines() if line.startswith("logits"))
    assert logits.split()[1] == "3"  # 4 stored classes, class 0 the background, not used
