"""The masked convolution that static pruning writes into (docs/design/pruning-algorithm.md): a drop-in Conv2D whose
effective kernel is `kernel · mask`. `mayo_lite.prune` computes the masks; `GatedConv2D(use_mask=True)` takes the
same `MaskConstraint`, so kernel pruning and FBS compose.
"""

import keras
from keras import ops


class MaskConstraint(keras.constraints.Constraint):
    """Multiplies a kernel by its layer's mask, after another constraint if one is given.

    Keras optimizers apply `variable.constraint` after every update, so a pruned weight is exactly zero again
    after each step whatever the optimizer did to it: momentum, Adam's moments and weight decay can all move a
    weight whose gradient is zero. (The reference zeroes the gradients of zero weights before each SGD step,
    which is the same thing for plain SGD only.)

    It holds the layer's `mask` variable, so it belongs to one built layer and is never part of a config: the
    layer creates it in `build`, and the layer's `get_config` keeps reporting the user's own `kernel_constraint`.

    Args:
        mask: the mask variable (or tensor) of the kernel's shape; 1 keeps a weight, 0 prunes it.
        constraint: the layer's own kernel constraint, applied first, or None.
    """

    def __init__(self, mask, constraint=None):
        self.mask = mask
        self.constraint = keras.constraints.get(constraint)

    def __call__(self, w):
        if self.constraint is not None:
            w = self.constraint(w)
        return w * ops.cast(self.mask, w.dtype)


def constrain_to_mask(layer):
    """Gives a built convolution's kernel variable a `MaskConstraint` on its `mask`, after its own constraint."""
    # Conv2D.build passes `kernel_constraint` to add_weight; Keras 3 variables accept a new constraint at any
    # time (`Variable.constraint` has a setter), and the mask only exists after Conv2D.build.
    layer._kernel.constraint = MaskConstraint(layer.mask, layer.kernel_constraint)


@keras.saving.register_keras_serializable(package="mayo_lite")
class MaskedConv2D(keras.layers.Conv2D):
    """2D convolution with a non-trainable pruning mask: the layer convolves with `kernel · mask`. With a mask of
    ones it computes exactly what `keras.layers.Conv2D` computes.

    The mask (a weight named `mask`, ones when built) is saved and loaded with the kernel and bias, in
    `get_weights`/`set_weights` (order: kernel, bias, mask) and in `.keras` files. The kernel carries a
    `MaskConstraint`, so during fine-tuning every optimizer step leaves the pruned weights exactly zero.

    Args:
        Those of `keras.layers.Conv2D`; a `kernel_constraint` is applied before the mask.

    Call arguments:
        inputs: a 4D tensor, as for `keras.layers.Conv2D`.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.mask = self.add_weight(name="mask", shape=self._kernel.shape, initializer="ones", trainable=False)
        constrain_to_mask(self)

    def call(self, inputs):
        outputs = self.convolution_op(inputs, self.kernel * self.mask)
        if self.use_bias:
            channel_axis = -1 if self.data_format == "channels_last" else 1
            bias_shape = [1] * len(outputs.shape)
            bias_shape[channel_axis] = self.filters
            outputs = outputs + ops.reshape(self.bias, bias_shape)
        return outputs if self.activation is None else self.activation(outputs)

    # Conv2D saves only its kernel and bias; the mask is state that a checkpoint must keep.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)
