"""Mayo's quantization files through the runner: Mayo-style files written here in the layout of Mayo's
models/override/ (its `_global.yaml` interface, a LeNet-5 override and quantize/ files with Mayo's keys), `info`
with bit widths, training that updates and checkpoints the quantizers' state, and bad settings refused in one
line before any work."""

from pathlib import Path

import numpy as np
import pytest

from tests.synthetic import synthetic_dataset

GLOBAL = """
_overrider:
    weights: {}
    biases: {}
    activation: {}
    gradient: {}
    depthwise_weights: {}
    _overrider: &overrider
        weights: $(_overrider.weights)
        biases: $(_overrider.biases)
        activation: $(_overrider.activation)
        gradient: $(_overrider.gradient)
        depthwise_weights: $(_overrider.depthwise_weights)
    prep: {<<: *overrider}
    conv: {<<: *overrider}
    fc: {<<: *overrider}
    logits: {<<: *overrider}
"""
LENET = """
dataset:
    task:
        preprocess:
            shape: {height: 28, width: 28, channels: 1}
model:
    name: lenet5
    layers:
        prep: {type: identity}
        conv0: &conv {type: convolution, kernel_size: 5, padding: valid, num_outputs: 20}
        pool0: &pool {type: max_pool, kernel_size: 2, stride: 2, padding: valid}
        conv1: {<<: *conv, num_outputs: 50}
        pool1: *pool
        flatten: {type: flatten}
        fc1: &fc {type: fully_connected, num_outputs: 500}
        logits: {<<: *fc, activation_fn: null, num_outputs: $(dataset.task.num_classes)}
    graph: {from: input, with: [prep, conv0, pool0, conv1, pool1, flatten, fc1, logits], to: output}
"""
OVERRIDE_LENET = """
_import: ../lenet5.yaml
model.layers:
    prep: {overrider: $(_overrider.prep)}
    conv0: &conv {overrider: $(_overrider.conv)}
    conv1: {<<: *conv}
    fc1: {overrider: $(_overrider.fc)}
    logits: {overrider: $(_overrider.logits)}
"""
FIXED = """
_import: ../_global.yaml
_overrider:
    weights: &quantizer
        fixed:
            type: mayo.override.FixedPointQuantizer
            width: 8
            point: 2
            should_update: true
            stochastic: false
            _priority: 100
    biases: {<<: *quantizer}
    activation:
        fixed:
            type: mayo.override.FixedPointQuantizer
            width: 8
            point: 4
            should_update: true
            stochastic: false
            _priority: 100
"""
SHIFT_SPARSE = """
_import: ../_global.yaml
_overrider:
    pruner:
        type: mayo.override.DynamicNetworkSurgeryPruner
        should_update: false
        _priority: 100
    quantizer: &incrementalshift
        type: mayo.override.IncrementalQuantizer
        interval: 0.25
        _priority: 80
        count_zero: false
        quantizer:
            type: mayo.override.ShiftQuantizer
            width: 8
            bias: 200
            overflow_rate: 0.0
            should_update: true
            stochastic: false
    weights:
        dns: $(_overrider.pruner)
        shift: $(_overrider.quantizer)
    biases:
        shift: $(_overrider.quantizer)
"""
MIXED = """
_import: ../_global.yaml
_overrider:
    weights: &quantizer
        mixed:
          type: mayo.override.MixedQuantizer
          interval: 0.5
          reg_factor: 0.001
          index: 0
          quantizers:
              quantizer0: {type: mayo.override.FixedPointQuantizer, width: 2, point: 0}
              quantizer1: {type: mayo.override.FixedPointQuantizer, width: 8, point: 0}
    biases: {<<: *quantizer}
"""
DFP = """
_import: ../_global.yaml
_overrider:
    weights: &quantizer
        dynamic: {type: mayo.override.DGQuantizer, width: 16, overflow_rate: 0.0, _priority: 90}
    gradient:
        weights: *quantizer
"""


@pytest.fixture
def mayo(workspace):
    run = workspace({"synthetic.yaml": synthetic_dataset(channels=1, train=32, validate=32)})
    for name, text in {"lenet5.yaml": LENET, "override/_global.yaml": GLOBAL, "override/lenet5.yaml": OVERRIDE_LENET,
                       "override/quantize/fixed.yaml": FIXED, "override/quantize/shift_sparse.yaml": SHIFT_SPARSE,
                       "override/quantize/mixed.yaml": MIXED, "override/quantize/dfp.yaml": DFP}.items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text(text)
    return lambda quantize, *rest: run("override/lenet5.yaml", f"override/quantize/{quantize}.yaml",
                                       "synthetic.yaml", *rest)


@pytest.mark.parametrize("name, bits, size", [("fixed", "w8 b8 a8", "4.00× smaller"),
                                              ("shift_sparse", "w9 b9", "3.56× smaller"),
                                              ("mixed", "w8 b8", "4.00× smaller")])
def test_mayo_quantization_files_run_info(mayo, capsys, name, bits, size):
    assert mayo(name, "info") == 0
    out = capsys.readouterr().out
    conv1 = next(line for line in out.splitlines() if line.startswith("conv1 "))
    assert bits in conv1
    assert f"at its quantizers' widths" in out and size in out


def test_gradient_overriders_are_refused_in_one_line(mayo, capsys):
    assert mayo("dfp", "info") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gradient overriders" in err[0] and "override/lenet5.yaml" in err[0]


@pytest.mark.parametrize("override, key, words", [
    ("_overrider.weights.fixed.width=0", "weights.fixed.width", "expected an integer greater than 0, got 0"),
    ("_overrider.weights.fixed.type=mayo.override.FixedPintQuantizer", "weights.fixed.type",
     "did you mean mayo.override.FixedPointQuantizer"),
    ("_overrider.weights.fixed.widht=8", "weights.fixed.widht", "unknown key widht (did you mean width?)"),
])
def test_bad_quantizer_settings_are_one_line_before_any_work(mayo, capsys, override, key, words):
    assert mayo("fixed", override, "info") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0] and words in err[0], err
    assert not Path("checkpoints").exists()


def test_a_negative_overflow_rate_is_refused(mayo, capsys):
    assert mayo("shift_sparse", "_overrider.quantizer.quantizer.overflow_rate=-0.5", "info") == 2
    err = capsys.readouterr().err
    assert "overflow_rate: expected a fraction in [0, 1], got -0.5" in err


def test_training_updates_the_quantizers_and_checkpoints_their_state(workspace, capsys):
    run = workspace({"synthetic.yaml": synthetic_dataset(channels=3, train=64, validate=32), "model.yaml": """
model:
  name: quantized
  layers:
    conv0:
      type: convolution
      kernel_size: 3
      num_outputs: 8
      overrider:
        weights: {dynamic: {type: DGQuantizer, width: 6, overflow_rate: 0.0}}
        activation: {fixed: {type: FixedPointQuantizer, width: 8, point: 4}}
    pool: {type: reduce_mean, axis: [1, 2]}
    logits: {type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}
  graph: {from: input, with: [conv0, pool, logits], to: output}
train: {learning_rate: 0.05, optimizer: {type: sgd}}
system: {batch_size_per_gpu: 16, max_epochs: 1, seed: 0}
"""})
    assert run("synthetic.yaml", "model.yaml", "train", "eval") == 0
    stored = np.load("checkpoints/quantized/synthetic/latest.npz")
    point_key = next(key for key in stored.files if key.endswith("conv0.weights/point"))
    kernel = stored[next(key for key in stored.files if key.endswith("conv0/kernel"))]
    # the DG policy of Mayo, on the kernel the checkpoint holds (updated after the epoch, before saving)
    expected = next(p for p in range(-6, 7) if overflow(kernel, p, 6) <= 0)
    assert float(stored[point_key]) == expected
    assert run("synthetic.yaml", "model.yaml", "system.checkpoint.load=latest", "info") == 0
    assert "w6 a8" in capsys.readouterr().out


def overflow(x, point, width):
    scaled = np.round(x * 2.0 ** (width - point))
    scaled = scaled[scaled != 0]
    return np.mean((scaled < -2 ** (width - 1)) | (scaled > 2 ** (width - 1) - 1))


QUANTIZED_MODEL = """
model:
  name: quantized
  layers:
    conv0:
      type: convolution
      kernel_size: 3
      num_outputs: 8
      normalizer_fn: batch_norm
      overrider:
        weights: {dynamic: {type: DGQuantizer, width: 8, overflow_rate: 0.0}}
        activation: {fixed: {type: FixedPointQuantizer, width: 8, point: 4}}
    pool: {type: reduce_mean, axis: [1, 2]}
    logits: {type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}
  graph: {from: input, with: [conv0, pool, logits], to: output}
train: {learning_rate: 0.05, optimizer: {type: sgd}}
system: {batch_size_per_gpu: 16, max_epochs: 1, seed: 0}
"""


def test_int8_export_takes_the_learned_ranges_and_bench_times_it(workspace, capsys):
    from ai_edge_litert.interpreter import Interpreter

    run = workspace({"synthetic.yaml": synthetic_dataset(channels=3, train=64, validate=64),
                     "model.yaml": QUANTIZED_MODEL})
    assert run("synthetic.yaml", "model.yaml", "train", "system.export.images=64",
               "system.export.formats=[keras, tflite_int8]", "export-model") == 0
    out = capsys.readouterr().out
    assert "the learned ranges of 1 fixed-point activation quantizer" in out
    line = next(line for line in out.splitlines() if line.strip().startswith("tflite_int8"))
    assert float(line.split("top-1 agreement ")[1].rstrip("%")) >= 95
    # the activation after conv0 (ReLU fused) holds Mayo's grid: width 8, point 4 is a step of 1/16 around 0
    interpreter = Interpreter(model_path="exported/quantized_int8.tflite")
    conv = [t["quantization_parameters"] for t in interpreter.get_tensor_details() if "conv0" in t["name"]
            and "Relu" in t["name"] and len(t["quantization_parameters"]["scales"]) == 1]  # not the bias
    assert conv and conv[0]["scales"].tolist() == [1 / 16] and conv[0]["zero_points"].tolist() == [0]
    assert run("synthetic.yaml", "model.yaml", "system.checkpoint.load=latest", "system.bench.images=4",
               "system.bench.repeats=1", "bench") == 0
    out = capsys.readouterr().out
    assert "quantized, int8 TensorFlow Lite" in out and "int8 TensorFlow Lite:" in out
    assert "× the float TensorFlow Lite model" in out


@pytest.mark.parametrize("overrider, words", [
    ({"weights": {"dns": {"type": "mayo.override.DynamicNetworkSurgeryPruner", "_priority": 50},
                  "fixed": {"type": "mayo.override.FixedPointQuantizer", "width": 8, "_priority": 100}}},
     "ranks the quantizer before the pruner"),
    ({"weights": {"a": {"type": "FixedPointQuantizer", "width": 8}, "b": {"type": "ShiftQuantizer", "width": 3,
                                                                           "overflow_rate": 0.0}}},
     "chains of quantizers on one variable are not supported"),
    ({"gradient": {"weights": {"d": {"type": "DGQuantizer", "width": 8, "overflow_rate": 0}}}},
     "gradient overriders"),
    ({"kernel": {"fixed": {"type": "FixedPointQuantizer", "width": 8}}}, "not `kernel`"),
])
def test_overriders_the_runner_cannot_honour_are_refused(overrider, words):
    from mayo_lite.config.mayo_overriders import translate
    from mayo_lite.errors import ConfigError

    with pytest.raises(ConfigError, match=words):
        translate({"layers": {"conv": {"type": "convolution", "overrider": overrider}}})


def test_a_gated_convolutions_weights_and_activation_are_quantized(workspace, capsys):
    run = workspace({"synthetic.yaml": synthetic_dataset(channels=3), "gated.yaml": """
model:
  name: gated
  layers:
    conv0:
      type: gated_convolution
      kernel_size: 3
      num_outputs: 8
      normalizer_fn: batch_norm
      gate_params: {density: 0.5}
      overrider: {activation: {fixed: {type: FixedPointQuantizer, width: 8, point: 4}}}
    pool: {type: reduce_mean, axis: [1, 2]}
    logits: {type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}
  graph: {from: input, with: [conv0, pool, logits], to: output}
"""})
    assert run("synthetic.yaml", "gated.yaml", "info") == 0
    conv0 = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("conv0 "))
    assert " a8 " in f"{conv0} "
    weights = "model.layers.conv0.overrider.weights={fixed: {type: FixedPointQuantizer, width: 6, point: 1}}"
    assert run("synthetic.yaml", "gated.yaml", weights, "info") == 0
    conv0 = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("conv0 "))
    assert " w6 a8 " in f"{conv0} "
