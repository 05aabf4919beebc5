"""A channel-pruned network made really narrower, on any Keras model: the output channels that channel pruning
(network slimming) switched off removed from their convolution, its batch norm and every layer that reads them, so
the static network runs fewer MACs in any runtime instead of multiplying by zeros.

A channel is removed only when its output is exactly zero whatever the input, all the way to the layer that
consumes it. Its convolution's kernel column is all zero (masked or not), so is its bias, and the convolution's
activation maps 0 to 0. Then its path is followed through the graph: layers that keep channels one for one
(batch norms, depthwise convolutions, activations, pooling, padding, dropout) lose it too, but only if they keep it
zero there (a batch norm whose scale and offset `prune_model(granularity="channel")` zeroed does; filter pruning
leaves the offset, and `relu(beta)` is a constant the next layer needs); a convolution or dense layer drops the
matching input rows, and `Flatten` the matching positions. Where it reaches anything else (an addition or a
concatenation joining branches, an output of the model, a layer that mixes channels such as local response
normalization, a layer that lights a zero channel), the convolution it comes from keeps all of its channels. So a
ResNet's inner convolutions narrow while those that feed an addition stay as they are.
"""

import keras
import numpy as np

from mayo_lite.layers import MASKED_LAYERS, ReduceMean, Squeeze
from mayo_lite.models.cloning import all_layers, calls, check_model, clone, copy_weights

_PLAIN = {masked: plain for plain, masked in MASKED_LAYERS.items()}
_CONVOLUTIONS = (keras.layers.Conv2D, MASKED_LAYERS[keras.layers.Conv2D])
_DEPTHWISE = (keras.layers.DepthwiseConv2D, MASKED_LAYERS[keras.layers.DepthwiseConv2D])
_DENSE = (keras.layers.Dense, MASKED_LAYERS[keras.layers.Dense])
# Weightless layers that act on each channel alone (height and width only) and keep a zero channel zero.
_SPATIAL = (keras.layers.Dropout, keras.layers.SpatialDropout2D, keras.layers.MaxPooling2D,
            keras.layers.AveragePooling2D, keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
            keras.layers.ZeroPadding2D, keras.layers.Cropping2D, keras.layers.UpSampling2D, keras.layers.Identity)
_ACTIVATIONS = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU)


def weight_value(layer, name):
    """The NumPy value of `layer`'s weight named `name` (`kernel`, `mask`, `gamma`...), or None."""
    for variable in layer.weights:
        if variable.path.rsplit("/", 1)[-1] == name:
            return np.asarray(variable.numpy())
    return None


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _convolution(layer):
    """Whether `layer` is a plain or masked `Conv2D` (exactly: a subclass may compute something else) whose output
    channels can be sliced."""
    return type(layer) in _CONVOLUTIONS and layer.groups == 1 and _channels_last(layer)


def _keeps_zero(function):
    return not np.any(keras.ops.convert_to_numpy(function(keras.ops.zeros((1, 4)))))


def _zero_channels(layer):
    """A boolean per output channel of convolution `layer`: whether that channel's output is zero for any input."""
    kernel, mask = weight_value(layer, "kernel"), weight_value(layer, "mask")
    effective = kernel * mask if mask is not None else kernel
    zero = ~np.any(effective.reshape(-1, effective.shape[-1]), axis=0)
    bias = weight_value(layer, "bias")
    if bias is not None:
        zero &= bias == 0
    return zero & _keeps_zero(layer.activation)


def _lit(layer, removed):
    """Whether `layer`, which keeps its input's channels, outputs anything but zero at the `removed` output
    channels when its input is zero there (a batch norm's offset, a depthwise convolution's bias)."""
    if isinstance(layer, keras.layers.BatchNormalization):
        shape = (1,) * (len(layer.input.shape) - 1) + (int(layer.input.shape[-1]),)
        output = keras.ops.convert_to_numpy(layer(keras.ops.zeros(shape), training=False))
        return bool(np.any(output.reshape(-1)[removed]))
    if type(layer) in _DEPTHWISE:
        bias = weight_value(layer, "bias")
        return (bias is not None and bool(np.any(bias[removed]))) or not _keeps_zero(layer.activation)
    return False


def _graph(model):
    """The model's layers in the order data reaches them, or None for what the walk does not follow (a nested
    model, a layer called more than once)."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if any(isinstance(layer, keras.Model) or calls(layer) != 1 for layer in layers):
        return None
    return layers


class _Blocked(Exception):
    """Channels of convolution `source` reach a layer that cannot lose them."""

    def __init__(self, source):
        super().__init__(source)
        self.source = source


def _passes(layer, width):
    """The output channel indices of a layer that keeps its input's channels, given the input's kept `width`
    indices; None if `layer` does not."""
    if isinstance(layer, _SPATIAL) and _channels_last(layer):
        return width
    if isinstance(layer, _ACTIVATIONS) and _keeps_zero(layer):
        return width
    rank = len(layer.input.shape)
    if isinstance(layer, ReduceMean) and (rank - 1) not in {a % rank for a in layer.axis}:
        return width
    if isinstance(layer, Squeeze) and (rank - 1) not in {a % rank for a in layer.axis}:
        return width
    if isinstance(layer, keras.layers.BatchNormalization) and layer.axis in (-1, rank - 1, [-1], [rank - 1]):
        return width
    if type(layer) in _DEPTHWISE and _channels_last(layer):
        multiplier = layer.depth_multiplier
        return (width[:, None] * multiplier + np.arange(multiplier)).ravel()
    return None


def _walk(model, kept):
    """{layer name: (input channel indices or None, output channel indices or None)} for the layers that change when
    the convolutions of `kept` lose their channels; `_Blocked` names a convolution whose channels cannot go."""
    narrowed = {}  # id(tensor) -> (kept channel indices, the convolution they come from)
    plan = {}
    outputs = {id(tensor) for tensor in model.outputs}
    for layer in _graph(model):
        inputs = keras.tree.flatten(layer.input)
        incoming = [narrowed[id(tensor)] for tensor in inputs if id(tensor) in narrowed]
        channels, source = incoming[0] if incoming else (None, None)
        out = None
        if incoming and len(inputs) != 1:
            raise _Blocked(source)
        if _convolution(layer) or type(layer) in _DENSE:
            out = kept.get(layer.name)
            source = layer.name
        elif channels is not None:
            if isinstance(layer, keras.layers.Flatten) and _channels_last(layer) and None not in layer.input.shape[1:]:
                size = int(layer.input.shape[-1])
                positions = int(np.prod(layer.input.shape[1:-1]))
                out = (np.arange(positions)[:, None] * size + channels).ravel()
            else:
                out = _passes(layer, channels)
                if out is None or _lit(layer, np.setdiff1d(np.arange(int(layer.output.shape[-1])), out)):
                    raise _Blocked(source)
        if channels is not None or out is not None or type(layer) in _PLAIN:
            plan[layer.name] = (channels, out)
        if out is not None:
            if id(layer.output) in outputs:
                raise _Blocked(source)
            narrowed[id(layer.output)] = (out, source)
    return plan


def _removal(model):
    """(the kept channels of the convolutions that can lose any, the walk's plan for them)."""
    if _graph(model) is None:
        return {}, {}
    found = {}
    for layer in model.layers:
        if _convolution(layer):
            zero = _zero_channels(layer)
            if zero.any() and not zero.all():
                found[layer.name] = np.flatnonzero(~zero)
    while found:
        try:
            return found, _walk(model, found)
        except _Blocked as blocked:
            del found[blocked.source]
    return {}, {}


def kept_channels(model):
    """{convolution name: indices of the output channels it keeps}, for the convolutions that can lose any (their
    output is exactly zero there, and every layer it reaches keeps it zero and can lose it)."""
    return _removal(model)[0]


def _slicing(layer, channels, out):
    """`copy_weights`' transform for `layer`: its mask multiplied into its kernel, then its weights cut to the
    `channels` it reads and the `out` channels it writes (None: all)."""
    mask = weight_value(layer, "mask")
    batch_norm = isinstance(layer, keras.layers.BatchNormalization)

    def transform(name, value):
        if name == "kernel" and mask is not None:
            value = value * mask
        if name == "kernel" and channels is not None:
            value = value[channels] if value.ndim == 2 else value[:, :, channels, :]
        if name == "kernel" and out is not None and _convolution(layer):
            value = value[..., out]
        if name == "bias" and out is not None:
            value = value[out]
        return value[channels] if batch_norm and channels is not None else value
    return transform


def narrow_model(model):
    """A copy of a channel-pruned Keras model without the channels `kept_channels` finds: each such convolution
    holds only its kept filters, every layer reading them only the matching inputs, and the masked layers are the
    plain Keras layers they were (masks multiplied into the kernels). It computes the pruned model's outputs.

    Prune with `granularity="channel"` and narrow before fine-tuning: fine-tuning a masked model moves the pruned
    channels' batch-norm offsets away from zero, and a channel whose output is a constant stays.

    Example:

    ```python
    masked = mayo_lite.prune.add_masks(model)
    mayo_lite.prune.prune_model(masked, percent=0.5, granularity="channel")
    narrow = mayo_lite.prune.narrow_model(masked)   # fewer filters, same outputs
    ```

    Args:
        model: a built functional or Sequential Keras model.

    Returns:
        The narrower copy, or None when no channel can be removed.
    """
    check_model(model, "narrow_model")
    kept, plan = _removal(model)
    if not kept:
        return None

    def replace(layer):
        if layer.name not in plan:
            return None
        config = layer.get_config()
        if layer.name in kept:
            config["filters"] = len(kept[layer.name])
        return _PLAIN.get(type(layer), type(layer)).from_config(config)

    copied, replaced = clone(model, replace)
    for original in all_layers(model):
        if id(original) in replaced:
            copy_weights(original, replaced[id(original)], _slicing(original, *plan[original.name]))
    return copied
