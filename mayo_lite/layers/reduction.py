"""A mean over chosen axes, as slim's models use `tf.reduce_mean` for global pooling."""

import keras
from keras import ops

from mayo_lite.layers.squeeze import non_batch_axes


@keras.saving.register_keras_serializable(package="mayo_lite")
class ReduceMean(keras.layers.Layer):
    """Averages its input over `axis`.

    Keras has `GlobalAveragePooling2D` for the spatial axes only; Mayo's configs reduce over any axes, with or
    without keeping them.

    Args:
        axis: an axis or list of axes (batch axis excluded).
        keepdims: keep the reduced axes with size 1.
    """

    def __init__(self, axis=(1, 2), keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.axis = non_batch_axes(axis)
        self.keepdims = bool(keepdims)

    def call(self, inputs):
        return ops.mean(inputs, axis=self.axis, keepdims=self.keepdims)

    def compute_output_shape(self, input_shape):
        rank = len(input_shape)
        axes = {a % rank for a in self.axis}
        if self.keepdims:
            return tuple(1 if i in axes else d for i, d in enumerate(input_shape))
        return tuple(d for i, d in enumerate(input_shape) if i not in axes)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "keepdims": self.keepdims}
