"""The masked layers that static pruning writes into (docs/design/pruning-algorithm.md): drop-in `Conv2D`,
`DepthwiseConv2D` and `Dense` layers whose effective kernel is `kernel · mask`. `mayo_lite.prune` computes the
masks; `GatedConv2D(use_mask=True)` takes the same `MaskConstraint`, so kernel pruning and FBS compose.
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


def kernel_variable(layer):
    """The variable behind a layer's kernel: `Conv2D` and `Dense` keep it as `_kernel` (their `kernel` property may
    add LoRA terms), `DepthwiseConv2D` as `kernel`."""
    variable = getattr(layer, "_kernel", None)
    return layer.kernel if variable is None else variable


def constrain_to_mask(layer):
    """Gives a built layer's kernel variable a `MaskConstraint` on its `mask`, after its own constraint."""
    # `build` passes `kernel_constraint` to add_weight; Keras 3 variables accept a new constraint at any time
    # (`Variable.constraint` has a setter), and the mask only exists after the base class's build.
    variable = kernel_variable(layer)
    variable.constraint = MaskConstraint(layer.mask, getattr(layer, "kernel_constraint", None)
                                         or getattr(layer, "depthwise_constraint", None))


def _add_mask(layer):
    layer.mask = layer.add_weight(name="mask", shape=kernel_variable(layer).shape, initializer="ones",
                                  trainable=False)
    constrain_to_mask(layer)


class _Masked:
    """What every masked layer shares: the mask is state a checkpoint must keep, while the Keras base classes save
    only their kernel and bias."""

    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)


@keras.saving.register_keras_serializable(package="mayo_lite")
class MaskedConv2D(_Masked, keras.layers.Conv2D):
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
        _add_mask(self)

    def call(self, inputs):
        outputs = self.convolution_op(inputs, self.kernel * self.mask)
        if self.use_bias:
            channel_axis = -1 if self.data_format == "channels_last" else 1
            bias_shape = [1] * len(outputs.shape)
            bias_shape[channel_axis] = self.filters
            outputs = outputs + ops.reshape(self.bias, bias_shape)
        return outputs if self.activation is None else self.activation(outputs)


@keras.saving.register_keras_serializable(package="mayo_lite")
class MaskedDepthwiseConv2D(_Masked, keras.layers.DepthwiseConv2D):
    """Depthwise 2D convolution with a non-trainable pruning mask, as `MaskedConv2D` is to `Conv2D`: the layer
    convolves with `kernel · mask` (kernel shape `(K_h, K_w, C_in, depth_multiplier)`).

    Args:
        Those of `keras.layers.DepthwiseConv2D`; a `depthwise_constraint` is applied before the mask.
    """

    def build(self, input_shape):
        super().build(input_shape)
        _add_mask(self)

    def call(self, inputs):
        outputs = ops.depthwise_conv(inputs, self.kernel * self.mask, strides=self.strides, padding=self.padding,
                                     dilation_rate=self.dilation_rate, data_format=self.data_format)
        if self.use_bias:
            channel_axis = -1 if self.data_format == "channels_last" else 1
            bias_shape = [1] * len(outputs.shape)
            bias_shape[channel_axis] = outputs.shape[channel_axis]
            outputs = outputs + ops.reshape(self.bias, bias_shape)
        return outputs if self.activation is None else self.activation(outputs)


@keras.saving.register_keras_serializable(package="mayo_lite")
class MaskedDense(_Masked, keras.layers.Dense):
    """Fully connected layer with a non-trainable pruning mask: `activation(inputs · (kernel · mask) + bias)`.

    Args:
        Those of `keras.layers.Dense`; a `kernel_constraint` is applied before the mask. LoRA and quantization
        are not supported (they replace the kernel the mask applies to).
    """

    def build(self, input_shape):
        super().build(input_shape)
        _add_mask(self)

    def call(self, inputs, training=None):
        outputs = ops.matmul(inputs, self._kernel * self.mask)
        if self.bias is not None:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)


# Keras layer class -> its masked counterpart (`mayo_lite.prune.add_masks`).
MASKED_LAYERS = {
    keras.layers.Conv2D: MaskedConv2D,
    keras.layers.DepthwiseConv2D: MaskedDepthwiseConv2D,
    keras.layers.Dense: MaskedDense,
}
