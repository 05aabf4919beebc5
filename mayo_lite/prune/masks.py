"""Pruning a model: saliencies of the selected layers, thresholds, and the resulting masks written into the layers'
`mask` weights, with the pruned kernel weights set to zero."""

import keras
import numpy as np

from mayo_lite.errors import ArgumentError
from mayo_lite.prune.arguments import choice, fraction
from mayo_lite.prune.report import LayerPruning, PruneReport
from mayo_lite.prune.saliency import GRANULARITIES, KERNEL_SALIENCIES, as_float64
from mayo_lite.prune.selection import all_layers, as_convolution, kernel_of, prunable_layers
from mayo_lite.prune.thresholds import SCOPES


def _layer_finder(model):
    by_name = {}
    for layer in all_layers(model):
        by_name.setdefault(layer.name, layer)
    return by_name.get


def _selected(model, layers):
    selected = prunable_layers(model, layers)
    if not selected:
        raise ArgumentError("model", "a model with masked layers (`mayo_lite.prune.add_masks(model)` gives "
                                          "any Keras model masks)", getattr(model, "name", model))
    unbuilt = [layer.name for layer in selected if not layer.built]
    if unbuilt:
        raise ArgumentError("model", f"a built model (layers {', '.join(unbuilt)} have no weights yet)",
                                 model.name)
    names = [layer.name for layer in selected]
    shared = sorted({name for name in names if names.count(name) > 1})
    if shared:
        raise ArgumentError("model", f"prunable layers with unique names (several are named "
                                          f"{', '.join(shared)})", model.name)
    return selected


def prune_model(model, percent=0.3, granularity="kernel", saliency="max", scope="global", layers=None):
    """Prunes the convolution weights of `model` with the lowest saliency (docs/design/pruning-algorithm.md).

    Every weight carries the saliency of its group (granularity); with `total` weights sorted by saliency, the
    threshold is the value at index `int(total · percent)`, and a weight is kept when its saliency is strictly above
    it. The masks multiply into the layers' existing masks and saliencies are taken from the masked kernel, so
    pruning again only removes more, and `percent` counts the weights pruned before: pruning twice with the same
    percent changes nothing.

    Args:
        model: a Keras model with masked layers (`MaskedConv2D`, `MaskedDepthwiseConv2D`, `MaskedDense`, as
            `add_masks` makes them) or `GatedConv2D(use_mask=True)` layers, nested models included. Dense and
            depthwise kernels are pruned as 1×1 and one-input-channel convolutions (a depthwise "kernel" and
            "filter" are both the K_h × K_w slice of one output channel).
        percent: fraction of the selected weights to prune, in [0, 1); 0 prunes nothing (the reference, taken
            literally, would prune the weights tied at the smallest saliency).
        granularity: `"weight"` (|w|), `"kernel"` (each K_h × K_w slice, by `saliency`), `"filter"` (L1 norm of an
            output channel's weights) or `"channel"` (|gamma| of the batch norm that follows the layer, named
            `<layer name>.bn` or its only consumer in the graph; network slimming; not for gated layers).
            Channel pruning also zeroes that batch norm's gamma and beta at the pruned channels.
        saliency: `"max"` (the reference), `"l1"` or `"l2"`; used by `kernel` granularity.
        scope: `"global"` (one threshold over all selected layers) or `"layer"` (the same percent in every layer).
        layers: None for every prunable layer, or a list of layer names or fnmatch patterns.

    Returns:
        A `PruneReport`.
    """
    percent = fraction("percent", percent)
    rule = GRANULARITIES[choice("granularity", granularity, GRANULARITIES)]
    choice("saliency", saliency, KERNEL_SALIENCIES)
    thresholds_of = SCOPES[choice("scope", scope, SCOPES)]
    selected = _selected(model, layers)
    find_layer = _layer_finder(model)

    # Every saliency is computed before any weight changes, so an error (channel pruning of a gated layer) leaves
    # the model untouched.
    masks = [as_convolution(layer, as_float64(layer.mask)) for layer in selected]
    saliencies = [rule.saliencies(layer, as_convolution(layer, as_float64(kernel_of(layer))) * mask, saliency,
                                  find_layer) for layer, mask in zip(selected, masks)]
    thresholds = thresholds_of(saliencies, percent)

    pruned_layers = {}
    for layer, mask, layer_saliencies, threshold in zip(selected, masks, saliencies, thresholds):
        new_mask = mask * (layer_saliencies > threshold)
        kept = new_mask != 0
        shape = tuple(layer.mask.shape)
        layer.mask.assign(new_mask.reshape(shape).astype(layer.mask.dtype))
        kernel = keras.ops.convert_to_numpy(kernel_of(layer))
        kernel_of(layer).assign(np.where(kept.reshape(shape), kernel, 0).astype(kernel.dtype))
        rule.prune_following(layer, kept, find_layer)
        pruned_layers[layer.name] = LayerPruning(layer.name, int(kept.size), int(np.count_nonzero(kept)),
                                                 float(threshold))
    return PruneReport(layers=pruned_layers, threshold=float(thresholds[0]) if scope == "global" else None,
                       percent=percent, granularity=granularity, saliency=saliency, scope=scope)
