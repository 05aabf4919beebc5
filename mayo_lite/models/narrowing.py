"""Which output channels of a channel-pruned model can be removed: those whose output is exactly zero whatever the
input (`kept_channels`), on any Keras model. `mayo_lite.net.narrowing` builds the narrower network from YAML.

A channel is removed only when its output is exactly zero whatever the input: its kernel column is all zero (masked
or not), and so are its bias and, when a batch norm follows, that norm's gamma and beta (`prune_model` with
`granularity="channel"` zeroes all three). Filter pruning without channel pruning leaves `relu(beta)` in the
channel, a constant the next layer needs, so those channels stay.
"""

import numpy as np


def weight_value(layer, name):
    """The NumPy value of `layer`'s weight named `name` (`kernel`, `mask`, `gamma`...), or None."""
    for variable in layer.weights:
        if variable.path.rsplit("/", 1)[-1] == name:
            return np.asarray(variable.numpy())
    return None


def _convolutions(model):
    return [layer for layer in model.layers if hasattr(layer, "kernel") and len(layer.kernel.shape) == 4
            and type(layer).__name__ not in ("DepthwiseConv2D", "MaskedDepthwiseConv2D", "GatedConv2D")]


def kept_channels(model):
    """{convolution name: indices of the output channels to keep}, for the convolutions that lose any; the last
    convolution (the logits, or the model's output) keeps all of its channels."""
    layers = {layer.name: layer for layer in model.layers}
    convolutions = _convolutions(model)
    found = {}
    for layer in convolutions[:-1]:
        kernel = weight_value(layer, "kernel")
        mask = weight_value(layer, "mask")
        effective = kernel * mask if mask is not None else kernel
        zero = ~np.any(effective.reshape(-1, effective.shape[-1]), axis=0)
        bias = weight_value(layer, "bias")
        if bias is not None:
            zero &= bias == 0
        norm = layers.get(f"{layer.name}.bn")
        if norm is not None:
            for name in ("gamma", "beta"):
                value = weight_value(norm, name)
                zero &= value == 0 if value is not None else name != "beta"
        if zero.any() and not zero.all():
            found[layer.name] = np.flatnonzero(~zero)
    return found
