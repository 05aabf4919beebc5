"""How much each convolution weight matters (docs/design/pruning-algorithm.md): one saliency per pruning group — a weight,
a kernel, a filter or a channel — carried by every weight of the group, so that a threshold over weights weighs
each group by its size. Thresholds and masks are the neighbouring modules' business."""

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from mayo_lite.layers import GatedConv2D
from mayo_lite.errors import ArgumentError
from mayo_lite.prune.arguments import choice

# A kernel is one (K_h, K_w) slice of a (K_h, K_w, C_in, C_out) Keras kernel; these reduce |w| over K_h and K_w.
KERNEL_SALIENCIES = {
    "max": lambda magnitude: np.max(magnitude, axis=(0, 1)),
    "l1": lambda magnitude: np.sum(magnitude, axis=(0, 1)),
    "l2": lambda magnitude: np.sqrt(np.sum(np.square(magnitude), axis=(0, 1))),
}

BATCH_NORM_SUFFIX = ".bn"


def as_float64(values):
    # Saliencies are sums of many float32 values; float64 keeps their order independent of summation order.
    return np.asarray(keras.ops.convert_to_numpy(values), dtype=np.float64)


def kernel_saliency(kernel, saliency="max"):
    """The saliency of each kernel of a (K_h, K_w, C_in, C_out) convolution kernel, shape (C_in, C_out).

    Args:
        kernel: the convolution's weights (array, tensor or variable).
        saliency: `"max"` (largest |w|, the reference), `"l1"` (sum of |w|) or `"l2"` (Euclidean norm).
    """
    choice("saliency", saliency, KERNEL_SALIENCIES)
    kernel = as_float64(kernel)
    if kernel.ndim != 4:
        raise ArgumentError("kernel", "a 4D convolution kernel (K_h, K_w, C_in, C_out)", kernel.shape)
    return KERNEL_SALIENCIES[saliency](np.abs(kernel))


def _only_consumer(layer):
    # Keras keeps a layer's consumers only in its private `_outbound_nodes`; a Keras model built without this
    # project's `<name>.bn` naming (keras.applications: `conv1_conv` then `conv1_bn`) is found through it.
    consumers = {id(node.operation): node.operation for node in getattr(layer, "_outbound_nodes", [])}
    return next(iter(consumers.values())) if len(consumers) == 1 else None


def following_batch_norm(layer, find_layer):
    """The `keras.layers.BatchNormalization` that normalises `layer`'s output channels: the layer named
    `<layer name>.bn`, or else the layer's only consumer in the graph."""
    where = f"Channel pruning of layer '{layer.name}': "
    if isinstance(layer, GatedConv2D):
        raise ValueError(f"{where}channel saliency is not defined for a GatedConv2D: its normalisation is inside "
                         f"the layer and its gate already switches channels; use granularity 'weight', 'kernel' "
                         f"or 'filter'")
    name = layer.name + BATCH_NORM_SUFFIX
    batch_norm = find_layer(name)
    if batch_norm is None and isinstance(_only_consumer(layer), keras.layers.BatchNormalization):
        batch_norm = _only_consumer(layer)
        name = batch_norm.name
    if not isinstance(batch_norm, keras.layers.BatchNormalization):
        found = "no such layer" if batch_norm is None else f"a {type(batch_norm).__name__}"
        raise ValueError(f"{where}the saliency is the scale of the batch norm that follows it ('{name}', or the "
                         f"layer's only consumer), but the model has {found}")
    channels = int(layer.output.shape[-1])
    if batch_norm.gamma is None or tuple(batch_norm.gamma.shape) != (channels,):
        raise ValueError(f"{where}the batch norm '{name}' needs a scale (gamma) of one value per output channel "
                         f"({channels})")
    return batch_norm


def _weight_saliencies(layer, kernel, saliency, find_layer):
    return np.abs(kernel)


def _kernel_saliencies(layer, kernel, saliency, find_layer):
    return np.broadcast_to(kernel_saliency(kernel, saliency), kernel.shape)


def _filter_saliencies(layer, kernel, saliency, find_layer):
    return np.broadcast_to(np.sum(np.abs(kernel), axis=(0, 1, 2)), kernel.shape)


def _channel_saliencies(layer, kernel, saliency, find_layer):
    gamma = as_float64(following_batch_norm(layer, find_layer).gamma)
    return np.broadcast_to(np.abs(gamma), kernel.shape)


def _remove_channels(layer, kept, find_layer):
    # Network slimming removes a pruned channel from the network; zeroing its batch-norm scale and offset makes the
    # channel's output exactly zero, as if it were removed.
    batch_norm = following_batch_norm(layer, find_layer)
    kept_channels = kept.reshape(-1, kept.shape[-1])[0]
    for variable in (batch_norm.gamma, batch_norm.beta):
        if variable is not None:
            value = keras.ops.convert_to_numpy(variable)
            variable.assign(np.where(kept_channels, value, 0).astype(value.dtype))


def _nothing_else(layer, kept, find_layer):
    pass


@dataclass(frozen=True)
class Granularity:
    """What one pruning granularity scores and what else it prunes besides the kernel.

    `saliencies(layer, kernel, saliency, find_layer)` gives every weight of the (masked, float64) kernel its group's
    saliency; `prune_following(layer, kept, find_layer)` prunes what the kept/pruned weights imply elsewhere.
    `find_layer(name)` is the model's layer of that name, or None.
    """

    saliencies: Callable
    prune_following: Callable = _nothing_else


GRANULARITIES = {
    "weight": Granularity(_weight_saliencies),
    "kernel": Granularity(_kernel_saliencies),
    "filter": Granularity(_filter_saliencies),
    "channel": Granularity(_channel_saliencies, _remove_channels),
}


def weight_saliencies(layer, kernel, granularity="kernel", saliency="max", find_layer=lambda name: None):
    """Every weight of `kernel` (the layer's effective kernel) carrying its group's saliency; the kernel's shape."""
    return GRANULARITIES[choice("granularity", granularity, GRANULARITIES)].saliencies(
        layer, as_float64(kernel), choice("saliency", saliency, KERNEL_SALIENCIES), find_layer)
