"""Moving each spatial patch into the channels, as YOLO-style networks reorganise a feature map."""

import keras
from keras import ops

from mayo_lite.errors import ArgumentError


@keras.saving.register_keras_serializable(package="mayo_lite")
class SpaceToDepth(keras.layers.Layer):
    """Moves each `block_size` × `block_size` patch into the channels, as `tf.nn.space_to_depth` (NHWC): output
    channel `(dy · block_size + dx) · C + c` holds input channel `c` at offset (dy, dx) of its patch.

    Keras has no such layer; Mayo's files use it (YOLO-style reorganisation).

    Args:
        block_size: the patch side, at least 2; height and width must be multiples of it.
    """

    def __init__(self, block_size, **kwargs):
        super().__init__(**kwargs)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
            raise ArgumentError("block_size", "an integer >= 2", block_size)
        self.block_size = block_size

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if any(size is not None and size % self.block_size for size in (height, width)):
            raise ValueError(f"SpaceToDepth: height and width ({height}×{width}) must be multiples of block_size "
                             f"{self.block_size}")

    def call(self, inputs):
        size = self.block_size
        _, height, width, channels = inputs.shape
        patches = ops.reshape(inputs, (-1, height // size, size, width // size, size, channels))
        patches = ops.transpose(patches, (0, 1, 3, 2, 4, 5))
        return ops.reshape(patches, (-1, height // size, width // size, size * size * channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        size = self.block_size
        return (batch, None if height is None else height // size, None if width is None else width // size,
                channels * size * size)

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}
