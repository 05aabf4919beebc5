"""What every step of a sparse program shares: a Keras layer's weights read as NumPy arrays and folded for inference,
made into the program's own variables, and the error for what sparse execution cannot run."""

import keras
import numpy as np
import tensorflow as tf

from mayo_lite.layers.masking import kernel_variable
from mayo_lite.sparse.features import nonzero


class UnsupportedModel(ValueError):
    """The model has a layer or a setting that sparse execution does not handle; the message says which."""


def as_array(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), np.float32)


def variable(value, name):
    return tf.Variable(np.ascontiguousarray(value, np.float32), trainable=False, name=name)


def batch_norm_affine(layer):
    """(scale, offset) of a `BatchNormalization` layer in inference: `x·scale + offset` per channel."""
    if layer.axis not in (-1, len(layer.input.shape) - 1):
        raise UnsupportedModel(f"layer {layer.name}: a batch norm over axis {layer.axis}, not the channels")
    inverse = 1.0 / np.sqrt(as_array(layer.moving_variance) + layer.epsilon)
    scale = inverse * (as_array(layer.gamma) if layer.scale else 1.0)
    offset = (as_array(layer.beta) if layer.center else 0.0) - as_array(layer.moving_mean) * scale
    return scale.astype(np.float32), np.broadcast_to(offset, scale.shape).astype(np.float32)


def folded_kernel(layer):
    """The kernel a layer computes with: `kernel · mask`, quantized when the layer has a kernel quantizer."""
    if hasattr(layer, "effective_kernel"):  # a gated convolution
        return as_array(layer.effective_kernel())
    if hasattr(layer, "masked_kernel"):  # a masked (and perhaps quantized) layer
        return as_array(layer.masked_kernel(kernel_variable(layer)))
    kernel = as_array(layer.kernel)
    return kernel * as_array(layer.mask) if getattr(layer, "mask", None) is not None else kernel


def folded_bias(layer, channels):
    """The bias a layer adds (quantized when it has a bias quantizer), zeros without one."""
    if not getattr(layer, "use_bias", False):
        return np.zeros(channels, np.float32)
    return as_array(layer.effective_bias() if hasattr(layer, "effective_bias") else layer.bias)


ELEMENTWISE = {"relu", "relu6", "linear", "sigmoid", "tanh", "elu", "selu", "softplus", "softsign", "silu",
               "swish", "gelu", "hard_sigmoid", "hard_silu", "hard_swish", "leaky_relu", "mish", "exponential"}


def elementwise(activation):
    """Whether a Keras activation acts on each value alone (so it can run on the present channels only)."""
    return getattr(activation, "__name__", None) in ELEMENTWISE


def constant_function(function, values):
    """`function` of a NumPy array, computed eagerly even while a program is being traced: fills are constants."""
    with tf.init_scope():
        return np.asarray(keras.ops.convert_to_numpy(function(tf.constant(values))), np.float32)


def apply_to_fill(activation, fill, width):
    values = np.zeros(width, np.float32) if fill is None else fill
    return nonzero(constant_function(activation, values[None])[0])


def spans_whole_kernel(layer):
    """True when every output position sees the whole kernel window, so a constant input channel adds the same
    amount everywhere: 1×1 kernels, or `valid` padding."""
    return layer.padding == "valid" or all(size == 1 for size in layer.kernel_size)


def convolve(layer, inputs, kernel):
    return tf.nn.conv2d(inputs, kernel, strides=(1, *layer.strides, 1), padding=layer.padding.upper(),
                        dilations=(1, *layer.dilation_rate, 1))


class Step(tf.Module):
    """One layer of the model, prepared; called on the features of its inputs."""

    def __init__(self, layer):
        super().__init__(name=None)
        self.layer_name = layer.name
        # Not tracked: a SavedModel of the program holds its own folded variables, not the Keras layer's too.
        object.__setattr__(self, "layer", layer)

    def _fold(self, layer, affine):
        """Creates `kernel` and `bias` of a Conv2D or Dense layer with its mask and `affine` (a following batch
        norm's scale and offset per output channel) folded in; returns the kernel as an array."""
        kernel = folded_kernel(layer)
        bias = folded_bias(layer, kernel.shape[-1])
        if affine is not None:
            kernel, bias = kernel * affine[0], bias * affine[0] + affine[1]
        self.kernel = variable(kernel, "kernel")
        self.bias = variable(bias, "bias")
        return kernel
