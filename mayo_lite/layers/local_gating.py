"""Input gating: Mayo's `local_gating` layer, which switches off, per image, the channels of a feature map whose
mean magnitude is small (the input-gated models of Mayo's `models/gate/input/`)."""

import keras
from keras import ops

from mayo_lite.errors import ArgumentError


@keras.saving.register_keras_serializable(package="mayo_lite")
class LocalGating(keras.layers.Layer):
    """Zeroes each image's channels whose spatial mean has a magnitude of at most `alpha`:
    `y[n, h, w, c] = x[n, h, w, c] · [ |mean_hw x[n, :, :, c]| > alpha ]`.

    Mayo's `threshold_based` policy (`mayo/net/tf/layers.py` before its gated convolutions replaced it): the gate
    reads its input without gradient, so it learns nothing and costs one mean per channel; no weights. Keras has no
    such layer.

    Args:
        alpha: the threshold, a number ≥ 0.
    """

    def __init__(self, alpha, **kwargs):
        super().__init__(**kwargs)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
            raise ArgumentError("alpha", "a number >= 0", alpha)
        self.alpha = float(alpha)

    def gate(self, inputs):
        """Per image and channel, 1.0 where the channel is kept, 0.0 where it is switched off: (N, 1, 1, C)."""
        means = ops.mean(ops.stop_gradient(inputs), axis=(1, 2), keepdims=True)
        return ops.cast(ops.abs(means) > self.alpha, inputs.dtype)

    def call(self, inputs):
        return inputs * self.gate(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}
