"""Removing size-1 axes, as slim's classifiers squeeze a 1×1 convolution's output into logits."""

import keras
from keras import ops

from mayo_lite.errors import ArgumentError


def non_batch_axes(axis):
    """`axis` (an int or a list) as a list of axes, none of them the batch axis."""
    axes = [axis] if isinstance(axis, int) else list(axis)
    if not axes or any(not isinstance(a, int) or a == 0 for a in axes):
        raise ArgumentError("axis", "non-batch axes", axis)
    return axes


@keras.saving.register_keras_serializable(package="mayo_lite")
class Squeeze(keras.layers.Layer):
    """Removes the size-1 axes `axis` from its input.

    Keras' `Reshape` needs the target shape spelled out; Mayo's configs name the axes instead.

    Args:
        axis: an axis or list of axes of size 1 (batch axis excluded).
    """

    def __init__(self, axis=(1, 2), **kwargs):
        super().__init__(**kwargs)
        self.axis = non_batch_axes(axis)

    def build(self, input_shape):
        rank = len(input_shape)
        for a in self.axis:
            if input_shape[a % rank] != 1:
                raise ArgumentError("axis", f"axes of size 1 (axis {a} has size {input_shape[a % rank]} in the "
                                            f"input shape {tuple(input_shape)})", self.axis)

    def call(self, inputs):
        return ops.squeeze(inputs, axis=tuple(self.axis))

    def compute_output_shape(self, input_shape):
        rank = len(input_shape)
        axes = {a % rank for a in self.axis}
        return tuple(d for i, d in enumerate(input_shape) if i not in axes)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
