"""A channel-pruned network made really narrower: the output channels that channel pruning (network slimming)
switched off removed from their convolution, its batch norm and the next layer's input, so the static network runs
fewer MACs in any runtime instead of multiplying by zeros.

A channel is removed only when its output is exactly zero whatever the input: its kernel column is all zero (masked
or not), and so are its bias and, when a batch norm follows, that norm's gamma and beta (`prune_model` with
`granularity="channel"` zeroes all three). The narrowed model then computes the masked model's outputs. Filter
pruning without channel pruning leaves `relu(beta)` in the channel, a constant the next layer needs, so those
channels stay. Works on the project's chain networks (the layers' order is the data's); a graph that joins branches
(an addition needs its inputs at one width) is not narrowed.
"""

import numpy as np

from mayo_lite.models.narrowing import kept_channels
from mayo_lite.net.builder import build_model
from mayo_lite.net.variants import _joins, with_widths

# Layers whose output channels are their input's, one for one.
_PASSING = ("Activation", "ReLU", "Dropout", "MaxPooling2D", "AveragePooling2D", "ReduceMean", "BatchNormalization")


def narrow_model(model, spec, input_shape, origin=None):
    """A plain (unmasked) model of the resolved `model` section `spec` with the channels `kept_channels` finds
    removed and every weight copied, sliced; its outputs are `model`'s. None when the graph joins branches or when
    no channel is removed."""
    if _joins(spec):
        return None
    kept = kept_channels(model)
    if not kept:
        return None
    widths = {name: len(indices) for name, indices in kept.items()}
    narrow = build_model(with_widths(spec, widths), input_shape, origin=origin, masked=False)
    source = {layer.name: layer for layer in model.layers}
    channels = None  # the input channels the current layer keeps (None: all)
    for layer in narrow.layers:
        original = source[layer.name]
        if not layer.weights:
            continue
        values = {variable.path.rsplit("/", 1)[-1]: np.asarray(variable.numpy()) for variable in original.weights}
        mask = values.pop("mask", None)
        if hasattr(layer, "kernel") and len(layer.kernel.shape) == 4:
            if mask is not None:
                values["kernel"] = values["kernel"] * mask
            outputs = kept.get(layer.name)
            if channels is not None:
                values["kernel"] = values["kernel"][:, :, channels, :]
            if outputs is not None:
                values = {name: value[..., outputs] for name, value in values.items()}
            channels = outputs
        elif type(layer).__name__ == "BatchNormalization" and channels is not None:
            values = {name: value[channels] for name, value in values.items()}
        elif type(layer).__name__ not in _PASSING:
            if channels is not None:
                raise ValueError(f"narrow_model: layer {layer.name} ({type(layer).__name__}) follows a narrowed "
                                 "convolution and is not known to keep its input's channels")
        for variable in layer.weights:
            variable.assign(values[variable.path.rsplit("/", 1)[-1]])
    return narrow
