"""TensorFlow Model Optimization's magnitude pruning API (`tfmot.sparsity.keras`) on this project's masked layers,
for Keras 3: the same names, arguments, defaults and arithmetic (tensorflow_model_optimization/python/core/sparsity/
keras: pruning_schedule.py, prune.py, pruning_impl.py, pruning_callbacks.py), so TFMOT code runs with one import
changed. TFMOT wraps each layer in a `PruneLowMagnitude` layer; here the layer becomes its masked counterpart
(`MaskedConv2D`, `MaskedDepthwiseConv2D`, `MaskedDense`), whose kernel carries the mask, and the schedule rides on
it, so `strip_pruning` gives back plain Keras layers."""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from mayo_lite.layers import MASKED_LAYERS
from mayo_lite.layers.masking import kernel_variable
from mayo_lite.models.cloning import all_layers, check_model
from mayo_lite.prune import add_masks, strip_masks


class PruningSchedule:
    """TFMOT's base class: `schedule(step)` is (whether to prune at this step, the sparsity to prune to)."""

    def _should_prune_in_step(self, step, begin_step, end_step, frequency):
        in_range = step >= begin_step and (step <= end_step or end_step < 0)
        return bool(in_range and (step - begin_step) % frequency == 0)

    @staticmethod
    def _validate_step(begin_step, end_step, frequency, allow_negative_1):
        if begin_step < 0:
            raise ValueError("begin_step should be >= 0")
        if not allow_negative_1 and end_step == -1:
            raise ValueError("end_step cannot be -1.")
        if end_step != -1:
            if end_step < 0:
                raise ValueError("end_step can be -1 or >= 0")
            if end_step < begin_step:
                raise ValueError("begin_step should be <= end_step if end_step != -1")
        if frequency <= 0:
            raise ValueError("frequency should be > 0")

    @staticmethod
    def _validate_sparsity(sparsity, name):
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"{name} must be in range [0,1)")

    def __call__(self, step):
        should, sparsity = self.prune_at(int(step))
        return tf.constant(should), tf.constant(sparsity, tf.float32)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class ConstantSparsity(PruningSchedule):
    """`target_sparsity` at every `frequency`-th step from `begin_step` to `end_step` (−1: to the end)."""

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        self.target_sparsity, self.begin_step, self.end_step, self.frequency = (target_sparsity, begin_step,
                                                                                end_step, frequency)
        self._validate_step(begin_step, end_step, frequency, True)
        self._validate_sparsity(target_sparsity, "target_sparsity")

    def prune_at(self, step):
        return self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency), self.target_sparsity

    def get_config(self):
        return {"class_name": type(self).__name__, "config": {
            "target_sparsity": self.target_sparsity, "begin_step": self.begin_step, "end_step": self.end_step,
            "frequency": self.frequency}}


class PolynomialDecay(PruningSchedule):
    """`final + (initial − final)·(1 − p)^power`, p = (step − begin_step)/(end_step − begin_step) clipped to [0, 1]
    (Zhu and Gupta, 2017), at every `frequency`-th step from `begin_step` to `end_step`."""

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100):
        self.initial_sparsity, self.final_sparsity = initial_sparsity, final_sparsity
        self.power, self.begin_step, self.end_step, self.frequency = power, begin_step, end_step, frequency
        self._validate_step(begin_step, end_step, frequency, False)
        self._validate_sparsity(initial_sparsity, "initial_sparsity")
        self._validate_sparsity(final_sparsity, "final_sparsity")

    def prune_at(self, step):
        span = self.end_step - self.begin_step
        progress = 1.0 if span == 0 else min(1.0, max(0.0, (step - self.begin_step) / span))
        sparsity = self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - progress) ** self.power
        return self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency), sparsity

    def get_config(self):
        return {"class_name": type(self).__name__, "config": {
            "initial_sparsity": self.initial_sparsity, "final_sparsity": self.final_sparsity, "power": self.power,
            "begin_step": self.begin_step, "end_step": self.end_step, "frequency": self.frequency}}


def prune_low_magnitude(to_prune, pruning_schedule=ConstantSparsity(0.5, 0), block_size=(1, 1),
                        block_pooling_type="AVG", pruning_policy=None, sparsity_m_by_n=None, **kwargs):
    """Marks a layer, a list of layers, or a Sequential/functional model for magnitude pruning during `fit` (with
    `UpdatePruningStep` among the callbacks): each Conv2D and Dense kernel is pruned, layer by layer, to the
    schedule's sparsity — its smallest weights by magnitude set to zero (ties at the threshold kept) and kept there.
    Biases are not pruned, nor DepthwiseConv2D weights (TFMOT wraps those layers and prunes nothing in them).

    Unlike TFMOT, `block_size` other than (1, 1), `pruning_policy` and `sparsity_m_by_n` are not supported (a
    ValueError names them). A model comes back as a copy; a layer as its masked counterpart."""
    for name, value, default in (("block_size", tuple(block_size), (1, 1)), ("pruning_policy", pruning_policy, None),
                                 ("sparsity_m_by_n", sparsity_m_by_n, None)):
        if value != default:
            raise ValueError(f"prune_low_magnitude: `{name}`={value!r} is not supported by mayo_lite.tfmot "
                             f"(only {default!r})")
    if block_pooling_type not in ("AVG", "MAX"):
        raise ValueError(f"Unsupported pooling type '{block_pooling_type}'. Should be 'AVG' or 'MAX'.")
    if isinstance(to_prune, list):
        return [prune_low_magnitude(layer, pruning_schedule) for layer in to_prune]
    if isinstance(to_prune, keras.Model):
        check_model(to_prune, "prune_low_magnitude")
        # TFMOT wraps DepthwiseConv2D layers but prunes none of their weights: they stay unmasked here.
        model = add_masks(to_prune, dense=True)
        for layer in all_layers(model):
            if isinstance(layer, tuple(MASKED_LAYERS.values())):
                layer.pruning_schedule = pruning_schedule
        return model
    if type(to_prune) in MASKED_LAYERS:
        layer = MASKED_LAYERS[type(to_prune)].from_config(to_prune.get_config())
        layer.pruning_schedule = pruning_schedule
        return layer
    raise ValueError("Please initialize `Prune` with a supported layer. Layers should either be supported by the "
                     f"PruneRegistry (built-in keras layers) or should be a `PrunableLayer` instance, or should has "
                     f"a customer defined `get_prunable_weights` method. You passed: {type(to_prune)}")


def _scheduled(model):
    return [layer for layer in all_layers(model) if getattr(layer, "pruning_schedule", None) is not None]


def magnitude_mask(kernel, sparsity):
    """TFMOT's mask: the k = max(round(n·(1 − sparsity)), 1) largest magnitudes, ties at the threshold kept."""
    magnitudes = np.abs(kernel).ravel()
    k = max(int(np.round(magnitudes.size * (1 - sparsity))), 1)
    order = np.argsort(-magnitudes, kind="stable")
    threshold = magnitudes[order[k - 1]]
    mask = magnitudes >= threshold
    mask[order[k - 1]] = True
    return mask.reshape(kernel.shape).astype(np.float32), float(threshold)


class UpdatePruningStep(keras.callbacks.Callback):
    """Prunes the marked layers during `fit`: before each training step t (1, 2, ... counted from the start of
    pruning, as TFMOT's `pruning_step`), each layer whose schedule says so gets the mask of its kernel's largest
    magnitudes at the schedule's sparsity; the masked layers keep pruned weights at zero between updates."""

    def __init__(self):
        super().__init__()
        self.prunable_layers = []
        self.step = 0

    def on_train_begin(self, logs=None):
        self.prunable_layers = _scheduled(self.model)
        self.step = int(getattr(self.model, "_pruning_step", 0))

    def on_train_batch_begin(self, batch, logs=None):
        self.step += 1
        self.model._pruning_step = self.step
        for layer in self.prunable_layers:
            should, sparsity = layer.pruning_schedule.prune_at(self.step)
            if should:
                kernel = kernel_variable(layer)
                mask, threshold = magnitude_mask(keras.ops.convert_to_numpy(kernel), sparsity)
                layer.mask.assign(mask)
                kernel.assign(keras.ops.convert_to_numpy(kernel) * mask)
                layer.pruning_threshold = threshold

    def on_epoch_end(self, epoch, logs=None):
        for layer in self.prunable_layers:
            kernel = kernel_variable(layer)
            kernel.assign(kernel * keras.ops.cast(layer.mask, kernel.dtype))


class PruningSummaries(keras.callbacks.TensorBoard):
    """TensorBoard, plus each pruned layer's sparsity and threshold (`<layer>/pruning/sparsity`,
    `<layer>/pruning/threshold`) at every epoch's end."""

    def __init__(self, log_dir, update_freq="epoch", **kwargs):
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(f"`log_dir` must be a non-empty string. You passed `log_dir`={log_dir}.")
        super().__init__(log_dir=log_dir, update_freq=update_freq, **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        writer = tf.summary.create_file_writer(f"{self.log_dir}/metrics")
        with writer.as_default():
            for layer in _scheduled(self.model):
                mask = keras.ops.convert_to_numpy(layer.mask)
                tf.summary.scalar(f"{layer.name}/pruning/sparsity", 1.0 - float(mask.mean()), step=epoch)
                tf.summary.scalar(f"{layer.name}/pruning/threshold", getattr(layer, "pruning_threshold", 0.0),
                                  step=epoch)
        writer.close()


def strip_pruning(model):
    """The model with plain Keras layers again, each pruned kernel holding its zeros (for export)."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected model to be a `tf.keras.Model` instance but got: {model}")
    return strip_masks(model)


@contextlib.contextmanager
def prune_scope():
    """TFMOT loads pruned models inside this scope; the masked layers are registered with Keras, so it only adds
    them to the custom objects."""
    from mayo_lite.layers import MaskedConv2D, MaskedDense, MaskedDepthwiseConv2D

    with keras.saving.custom_object_scope({cls.__name__: cls for cls in (MaskedConv2D, MaskedDense,
                                                                         MaskedDepthwiseConv2D)}):
        yield


__all__ = ["ConstantSparsity", "PolynomialDecay", "PruningSchedule", "PruningSummaries", "UpdatePruningStep",
           "prune_low_magnitude", "prune_scope", "strip_pruning"]
