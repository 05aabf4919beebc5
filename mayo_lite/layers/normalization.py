"""Local response normalisation across channels (AlexNet, TF-slim's CifarNet)."""

import keras
import tensorflow as tf

from mayo_lite.errors import ArgumentError


@keras.saving.register_keras_serializable(package="mayo_lite")
class LocalResponseNormalization(keras.layers.Layer):
    """Divides each activation by a power of the sum of squares of its neighbours across channels.

    Keras 3 has no LRN layer; this wraps `tf.nn.local_response_normalization` with the same arguments:
    `output = input / (bias + alpha * sum(input[c-r..c+r] ** 2)) ** beta`.

    Args:
        depth_radius: half-width r of the channel window.
        bias, alpha, beta: the constants of the formula.
    """

    def __init__(self, depth_radius=5, bias=1.0, alpha=1.0, beta=0.5, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(depth_radius, int) or depth_radius < 0:
            raise ArgumentError("depth_radius", "a non-negative integer", depth_radius)
        self.depth_radius = depth_radius
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        return tf.nn.local_response_normalization(
            inputs, depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
                "alpha": self.alpha, "beta": self.beta}
