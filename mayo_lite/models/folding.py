"""Batch norm folded into the layer before it, for inference: `fold_batch_norms` gives a copy of any Keras model in
which each `Conv2D`/`DepthwiseConv2D`/`Dense` → `BatchNormalization` pair is one layer with a bias, so every
export format (and every runtime) computes one layer where training had two."""

import keras
import numpy as np

from mayo_lite.models.cloning import all_layers, calls, clone, consumers

FOLDABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _batch_norm_after(layer):
    if type(layer) not in FOLDABLE or calls(layer) != 1:
        return None
    if getattr(layer.activation, "__name__", "linear") != "linear":
        return None
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    following = consumers(layer)
    if len(following) != 1 or not isinstance(following[0], keras.layers.BatchNormalization):
        return None
    batch_norm = following[0]
    if batch_norm.axis not in (-1, len(layer.output.shape) - 1, [-1]) or calls(batch_norm) != 1:
        return None
    return batch_norm


def _folded_values(layer, batch_norm):
    """The kernel and bias computing `BN(layer(x))` in inference (moving statistics)."""
    def value(variable, default):
        return keras.ops.convert_to_numpy(variable).astype(np.float64) if variable is not None else default

    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    channels = int(layer.output.shape[-1])
    gamma = value(batch_norm.gamma, np.ones(channels))
    beta = value(batch_norm.beta, np.zeros(channels))
    scale = gamma / np.sqrt(value(batch_norm.moving_variance, None) + batch_norm.epsilon)
    bias = value(layer.bias, np.zeros(channels)) if layer.use_bias else np.zeros(channels)
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # output channel c·M + m is kernel[..., c, m]
        folded = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        folded = kernel * scale
    return folded, (bias - value(batch_norm.moving_mean, None)) * scale + beta


def fold_batch_norms(model):
    """A copy of `model` with every batch norm that follows a linear `Conv2D`, `DepthwiseConv2D` or `Dense` (and
    nothing else reads that layer's output) folded into it: same inference outputs up to float rounding.

    Returns the copy and the names of the batch norms folded.
    """
    pairs = {}
    for layer in all_layers(model):
        batch_norm = _batch_norm_after(layer)
        if batch_norm is not None:
            pairs[id(layer)] = (layer, batch_norm)
    if not pairs:
        return model, []
    folded_norms = {id(batch_norm) for _, batch_norm in pairs.values()}

    def replace(layer):
        if id(layer) in pairs:
            return type(layer).from_config({**layer.get_config(), "use_bias": True, "bias_initializer": "zeros"})
        return layer if id(layer) in folded_norms else None

    def call(original, layer, *args, **kwargs):
        return args[0] if id(original) in folded_norms else layer(*args, **kwargs)

    copied, replaced = clone(model, replace, call)
    for key, (layer, batch_norm) in pairs.items():
        kernel, bias = _folded_values(layer, batch_norm)
        values = {"kernel": kernel, "bias": bias}
        for variable in replaced[key].weights:
            variable.assign(values[variable.path.rsplit("/", 1)[-1]].astype(variable.dtype))
    return copied, [batch_norm.name for _, batch_norm in pairs.values()]


def _keras_equivalent(layer):
    """The plain Keras layer computing what a project layer computes, or None."""
    from mayo_lite.layers import ReduceMean, Squeeze

    rank = len(layer.input.shape) if isinstance(layer, (ReduceMean, Squeeze)) else 0
    if isinstance(layer, ReduceMean) and rank == 4 and {a % rank for a in layer.axis} == {1, 2}:
        return keras.layers.GlobalAveragePooling2D(keepdims=layer.keepdims, name=layer.name,
                                                   dtype=layer.dtype_policy)
    if isinstance(layer, Squeeze):
        return keras.layers.Reshape(tuple(layer.output.shape[1:]), name=layer.name, dtype=layer.dtype_policy)
    return None


def with_keras_layers(model):
    """A copy of `model` in which this project's weightless layers with a Keras equivalent (a mean over height
    and width, a squeeze) are that Keras layer, so an exported `.keras` file loads without mayo-lite when nothing
    else of it needs it. Returns the copy and the names of the layers that still come from mayo-lite."""
    if not any(_keras_equivalent(layer) is not None for layer in all_layers(model)):
        copied = model
    else:
        copied, _ = clone(model, _keras_equivalent)
    return copied, [layer.name for layer in all_layers(copied) if type(layer).__module__.startswith("mayo_lite")]
