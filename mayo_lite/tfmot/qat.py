"""TensorFlow Model Optimization's quantization-aware training API (`tfmot.quantization.keras`) with its default
8-bit scheme, on this project's quantized layers, for Keras 3 (tensorflow_model_optimization/python/core/
quantization/keras: quantize.py, quant_ops.py, default_8bit/): weights 8-bit symmetric with a narrow range, per
output channel for convolutions (`LastValueQuantizer`: the range is the weights' own), activations 8-bit per
tensor, asymmetric, their range an exponential moving average of each batch's (`MovingAverageQuantizer`, decay
0.999, starting at [−6, 6]). As in TFMOT's default scheme, a convolution or dense layer's output is quantized once,
after the batch norm and ReLU that follow it, and the model's input by a running min and max (`AllValuesQuantizer`);
batch norms are not folded in training (TFMOT's transforms only move the fake quantization past them) but when
the model is converted. One difference: a convolution followed by a separate ReLU layer keeps its weights
quantized (TFMOT's LayerReLUQuantize leaves them float)."""

import contextlib

import keras
import tensorflow as tf
from keras import ops

from mayo_lite.layers import MASKED_LAYERS
from mayo_lite.models.cloning import all_layers, check_model, clone, consumers, copy_weights
from mayo_lite.quantize.base import Quantizer

_PASS = (keras.layers.BatchNormalization, keras.layers.ReLU, keras.layers.Activation)


class _FakeQuantizer(Quantizer):
    """What TFMOT's quantizers share: `num_bits` fake quantization, per tensor or per channel, symmetric or not."""

    def __init__(self, num_bits=8, per_axis=False, symmetric=True, narrow_range=True, **kwargs):
        super().__init__(**kwargs)
        self.num_bits, self.per_axis, self.symmetric, self.narrow_range = num_bits, per_axis, symmetric, narrow_range

    @property
    def bits(self):
        return self.num_bits

    def describe(self):
        return {"width": self.num_bits}

    def get_config(self):
        return {**super().get_config(), "num_bits": self.num_bits, "per_axis": self.per_axis,
                "symmetric": self.symmetric, "narrow_range": self.narrow_range}


@keras.saving.register_keras_serializable(package="mayo_lite")
class LastValueQuantizer(_FakeQuantizer):
    """TFMOT's weight quantizer: `num_bits` fake quantization over the tensor's own range (symmetric: ±max |w|;
    per_axis: one range per output channel, the last axis)."""

    def quantized(self, value):
        axes = tuple(range(len(value.shape) - 1)) if self.per_axis else None
        low, high = ops.min(value, axis=axes), ops.max(value, axis=axes)
        low, high = symmetric_range(low, high, self.num_bits, self.narrow_range) if self.symmetric else (
            ops.minimum(low, 0.0), ops.maximum(high, 0.0))
        if self.per_axis:
            return tf.quantization.fake_quant_with_min_max_vars_per_channel(
                value, low, high, num_bits=self.num_bits, narrow_range=self.narrow_range)
        return tf.quantization.fake_quant_with_min_max_vars(value, low, high, num_bits=self.num_bits,
                                                            narrow_range=self.narrow_range)


def symmetric_range(low, high, num_bits, narrow_range):
    """quant_ops' symmetric limits: [−m, m] (narrow) or the two's complement range around the batch's extremes."""
    ratio = -1.0 if narrow_range else -((1 << num_bits) - 2) / (1 << num_bits)
    return ops.minimum(low, high / ratio), ops.maximum(high, low * ratio)


@keras.saving.register_keras_serializable(package="mayo_lite")
class MovingAverageQuantizer(_FakeQuantizer):
    """TFMOT's activation quantizer: in training the range [min, max] moves toward each batch's (0 always inside)
    with decay `ema_decay`; `num_bits` fake quantization over it. Starts at [−6, 6]."""

    def __init__(self, num_bits=8, per_axis=False, symmetric=False, narrow_range=False, ema_decay=0.999, **kwargs):
        super().__init__(num_bits, per_axis, symmetric, narrow_range, **kwargs)
        self.ema_decay = ema_decay

    def build_state(self, shape):
        self.range_min = self.state("min", initial=-6.0)
        self.range_max = self.state("max", initial=6.0)

    def call(self, value, training=False):
        if training:
            low, high = ops.min(value), ops.max(value)
            low, high = symmetric_range(low, high, self.num_bits, self.narrow_range) if self.symmetric else (
                ops.minimum(low, 0.0), ops.maximum(high, 0.0))
            for variable, batch in ((self.range_min, low), (self.range_max, high)):
                variable.assign(variable - (variable - batch) * (1 - self.ema_decay))
        return self.quantized(value)

    def quantized(self, value):
        return tf.quantization.fake_quant_with_min_max_vars(value, self.range_min, self.range_max,
                                                            num_bits=self.num_bits, narrow_range=self.narrow_range)

    def get_config(self):
        return {**super().get_config(), "ema_decay": self.ema_decay}


@keras.saving.register_keras_serializable(package="mayo_lite")
class AllValuesQuantizer(MovingAverageQuantizer):
    """TFMOT's quantizer of the model's input: the range is every value seen in training (a running min and max,
    from [0, 0]), 8-bit per tensor."""

    def build_state(self, shape):
        self.range_min = self.state("min", initial=0.0)
        self.range_max = self.state("max", initial=0.0)

    def call(self, value, training=False):
        if training:
            self.range_min.assign(ops.minimum(self.range_min, ops.min(value)))
            self.range_max.assign(ops.maximum(self.range_max, ops.max(value)))
        return self.quantized(value)


def _weights_quantizer(layer, name):
    convolution = isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    return LastValueQuantizer(num_bits=8, per_axis=convolution, symmetric=True, narrow_range=True, name=name)


def _activation():
    return MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


def _end_of_block(layer):
    """The last layer of `layer`'s conv → batch norm → ReLU chain (TFMOT quantizes the block's output once)."""
    while True:
        following = consumers(layer)
        if len(following) != 1 or not isinstance(following[0], _PASS):
            return layer
        layer = following[0]


def quantize_annotate_layer(to_annotate, quantize_config=None):
    """Marks a layer for `quantize_apply` (TFMOT wraps it in `QuantizeAnnotate`; here the layer itself carries the
    mark). A custom `quantize_config` is not supported."""
    if not isinstance(to_annotate, keras.layers.Layer) or isinstance(to_annotate, keras.Model):
        raise ValueError(f"`to_annotate` can only be a `keras.layers.Layer` instance. You passed an instance of "
                         f"type: {type(to_annotate).__name__}.")
    if quantize_config is not None:
        raise ValueError("quantize_annotate_layer: a custom `quantize_config` is not supported by mayo_lite.tfmot")
    to_annotate._quantize_annotated = True
    return to_annotate


def quantize_annotate_model(to_annotate):
    """Marks every layer of a Sequential or functional model for `quantize_apply`."""
    if not isinstance(to_annotate, keras.Model):
        raise ValueError(f"`to_annotate` can only be a `keras.Model` instance. You passed an instance of type: "
                         f"{type(to_annotate).__name__}.")
    check_model(to_annotate, "quantize_annotate_model")
    for layer in all_layers(to_annotate):
        layer._quantize_annotated = True
    return to_annotate


def quantize_model(to_quantize, quantized_layer_name_prefix="quant_"):
    """A quantization-aware copy of a Sequential or functional model with TFMOT's default 8-bit scheme."""
    if not isinstance(to_quantize, keras.Model):
        raise ValueError(f"`to_quantize` can only be a `keras.Model` instance. You passed an instance of type: "
                         f"{type(to_quantize).__name__}.")
    check_model(to_quantize, "quantize_model")
    return quantize_apply(quantize_annotate_model(to_quantize), quantized_layer_name_prefix=quantized_layer_name_prefix)


def quantize_apply(model, scheme=None, quantized_layer_name_prefix="quant_"):
    """Quantizes the annotated layers of `model` (a copy): their weights 8-bit per channel, their block's output
    8-bit per tensor; with any layer annotated, the model's input too. Layer names keep their own (TFMOT prefixes
    wrappers with `quant_`: that prefix is accepted and unused)."""
    if scheme is not None:
        raise ValueError("quantize_apply: only the default 8-bit scheme is supported by mayo_lite.tfmot")
    check_model(model, "quantize_apply")
    annotated = [layer for layer in all_layers(model) if getattr(layer, "_quantize_annotated", False)]
    if not annotated:
        raise ValueError("`quantize_apply` can only either be a keras Sequential or Functional model, and must "
                         "have at least one annotated layer (quantize_annotate_layer / quantize_annotate_model).")
    weighted = {id(layer) for layer in annotated if type(layer) in MASKED_LAYERS}
    outputs = {id(_end_of_block(layer)) for layer in annotated if type(layer) in MASKED_LAYERS
               or isinstance(layer, (keras.layers.Add, keras.layers.Concatenate, keras.layers.ReLU,
                                     keras.layers.Activation))}
    originals = {}

    def replace(layer):
        if id(layer) not in weighted:
            return None
        config = {**layer.get_config(), "kernel_quantizer": _weights_quantizer(layer, f"{layer.name}.weights")}
        originals[id(layer)] = layer
        return MASKED_LAYERS[type(layer)].from_config(config)

    first = _first_layers(model)

    def call(original, layer, *args, **kwargs):
        if id(original) in first:  # the model's input, quantized first (TFMOT's QuantizeLayer)
            args = (AllValuesQuantizer()(args[0]), *args[1:])
        result = layer(*args, **kwargs)
        return _activation()(result) if id(original) in outputs else result

    copied, replaced = clone(model, replace, call)
    for key, target in replaced.items():
        copy_weights(originals[key], target)
    return copied


def _first_layers(model):
    """The layers that read the model's input."""
    if isinstance(model, keras.Sequential):
        return {id(model.layers[0])}
    return {id(layer) for tensor in model.inputs for layer in consumers(tensor._keras_history[0])}


@contextlib.contextmanager
def quantize_scope(*args):
    """TFMOT loads quantized models inside this scope; the quantizers are registered with Keras already."""
    with keras.saving.custom_object_scope({cls.__name__: cls for cls in (AllValuesQuantizer, LastValueQuantizer,
                                                                         MovingAverageQuantizer)}):
        yield


__all__ = ["AllValuesQuantizer", "LastValueQuantizer", "MovingAverageQuantizer", "quantize_annotate_layer", "quantize_annotate_model",
           "quantize_apply", "quantize_model", "quantize_scope"]
