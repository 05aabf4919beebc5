"""Deploying a quantization-aware model as int8: the activations' fixed-point quantizers become TensorFlow's
FakeQuant operations with the same grid, which the TensorFlow Lite converter reads as the tensors' int8 ranges (the
ranges learned in training, not a fresh calibration), as TensorFlow Model Optimization's QAT models do."""

import keras
import tensorflow as tf

from mayo_lite.net.cloning import clone, consumers
from mayo_lite.quantize.base import Quantizer


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


def with_fake_quant(model):
    """A copy of `model` whose activation quantizers with an int8 grid are FakeQuant layers; returns the copy and
    how many were replaced (0: `model` itself). Mayo quantizes before the ReLU; a fixed-point grid contains 0, so
    ReLU then FakeQuant computes the same, and puts the learned range on the tensor the converter keeps."""
    ranges, moved = {}, {}
    for layer in model._flatten_layers(include_self=False):
        found = affine_range(layer) if getattr(layer, "observe", False) else None
        if found is not None:
            relu = _relu_after(layer)
            key = id(layer) if relu is None else id(relu)
            ranges[key] = (*found, relu is not None)
            if relu is not None:
                moved[id(layer)] = layer
    if not ranges:
        return model, 0

    def replace(layer):
        if id(layer) in moved:
            return keras.layers.Identity(name=layer.name)
        if id(layer) not in ranges:
            return None
        minimum, maximum, bits, relu = ranges[id(layer)]
        return FakeQuant(minimum, maximum, bits, relu=relu, name=layer.name)
    copied, _ = clone(model, replace)
    return copied, len(ranges)
