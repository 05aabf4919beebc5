"""Which layers of a model static pruning works on: masked layers and gated convolutions with a mask, found through
nested models and narrowed by name patterns; and the convolution-shaped view of their kernels that saliencies
are computed on."""

import fnmatch

import keras
import numpy as np

from mayo_lite.layers import MASKED_LAYERS, GatedConv2D
from mayo_lite.layers.masking import kernel_variable
from mayo_lite.errors import ArgumentError


def all_layers(model):
    """Every layer of `model` that is not itself a model, sub-models' layers included, in order."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def is_prunable(layer):
    """Whether `layer` has a pruning mask: a masked layer (`MaskedConv2D`, `MaskedDepthwiseConv2D`, `MaskedDense`)
    or a `GatedConv2D` built with `use_mask=True`."""
    return isinstance(layer, tuple(MASKED_LAYERS.values())) or (isinstance(layer, GatedConv2D) and layer.use_mask)


def kernel_of(layer):
    """The kernel variable that pruning reads and zeroes (never a LoRA-adjusted copy)."""
    return kernel_variable(layer)


def as_convolution(layer, array):
    """`array` (of the kernel's shape) seen as a (K_h, K_w, C_in, C_out) convolution kernel whose last axis is the
    layer's output channel: a `Dense` kernel is a 1×1 convolution, and a depthwise kernel (K_h, K_w, C, M) has
    one input channel for each of its C·M output channels (channel c·M + m, as Keras orders them)."""
    if array.ndim == 2:
        return array.reshape(1, 1, *array.shape)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return array.reshape(array.shape[0], array.shape[1], 1, -1)
    return array


def _patterns(layers):
    # One name given alone is one pattern, not a sequence of one-letter patterns.
    patterns = [layers] if isinstance(layers, str) else layers
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        raise ArgumentError("layers", "None or a list of layer names or fnmatch patterns", layers)
    return patterns


def prunable_layers(model, layers=None):
    """The prunable layers of `model` (nested models included), in model order, each once.

    Args:
        model: a Keras model (Sequential, functional, or with nested models).
        layers: None for every prunable layer, or a list of layer names or fnmatch patterns (`conv*`,
            `b2?.conv1`), matched case-sensitively against layer names.

    Raises:
        ValueError: a pattern matches no prunable layer.
    """
    found = {}
    for layer in all_layers(model):
        if is_prunable(layer):
            found.setdefault(id(layer), layer)
    candidates = list(found.values())
    if layers is None:
        return candidates
    patterns = _patterns(layers)
    names = [layer.name for layer in candidates]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ArgumentError(
                "layers", f"names or patterns of prunable layers; {pattern!r} matches none of them "
                          f"({_listing(names)})", layers)
    return [layer for layer in candidates if any(fnmatch.fnmatchcase(layer.name, p) for p in patterns)]


def _listing(names, most=10):
    if not names:
        return "the model has no prunable layer"
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _mask_of(layer):
    if not is_prunable(layer):
        raise ArgumentError("layer", "a masked layer or a GatedConv2D with use_mask=True", layer.name)
    if not layer.built:
        raise ArgumentError("layer", "a built layer (build or call the model first)", layer.name)
    return layer.mask


def weight_density(layer):
    """The fraction of `layer`'s kernel weights that its mask keeps (non-zero mask entries; pruning writes 0 and 1)."""
    mask = keras.ops.convert_to_numpy(_mask_of(layer))
    return np.count_nonzero(mask) / mask.size
