"""Removing size-1 axes, as slim's classifiers squeeze a 1×1 convolution's output into logits."""

import keras
from keras import ops


def non_batch_axes(axis):
    """`axis` (an int or a list) as a list of axes, none of them the batch axis."""
    axes = [axis] if isinstance(axis, int) else list(axis)
    if not axes or any(not isinstance(a, int) or a == 0 for a in axes):
        raise ValueError(
            f"Invalid value received for argument `axis`. Expected non-batch axes. Received: axis={axis}")
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
                raise ValueError(
                    f"Invalid value received for argument `axis`. Axis {a} has size {input_shape[a % rank]}, "
                    f"not 1. Received: input_shape={tuple(input_shape)}")

    def call(self, inputs):
        return ops.squeeze(inputs, axis=tuple(self.axis))

    def compute_output_shape(self, input_shape):
        rank = len(input_shape)
        axes = {a % rank for a in self.axis}
        return tuple(d for i, d in enumerate(input_shape) if i not in axes)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


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
            raise ValueError(f"Invalid value received for argument `block_size`. Expected an integer >= 2. "
                             f"Received: block_size={block_size!r}")
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
