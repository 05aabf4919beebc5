"""The Walsh–Hadamard transform across channels: Mayo's `hadamard` layer, which mixes channels with ±1 weights
and no multiplication (Mayo's `mayo/net/tf/hadamard.py`)."""

import math

import keras
from keras import ops

from mayo_lite.layers.arguments import Arguments


@keras.saving.register_keras_serializable(package="mayo_lite")
class Hadamard(keras.layers.Layer):
    """Multiplies each pixel's channel vector by the Sylvester Hadamard matrix H_C (entries ±1, not normalised):
    `y = x · H_C`, `H_1 = [1]`, `H_2n = [[H_n, H_n], [H_n, −H_n]]` (`scipy.linalg.hadamard`'s order), computed as
    log2(C) butterflies — C·log2(C) additions, no multiplication (Keras has no such layer).

    Args:
        variable_scales: multiply the channels first by trainable scales, initialised around 1/√C (Mayo's
            `variable_scales`).
    """

    def __init__(self, variable_scales=False, **kwargs):
        super().__init__(**kwargs)
        self.variable_scales = bool(variable_scales)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels < 1 or 2 ** round(math.log2(channels)) != channels:
            raise Arguments(self.name).invalid("input_shape", "a power of 2 channels", tuple(input_shape))
        self.channels = channels
        self.scales = None
        if self.variable_scales:
            self.scales = self.add_weight(
                name="channel_scale", shape=(channels,),
                initializer=keras.initializers.TruncatedNormal(1 / math.sqrt(channels), 0.001))

    def call(self, inputs):
        values = inputs * self.scales if self.scales is not None else inputs
        shape = ops.shape(values)
        # H_C is the Kronecker product of log2(C) copies of H_2: one butterfly per binary digit of the channel.
        values = ops.reshape(values, (-1, self.channels))
        half = 1
        while half < self.channels:
            pairs = ops.reshape(values, (-1, self.channels // (2 * half), 2, half))
            low, high = pairs[:, :, 0, :], pairs[:, :, 1, :]
            values = ops.reshape(ops.stack([low + high, low - high], axis=2), (-1, self.channels))
            half *= 2
        return ops.reshape(values, shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "variable_scales": self.variable_scales}
