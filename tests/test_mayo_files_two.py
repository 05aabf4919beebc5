"""Mayo's own files, round two: what a Mayo user's gated models, dataset files and other files meet here — Mayo-style
YAML the tests write themselves, one behaviour each."""

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Mayo's datasets/mnist.yaml: no `source` (Mayo read TFRecords from its own folders), a task type.
MAYO_MNIST = """
dataset:
    name: mnist
    task:
        type: mayo.task.image.Classify
        num_classes: 10
        background_class: {has: false}
        shape: {height: 28, width: 28, channels: 1}
        preprocess: {train: []}
    path: {train: mnist/train.tfrecord, validate: mnist/test.tfrecord, labels: mnist/labels.txt}
    num_examples_per_epoch: {train: 60000, validate: 10000}
"""
# Mayo's datasets/voc.yaml, shortened: the detection task of its YOLO models.
MAYO_VOC = MAYO_MNIST.replace("mayo.task.image.Classify", "mayo.task.image.YOLOv2").replace("name: mnist", "name: voc")
# Mayo's models/plot/lenet5.yaml: settings of Mayo's plotting command.
MAYO_PLOT = "visualize: {model_name: lenet5, layers: [conv0, conv1], image_cnt: 100}\n"


def test_a_gated_model_on_a_dataset_without_source_counts_nominal_densities(workspace, capsys):
    run = workspace({"mnist.yaml": MAYO_MNIST})
    assert run(str(ROOT / "configs/models/gate/lenet5.yaml"), "mnist.yaml", "_gate.density=0.5", "info") == 0
    out = capsys.readouterr().out
    assert "nominal gate densities: the dataset names no source to measure them on" in out
    assert "model lenet5_gate on mnist" in out


def test_mayos_detection_task_is_refused_in_one_line_naming_it(workspace, capsys):
    run = workspace({"voc.yaml": MAYO_VOC})
    assert run(str(ROOT / "configs/models/lenet5.yaml"), "voc.yaml", "info") == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "voc.yaml: dataset.task.type: mayo.task.image.YOLOv2" in lines[0]
    assert "detection" in lines[0] and "out of scope" in lines[0] and captured.out == ""


def test_a_plot_file_is_not_a_model_and_says_so(workspace, capsys):
    run = workspace({"plot.yaml": MAYO_PLOT, "mnist.yaml": MAYO_MNIST})
    assert run("plot.yaml", "mnist.yaml", "info") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "plot.yaml: visualize: Mayo's plotting settings, not a model" in lines[0]
    assert run("mnist.yaml", "info") == 2
    assert "no model: no file given defines `model`" in capsys.readouterr().err


# Mayo's models/hadamard/cifarnet.yaml, small: a module of a depthwise convolution (slim's separable convolution
# without num_outputs) and a Hadamard layer, an instance key the module ignores, `num_outputs: num_classes`.
HADAMARD = """
model:
    name: hadamard_small
    layers:
        _conv: &conv
            type: convolution
            kernel_size: [3, 3]
            normalizer_fn: tensorflow.contrib.slim.batch_norm
            normalizer_params: {center: true, scale: true, decay: 0.9997, epsilon: 0.001}
            activation_fn: tensorflow.nn.relu6
        _dhconv: &dhconv
            type: module
            kwargs: {stride: null, num_outputs: null}
            layers:
                depthwise:
                    <<: *conv
                    type: depthwise_separable_convolution
                    stride: ^(stride)
                    depth_multiplier: 1
                    depthwise_regularizer: {type: tensorflow.contrib.layers.l2_regularizer, scale: 0.00004}
                hadamard: {type: hadamard, use_scales: false}
            graph: {from: input, with: [depthwise, hadamard], to: output}
        conv0: {<<: *conv, num_outputs: 16}
        conv1: {<<: *dhconv, kernel_size: 3, stride: 1, num_outputs: 16}
        conv2: {<<: *conv, type: hadamard_convolution, num_outputs: 32, stride: 2}
        pool: {type: reduce_mean, axis: [1, 2], keep_dims: true}
        fc: {type: convolution, kernel_size: 1, num_outputs: num_classes, activation_fn: null, normalizer_fn: null}
        logits: {type: squeeze, axis: [1, 2]}
    graph: {from: input, with: [conv0, conv1, conv2, pool, fc, logits], to: output}
"""


def sylvester(channels):
    matrix = np.ones((1, 1))
    while len(matrix) < channels:
        matrix = np.block([[matrix, matrix], [matrix, -matrix]])
    return matrix


def test_the_hadamard_layer_is_the_sylvester_matrix_product():
    from mayo_lite.layers import Hadamard
    values = np.random.default_rng(0).normal(size=(2, 3, 3, 32)).astype(np.float32)
    np.testing.assert_allclose(Hadamard()(values), values @ sylvester(32), atol=1e-4)
    # Mayo's `variable_scales`: per-channel scales first, trained, started near 1/sqrt(C).
    scaled = Hadamard(variable_scales=True)
    outputs = scaled(values)
    scales = scaled.scales.numpy()
    assert np.allclose(scales, 1 / np.sqrt(32), atol=0.01)
    np.testing.assert_allclose(outputs, (values * scales) @ sylvester(32), atol=1e-4)


def test_a_mayo_hadamard_model_trains_and_counts_its_macs(workspace, capsys):
    from tests.synthetic import synthetic_dataset
    run = workspace({"data.yaml": synthetic_dataset(channels=3), "model.yaml": HADAMARD})
    assert run("data.yaml", "model.yaml", str(ROOT / "configs/trainers/lenet5.yaml"), "system.max_epochs=1",
               "system.checkpoint.load=null", "train", "info") == 0
    captured = capsys.readouterr()
    assert "conv1: key kernel_size ignored: not a keyword argument of this module" in captured.err
    # MACs by hand, 8×8 input: conv0 3·3·3·16 per pixel, conv1's depthwise 3·3·16, conv2 grouped (16 groups of 2
    # outputs) at stride 2 on 4×4: 3·3·1·32, the Hadamard transforms none (additions only), fc 32·4.
    expected = 64 * 9 * 3 * 16 + 64 * 9 * 16 + 16 * 9 * 32 + 32 * 4
    assert f"{expected:,} MACs" in captured.out
    # `bench` times it: the folded program has no grouped convolution, which it says in one line; the rest runs.
    assert run("data.yaml", "model.yaml", "system.bench.images=2", "system.bench.repeats=1", "bench") == 0
    captured = capsys.readouterr()
    assert "bench: no folded dense row" in captured.err and "grouped convolutions" in captured.err
    assert "dense, TensorFlow Lite (XNNPACK)" in captured.out


# Mayo's models/gate/input/lenet5.yaml, small: local gating after each convolution, older Mayo's layout of the
# dataset keys (`dataset.preprocess`, `dataset.background_class`), Mayo's own batch norm.
INPUT_GATED = """
dataset:
    background_class: {use: false}
    preprocess:
        shape: {height: 8, width: 8, channels: 3}
        validate: null
model:
    name: input_gated
    layers:
        conv0: &conv
            type: convolution
            kernel_size: 3
            num_outputs: 8
            normalizer_fn: mayo.objects.normalize.custom_batch_norm
            normalizer_params: {center: true, scale: true, decay: 0.9997, epsilon: 0.001}
        gate0: &gate {type: local_gating, policy: {type: threshold_based, alpha: 0.35}}
        conv1: {<<: *conv, num_outputs: 16}
        gate1: *gate
        pool: {type: reduce_mean, axis: [1, 2]}
        logits: {type: fully_connected, num_outputs: num_classes, activation_fn: null}
    graph: {from: input, with: [conv0, gate0, conv1, gate1, pool, logits], to: output}
"""


def test_local_gating_zeroes_the_channels_of_small_mean_magnitude():
    from mayo_lite.layers import LocalGating
    values = np.random.default_rng(1).normal(0.2, 1.0, size=(3, 5, 5, 16)).astype(np.float32)
    means = np.abs(values.mean(axis=(1, 2), keepdims=True))
    expected = values * (means > 0.2)  # NumPy reference of Mayo's threshold_based policy
    np.testing.assert_allclose(LocalGating(0.2)(values), expected, atol=1e-6)
    assert 0 < (means > 0.2).mean() < 1  # the test keeps some channels and drops others


def test_a_mayo_input_gated_model_trains_with_the_older_dataset_layout(workspace, capsys):
    from tests.synthetic import synthetic_dataset
    run = workspace({"data.yaml": synthetic_dataset(channels=3), "model.yaml": INPUT_GATED})
    assert run("data.yaml", "model.yaml", str(ROOT / "configs/trainers/lenet5.yaml"), "system.max_epochs=1",
               "system.checkpoint.load=null", "train", "eval", "info") == 0
    out = capsys.readouterr().out
    assert "input 8×8×3: as the model's dataset.task.preprocess.shape sets it" in out  # the older place, read
    assert "input gating (gate0, gate1): switches channels off per image" in out
    assert f"{64 * 9 * 3 * 8 + 64 * 9 * 8 * 16 + 16 * 4:,} MACs" in out
    assert run("data.yaml", "model.yaml", "system.bench.images=2", "system.bench.repeats=1", "bench") == 0
    out = capsys.readouterr().out
    assert "folded dense vs Keras dense: outputs differ by at most" in out  # its gates folded and checked


def test_mayos_gate_spellings_are_read(workspace, capsys):
    from tests.synthetic import synthetic_dataset
    gated = """
model:
    name: gated
    layers:
        conv0:
            type: gated_convolution
            kernel_size: 3
            num_outputs: 8
            enable: false
            normalizer_fn: tensorflow.contrib.slim.batch_norm
            normalizer_params: {scale: true}
            gate_params: {policy: parametric_gamma, density: 0.5, weight: 0.0001}
        pool: {type: reduce_mean, axis: [1, 2]}
        logits: {type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}
    graph: {from: input, with: [conv0, pool, logits], to: output}
"""
    run = workspace({"data.yaml": synthetic_dataset(channels=3), "gated.yaml": gated,
                     "enabled.yaml": gated.replace("enable: false", "enable: true")})
    assert run("data.yaml", "gated.yaml", "system.checkpoint.load=null", "info") == 0
    captured = capsys.readouterr()
    assert "gate_params.weight: older Mayo's gate-loss weight" in captured.err
    # `enable: false` on the layer switched the gate off: every channel computed, the predictor's MACs on top.
    reduction = re.search(r"effective [\d,]+ MACs \(.*?\), ([\d.]+)× fewer", captured.out)
    assert float(reduction.group(1)) < 1
    assert run("data.yaml", "enabled.yaml", "system.checkpoint.load=null", "info") == 0
    reduction = re.search(r"effective [\d,]+ MACs \(.*?\), ([\d.]+)× fewer", capsys.readouterr().out)
    assert float(reduction.group(1)) > 1.5  # parametric_gamma read as the parametric policy, density 0.5
