"""Dynamic network surgery: the mask update against Mayo's formula in NumPy, weights that regrow, the masked layers'
regrow mode (straight-through gradients, no zeroing), the `surgery` schedule with `fit` and the runner, and Mayo's
pruning overriders read as the `prune:` section."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from keras.src import testing

from mayo_lite.config import Config
from mayo_lite.config.mayo_overriders import translate
from mayo_lite.errors import ConfigError
from mayo_lite.layers import GatedConv2D, MaskedConv2D, MaskedDense, MaskedDepthwiseConv2D
from mayo_lite.errors import ArgumentError
from mayo_lite.prune import GradualPruning, add_masks
from mayo_lite.prune.schedule import ScheduleError, parse_schedule
from mayo_lite.prune.surgery import surgery_mask, update_masks
from mayo_lite.session import pruning
from mayo_lite.weights.checkpoint import read
from tests.synthetic import synthetic_dataset


def mayo_mask(kernel, mask, alpha, on_factor, off_factor):
    """Mayo's DynamicNetworkSurgeryPruner._updated_mask, on NumPy arrays as its `session.run` gives them."""
    magnitude = np.abs(kernel)
    threshold = np.mean(magnitude) + alpha * np.sqrt(np.var(magnitude))
    mask = np.logical_or(mask, magnitude > on_factor * threshold)
    return np.logical_and(mask, magnitude > off_factor * threshold)


def built(layer, shape):
    layer.build(shape)
    return layer


@pytest.mark.parametrize("alpha, on_factor, off_factor", [(2.0, 1.1, 0.9), (-0.1, 1.1, 0.9), (0.5, 1.0, 1.0)])
def test_the_mask_update_is_mayos_formula(alpha, on_factor, off_factor):
    rng = np.random.default_rng(0)
    layer = built(MaskedConv2D(8, 3), (None, 6, 6, 4))
    kernel = rng.normal(size=(3, 3, 4, 8)).astype("float32")
    mask = rng.random((3, 3, 4, 8)) > 0.3
    layer.kernel.assign(kernel)
    layer.mask.assign(mask.astype("float32"))
    update = update_masks([layer], alpha, on_factor, off_factor)
    expected = mayo_mask(kernel.astype(np.float64), mask, alpha, on_factor, off_factor)
    assert np.array_equal(keras.ops.convert_to_numpy(layer.mask) != 0, expected)
    assert np.array_equal(surgery_mask(kernel, mask, alpha, on_factor, off_factor), expected)
    assert update.pruned == int((~expected).sum()) and update.total == expected.size
    assert update.spliced == int((expected & ~mask).sum()) and update.cut == int((mask & ~expected).sum())


def test_a_pruned_weight_regrows_and_the_band_between_the_factors_keeps_its_state():
    layer = built(MaskedDense(4, use_bias=False), (None, 25))
    kernel = np.linspace(0.01, 1.0, 100, dtype="float32").reshape(25, 4)
    layer._kernel.assign(kernel)
    update_masks([layer], alpha=0.0, on_factor=1.1, off_factor=0.9)
    threshold = np.abs(kernel).mean()
    mask = keras.ops.convert_to_numpy(layer.mask)
    assert mask[0, 0] == 0 and np.array_equal(mask != 0, np.abs(kernel) > 0.9 * threshold)
    # The smallest weight grows past on_factor·threshold (the threshold hardly moves): it is spliced back.
    grown = kernel.copy()
    grown[0, 0] = 2.0
    layer._kernel.assign(grown)
    update = update_masks([layer], alpha=0.0, on_factor=1.1, off_factor=0.9)
    assert keras.ops.convert_to_numpy(layer.mask)[0, 0] == 1 and update.spliced == 1
    # Between off_factor·t and on_factor·t a pruned weight stays pruned and a kept one stays kept.
    threshold = np.abs(grown).mean()
    inside = (np.abs(grown) > 0.9 * threshold) & (np.abs(grown) <= 1.1 * threshold)
    assert inside.sum() >= 10
    mask = keras.ops.convert_to_numpy(layer.mask).copy()
    for state in (0.0, 1.0):
        mask[inside] = state
        layer.mask.assign(mask)
        update_masks([layer], alpha=0.0, on_factor=1.1, off_factor=0.9)
        assert np.all(keras.ops.convert_to_numpy(layer.mask)[inside] == state)


@pytest.mark.parametrize("layer, shape", [(MaskedConv2D(3, 3), (2, 5, 5, 2)), (MaskedDense(3), (4, 5)),
                                          (MaskedDepthwiseConv2D(3, depth_multiplier=2), (2, 5, 5, 2))])
def test_regrow_mode_passes_the_gradient_to_pruned_weights_and_keeps_the_output(layer, shape):
    x = np.random.default_rng(1).random(shape).astype("float32")
    layer(x)
    kernel = layer._kernel if isinstance(layer, MaskedDense) else layer.kernel
    mask = (np.random.default_rng(2).random(tuple(kernel.shape)) > 0.5).astype("float32")
    layer.mask.assign(mask)

    def gradient():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x) ** 2)
        return tape.gradient(loss, kernel).numpy()

    normal, output = gradient(), keras.ops.convert_to_numpy(layer(x))
    assert np.all(normal[mask == 0] == 0)
    layer.regrow = True
    regrown = gradient()
    assert np.count_nonzero(regrown[mask == 0]) > 0.9 * np.sum(mask == 0)
    assert np.allclose(regrown[mask == 1], normal[mask == 1])
    assert np.array_equal(keras.ops.convert_to_numpy(layer(x)), output)
    assert np.array_equal(kernel.constraint(kernel).numpy(), kernel.numpy())  # nothing zeroed
    assert layer.get_config()["regrow"] is True and len(layer.weights) == (3 if layer.use_bias else 2)
    layer.regrow = False  # folds
    assert np.all(kernel.numpy()[mask == 0] == 0) and np.all(gradient()[mask == 0] == 0)
    assert "regrow" not in layer.get_config()


def test_an_optimizer_step_moves_pruned_weights_only_in_regrow_mode():
    layer = built(MaskedDense(2, use_bias=False), (None, 3))
    mask = np.array([[1, 0], [0, 1], [1, 0]], "float32")
    layer.mask.assign(mask)
    layer._kernel.assign(np.ones((3, 2), "float32") * mask)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    x = np.ones((4, 3), "float32")

    @tf.function  # traced once, at the first step: it follows every later switch of the layer's mode
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((layer(x) - 3.0) ** 2)
        optimizer.apply_gradients([(tape.gradient(loss, layer._kernel), layer._kernel)])

    layer.regrow = True
    layer.regrow = False
    step()
    assert np.all(layer._kernel.numpy()[mask == 0] == 0)
    layer.regrow = True
    step()
    assert np.all(layer._kernel.numpy()[mask == 0] != 0)
    layer.regrow = False
    step()
    assert np.all(layer._kernel.numpy()[mask == 0] == 0)


class RegrowBattery(testing.TestCase):
    def test_masked_convolution_in_regrow_mode(self):
        self.run_layer_test(MaskedConv2D, init_kwargs={"filters": 4, "kernel_size": 3, "regrow": True},
                            input_shape=(2, 8, 8, 3), expected_output_shape=(2, 6, 6, 4),
                            expected_num_trainable_weights=2, expected_num_non_trainable_weights=1,
                            supports_masking=False)


@pytest.mark.parametrize("spec, key", [
    ({"type": "surgery"}, None),
    ({"type": "surgery", "alpha": "2"}, "alpha"),
    ({"type": "surgery", "alpha": float("nan")}, "alpha"),
    ({"type": "surgery", "alpha": 1, "on_factor": 0}, "on_factor"),
    ({"type": "surgery", "alpha": 1, "on_factor": 1.0, "off_factor": 1.2}, "off_factor"),
    ({"type": "surgery", "alpha": 1, "percent": 0.5}, None),
])
def test_bad_surgery_schedules_name_the_key(spec, key):
    with pytest.raises(ScheduleError) as error:
        parse_schedule(spec)
    assert error.value.key == key


def test_a_surgery_schedule_takes_a_negative_alpha_and_mayos_factors_by_default():
    schedule = parse_schedule({"type": "surgery", "alpha": -0.1})
    assert schedule.surgery and schedule.percent(0.0) is None
    assert schedule.settings["on_factor"] == 1.1 and schedule.settings["off_factor"] == 0.9


class PrunedWeights(keras.callbacks.Callback):
    """Records after each step whether the optimizer changed weights that were pruned before and after it
    (`learned`), and whether every pruned weight is zero (`zero`)."""

    def __init__(self):
        super().__init__()
        self.learned, self.zero, self._before = [], [], None

    def on_train_batch_begin(self, batch, logs=None):
        self._before = self._state()

    def on_train_batch_end(self, batch, logs=None):
        after = self._state()
        self.learned.append(any(np.any(kernel[(mask == 0) & (old_mask == 0)] != old[(mask == 0) & (old_mask == 0)])
                                for (old_mask, old), (mask, kernel) in zip(self._before, after)))
        self.zero.append(all(np.all(kernel[mask == 0] == 0) for mask, kernel in after))

    def _state(self):
        return [(keras.ops.convert_to_numpy(layer.mask).copy(), keras.ops.convert_to_numpy(layer.kernel).copy())
                for layer in self.model.layers if hasattr(layer, "mask")]


@pytest.mark.parametrize("fitted_before", [False, True])
def test_fit_with_a_surgery_schedule_regrows_then_folds(fitted_before):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    outputs = keras.layers.Dense(4, name="logits")(keras.layers.GlobalAveragePooling2D()(hidden))
    model = add_masks(keras.Model(inputs, outputs), dense=True)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 3)).astype("float32"), rng.integers(0, 4, 64)
    if fitted_before:  # the step traced out of regrow mode must be traced again
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    recorder = PrunedWeights()
    schedule = {"type": "surgery", "alpha": 0.0, "frequency": 2, "end": 2}
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[GradualPruning(schedule), recorder])
    assert len(history.history["pruned"]) == 4 and 0.2 < history.history["pruned"][-1] < 0.8
    # 4 steps an epoch, masks updated every 2: pruned weights learn from step 3 (the step after the first update)
    # to step 8 (epoch 2, the schedule's end); step 9 folds the masks, and from then on pruned weights stay zero.
    assert all(recorder.learned[2:8]) and not any(recorder.zero[1:8])
    assert all(recorder.zero[8:]) and not any(recorder.learned[9:])
    for layer in (model.get_layer("conv"), model.get_layer("logits")):
        kernel, mask = keras.ops.convert_to_numpy(layer.kernel), keras.ops.convert_to_numpy(layer.mask)
        assert not layer.regrow and np.all(kernel[mask == 0] == 0)


def test_surgery_refuses_a_gated_convolution_whose_mask_cannot_regrow():
    model = keras.Sequential([keras.Input((8, 8, 3)), GatedConv2D(4, 3, density=0.5, use_mask=True, name="gated"),
                              keras.layers.GlobalAveragePooling2D()])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ArgumentError, match="leave gated out"):
        model.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 4)), verbose=0,
                  callbacks=[GradualPruning({"type": "surgery", "alpha": 1.0})])


MODEL = """
model:
  name: lenet
  layers:
    conv0: &conv
      type: convolution
      kernel_size: 3
      num_outputs: 8
      weights_overrider:
        type: mayo.override.DynamicNetworkSurgeryPruner
        alpha: 0.5
        should_update: true
    conv1: {<<: *conv, num_outputs: 6}
    pool: {type: reduce_mean, axis: [1, 2]}
    logits:
      type: fully_connected
      num_outputs: $(dataset.task.num_classes)
      activation_fn: null
      weights_overrider: {type: mayo.override.DynamicNetworkSurgeryPruner, alpha: 0.5}
  graph: {from: input, with: [conv0, conv1, pool, logits], to: output}
""" + synthetic_dataset(channels=3, train=64, validate=32) + """train:
  learning_rate: 0.05
  optimizer: {type: sgd, momentum: 0.9}
system: {batch_size_per_gpu: 16, max_epochs: 2, seed: 3}
"""


def test_the_runner_trains_a_mayo_model_with_a_surgery_pruner(workspace, capsys):
    run = workspace({"lenet.yaml": MODEL})
    assert run("lenet.yaml", "prune.schedule.frequency=2", "system.info.plumbing=true", "train", "info") == 0
    err = capsys.readouterr().err
    assert "Mayo's DynamicNetworkSurgeryPruner on conv0, conv1 read as prune: {layers: [conv0, conv1], " \
           "schedule: {type: surgery, alpha: 0.5, on_factor: 1.1, off_factor: 0.9}}; logits not pruned" in err
    assert "surgery:" in err and "spliced back" in err
    stored, _, _ = read(Path("checkpoints/lenet/synthetic/latest.npz"))
    for name in ("conv0", "conv1"):  # masks folded when training ended
        mask, kernel = stored[f"model/{name}/mask"], stored[f"model/{name}/kernel"]
        assert 0 < np.mean(mask == 0) < 1 and np.all(kernel[mask == 0] == 0)
    rows = {row["name"]: row for row in yaml.safe_load(Path("info.yaml").read_text())["layers"]}
    assert rows["conv1"]["weight_density"] < 1


def test_a_quantizer_in_the_legacy_overrider_form_quantizes_its_layer(workspace, capsys):
    run = workspace({"lenet.yaml": MODEL})
    quantizer = "{type: mayo.override.FixedPointQuantizer, width: 8, point: 2}"
    assert run("lenet.yaml", f"model.layers.conv1.weights_overrider={quantizer}", "info") == 0
    conv1 = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("conv1 "))
    assert " w8 " in f"{conv1} "


def test_the_overrider_files_of_mayo_read_as_a_surgery_schedule(tmp_path):
    # models/override/_global.yaml, models/override/prune/dns.yaml and a model's override file, as Mayo has them.
    (tmp_path / "global.yaml").write_text("""
_overrider:
  weights: {}
  biases: {}
  activation: {}
  _overrider: &overrider
    weights: $(_overrider.weights)
    biases: $(_overrider.biases)
    activation: $(_overrider.activation)
  conv: {<<: *overrider}
  logits: {<<: *overrider}
""")
    (tmp_path / "dns.yaml").write_text("""
_import: global.yaml
_overrider:
  weights:
    dns: {type: mayo.override.DynamicNetworkSurgeryPruner, alpha: -0.1, should_update: true, _priority: 100}
""")
    (tmp_path / "model.yaml").write_text("""
model:
  name: m
  layers:
    conv0: {type: convolution, kernel_size: 3, num_outputs: 4, overrider: $(_overrider.conv)}
    conv1: {type: convolution, kernel_size: 3, num_outputs: 4, overrider: $(_overrider.conv)}
    logits: {type: fully_connected, num_outputs: 2, overrider: $(_overrider.logits)}
  graph: {from: input, with: [conv0, conv1, logits], to: output}
""")
    cfg = Config()
    cfg.load(str(tmp_path / "model.yaml"))
    cfg.load(str(tmp_path / "dns.yaml"))
    values = pruning.settings(cfg)
    assert values["layers"] == ["conv0", "conv1"]
    assert values["schedule"] == {"type": "surgery", "alpha": -0.1, "on_factor": 1.1, "off_factor": 0.9}
    assert all("overrider" not in spec for spec in translate(cfg.get("model")).model["layers"].values())
    cfg.set("prune", {"schedule": {"end": 3}})  # a `prune:` section of the config tunes what the overriders set
    assert pruning.check_schedule(cfg).settings["end"] == 3


def test_a_mean_std_pruner_is_surgery_whose_factors_are_one():
    spec = {"layers": {"c": {"type": "convolution", "weights_overrider": {"type": "mayo.override.MeanStdPruner",
                                                                          "alpha": 0.0}}}}
    schedule = translate(spec).prune["schedule"]
    assert (schedule["on_factor"], schedule["off_factor"]) == (1.0, 1.0)
    kernel = np.random.default_rng(3).normal(size=(3, 3, 2, 2))
    for mask in (np.zeros(kernel.shape, bool), np.ones(kernel.shape, bool)):
        # Mayo's MeanStdPruner: |w| > mean(|w|) + alpha·std(|w|), whatever the mask was.
        assert np.array_equal(surgery_mask(kernel, mask, 0.0, 1.0, 1.0), np.abs(kernel) > np.abs(kernel).mean())


def test_network_slimmers_read_as_channel_pruning_with_an_l1_penalty_on_the_scales():
    slimmer = {"type": "mayo.override.NetworkSlimmer", "density": 0.75, "weight": 1e-5, "should_update": True}
    spec = {"layers": {"conv0": {"type": "convolution", "normalizer_fn": "batch_norm", "activation_overrider": slimmer},
                       "conv1": {"type": "convolution", "normalizer_fn": "batch_norm",
                                 "overrider": {"activation": {"netslim": slimmer}, "weights": None}}}}
    translation = translate(spec)
    assert translation.prune == {"granularity": "channel", "percent": 0.25, "scope": "global",
                                 "layers": ["conv0", "conv1"]}
    assert translation.model["batch_norm_scale_l1"] == 1e-5
    del spec["layers"]["conv1"]["normalizer_fn"]
    with pytest.raises(ConfigError, match="model.layers.conv1.overrider.activation.netslim: network slimming ranks"):
        translate(spec)


@pytest.mark.parametrize("overrider, message", [
    ({"type": "mayo.override.DynamicNetworkSurgeryPruner", "alpah": 1}, "alpah (did you mean alpha?)"),
    ({"type": "mayo.override.NetworkSlimmer", "density": 0.5}, "overrides `activation`, not `weights`"),
    ({"type": "mayo.override.DynamicNetworkSurgeryPruner", "on_factor": 0.8}, "off_factor (0.9) above on_factor"),
    ({"type": "tensorflow.identity"}, "not one of Mayo's overriders this project reads"),
])
def test_overriders_that_cannot_be_read_are_config_errors(overrider, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        translate({"layers": {"c": {"type": "convolution", "weights_overrider": overrider}}})
