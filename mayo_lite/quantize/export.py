"""Deploying a quantization-aware model as int8: the activations' fixed-point quantizers become TensorFlow's
FakeQuant operations with the same grid, and the convolutions' fixed-point weights a per-channel FakeQuant on their
grid, which the TensorFlow Lite converter reads as the tensors' int8 scales (what training learned, not a fresh
calibration), as TensorFlow Model Optimization's QAT models do. Written by hand because Keras' own int8 export
(`model.export(format="litert", ...)` with a representative dataset) only calibrates."""

import keras
import numpy as np
import tensorflow as tf

from mayo_lite.models.cloning import clone, consumers, copy_weights
from mayo_lite.models.folding import fold_batch_norms
from mayo_lite.quantize.base import Quantizer
from mayo_lite.quantize.models import strip_quantizers


@keras.saving.register_keras_serializable(package="mayo_lite")
class FakeQuant(keras.layers.Layer):
    """`tf.quantization.fake_quant_with_min_max_args`: `num_bits`-bit affine quantization of [minimum, maximum]."""

    def __init__(self, minimum, maximum, num_bits=8, relu=False, **kwargs):
        super().__init__(**kwargs)
        self.minimum, self.maximum, self.num_bits = float(minimum), float(maximum), int(num_bits)
        self.relu = bool(relu)

    def call(self, inputs):
        if self.relu:  # ReLU first: the FakeQuant is then the last operation the converter fuses the layer into
            inputs = tf.nn.relu(inputs)
        return tf.quantization.fake_quant_with_min_max_args(inputs, min=self.minimum, max=self.maximum,
                                                            num_bits=self.num_bits)

    def get_config(self):
        return {**super().get_config(), "minimum": self.minimum, "maximum": self.maximum, "num_bits": self.num_bits,
                "relu": self.relu}


@keras.saving.register_keras_serializable(package="mayo_lite")
class FakeQuantConv2D(keras.layers.Conv2D):
    """A Conv2D whose kernel passes through a per-output-channel FakeQuant (symmetric, narrow range) with the given
    steps: the converter stores exactly these int8 values (the trained fixed-point grid) instead of re-quantizing
    the float kernel over its own range."""

    def __init__(self, *args, kernel_steps=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.kernel_steps = [float(step) for step in kernel_steps]

    def call(self, inputs):
        limit = 127.0 * tf.constant(self.kernel_steps, tf.float32)
        kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(self.kernel, -limit, limit, num_bits=8,
                                                                          narrow_range=True)
        outputs = self.convolution_op(inputs, kernel)
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)

    def get_config(self):
        return {**super().get_config(), "kernel_steps": self.kernel_steps}


def kernel_steps(quantized, plain, folded):
    """{layer name: per-output-channel step} for the Conv2D layers of `folded` whose kernel is a fixed-point grid of
    at most 8 bits in `quantized` (the training model): the grid's step, times each channel's batch-norm scale (the
    folded kernel over the stripped one, `plain`)."""
    steps = {}
    for layer in quantized._flatten_layers(include_self=False):
        found = affine_range(getattr(layer, "kernel_quantizer", None))
        if found is None or type(layer).__name__ != "MaskedConv2D":
            continue
        step = (found[1] - found[0]) / (2 ** found[2] - 1)
        before = keras.ops.convert_to_numpy(plain.get_layer(layer.name).kernel)
        after = keras.ops.convert_to_numpy(folded.get_layer(layer.name).kernel)
        before = before.reshape(-1, before.shape[-1])
        after = after.reshape(-1, after.shape[-1])
        scales = [float(np.median(np.abs(a[b != 0] / b[b != 0]))) if (b != 0).any() else 1.0
                  for a, b in zip(after.T, before.T)]
        steps[layer.name] = [step * scale for scale in scales]
    return steps


def affine_range(quantizer):
    """(min, max, bits) of a fixed-point quantizer's grid when an int8 tensor holds it exactly, else None: width w
    ≤ 8 and point p give the values k / 2^(w−p), k in [−2^(w−1), 2^(w−1) − 1], an affine grid with zero point
    2^(w−1)."""
    describe = quantizer.describe() if isinstance(quantizer, Quantizer) and quantizer.enable else {}
    if set(describe) != {"width", "point"} or describe["width"] > 8 or not hasattr(quantizer, "initial_point"):
        return None
    width, point = describe["width"], describe["point"]
    step = 2.0 ** (point - width)
    return -(2 ** (width - 1)) * step, (2 ** (width - 1) - 1) * step, width


def _relu_after(layer):
    """The ReLU activation layer that alone reads `layer`'s output, or None."""
    following = consumers(layer)
    if len(following) == 1 and isinstance(following[0], keras.layers.Activation) and \
            keras.activations.serialize(following[0].activation) in ("relu", {"class_name": "function",
                                                                               "config": "relu"}):
        return following[0]
    return None


def with_fake_quant(model, steps=None):
    """A copy of `model` whose activation quantizers with an int8 grid are FakeQuant layers, and whose Conv2D layers
    named in `steps` ({name: per-channel kernel steps}) quantize their kernels to those steps; returns the copy and
    how many activations were replaced. Mayo quantizes before the ReLU; a fixed-point grid contains 0, so ReLU then
    FakeQuant computes the same, and puts the learned range on the tensor the converter keeps."""
    steps = steps or {}
    ranges, moved = {}, {}
    for layer in model._flatten_layers(include_self=False):
        found = affine_range(layer) if getattr(layer, "observe", False) else None
        if found is not None:
            relu = _relu_after(layer)
            key = id(layer) if relu is None else id(relu)
            ranges[key] = (*found, relu is not None)
            if relu is not None:
                moved[id(layer)] = layer
    if not ranges and not steps:
        return model, 0

    def replace(layer):
        if type(layer) is keras.layers.Conv2D and layer.name in steps:
            return FakeQuantConv2D.from_config({**layer.get_config(), "kernel_steps": steps[layer.name]})
        if id(layer) in moved:
            return keras.layers.Identity(name=layer.name)
        if id(layer) not in ranges:
            return None
        minimum, maximum, bits, relu = ranges[id(layer)]
        return FakeQuant(minimum, maximum, bits, relu=relu, name=layer.name)
    copied, replaced = clone(model, replace)
    for layer in model._flatten_layers(include_self=False):
        if id(layer) in replaced and layer.name in steps:
            copy_weights(layer, replaced[id(layer)])
    return copied, len(ranges)


def int8_ready(model):
    """What the TensorFlow Lite converter should see of a quantization-aware `model`: its quantized weights baked
    into plain layers (`strip_quantizers`), batch norms folded, and its fixed-point grids as FakeQuant operations.
    Returns (the stripped model, the folded one for float formats, the one for int8, the names of the batch norms
    folded, how many activation ranges were learned)."""
    plain = strip_quantizers(model)
    folded, norms = fold_batch_norms(plain)
    int8, learned = with_fake_quant(folded, kernel_steps(model, plain, folded))
    return plain, folded, int8, norms, learned
