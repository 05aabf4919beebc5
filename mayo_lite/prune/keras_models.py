"""Pruning masks on any Keras model, and off again for deployment: `add_masks` and `strip_masks`."""

import fnmatch

import keras

from mayo_lite.layers import MASKED_LAYERS, GatedConv2D
from mayo_lite.models.cloning import ModelError, all_layers, check_model, clone, copy_weights
from mayo_lite.prune.selection import _patterns

# The Keras classes `add_masks` masks by default; the others of MASKED_LAYERS on request.
_OPTIONAL = {keras.layers.DepthwiseConv2D: "depthwise", keras.layers.Dense: "dense"}


def add_masks(model, depthwise=False, dense=False, layers=None):
    """A copy of a Keras model whose convolutions carry pruning masks, ready for `prune_model` and
    `GradualPruning`.

    Every `keras.layers.Conv2D` (exactly that class, not a subclass) becomes a `MaskedConv2D` with the same
    configuration and weights and a mask of ones, so the copy computes exactly what the original computes; with
    `depthwise=True` and `dense=True`, `DepthwiseConv2D` and `Dense` layers become `MaskedDepthwiseConv2D` and
    `MaskedDense` too. Other layers are copied as they are, weights included. The original model is not changed.

    Example:

    ```python
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    masked = mayo_lite.prune.add_masks(model)
    report = mayo_lite.prune.prune_model(masked, percent=0.5, granularity="kernel")
    print(report.ratio)   # 0.5 of the convolution weights are now exactly zero
    ```

    Args:
        model: a built functional or Sequential Keras model; nested functional and Sequential models are
            copied with their layers masked too. Subclassed models cannot be copied and raise.
        depthwise: also mask `DepthwiseConv2D` layers (MobileNets).
        dense: also mask `Dense` layers (classifier heads).
        layers: None for every such layer, or a list of layer names or fnmatch patterns (`"conv*"`).

    Returns:
        The masked copy, with the original's name, compiled as the original was.

    Raises:
        ValueError: the model cannot be copied, or no layer matched (nothing would be masked).
    """
    check_model(model, "add_masks")
    wanted = {keras.layers.Conv2D} | {cls for cls, flag in _OPTIONAL.items() if {"depthwise": depthwise,
                                                                                  "dense": dense}[flag]}
    patterns = None if layers is None else _patterns(layers)

    def selected(layer):
        return type(layer) in wanted and (patterns is None or any(fnmatch.fnmatchcase(layer.name, p)
                                                                   for p in patterns))

    chosen = [layer for layer in all_layers(model) if selected(layer)]
    if not chosen:
        kinds = ", ".join(cls.__name__ for cls in wanted)
        where = "" if patterns is None else f" named {', '.join(patterns)}"
        raise ModelError(f"add_masks: model {model.name!r} has no {kinds} layer{where} to mask")
    return _copy(model, lambda layer: MASKED_LAYERS[type(layer)].from_config(layer.get_config())
                 if selected(layer) else None)


def _strip(layer):
    if isinstance(layer, GatedConv2D):
        return (GatedConv2D.from_config({**layer.get_config(), "use_mask": False}) if layer.use_mask else None)
    for plain, masked in MASKED_LAYERS.items():
        if type(layer) is masked:
            return plain.from_config(layer.get_config())
    return None


def strip_masks(model):
    """A copy of a masked model without masks: each mask multiplied into its kernel, each masked layer turned back
    into the plain Keras layer it was (`MaskedConv2D` into `Conv2D`, and so on), outputs unchanged.

    The copy of a model made by `add_masks` holds only Keras layers, so it saves to a `.keras` file that loads
    where mayo-lite is not installed, and exports (`model.export`, TFLite, ONNX) as any Keras model does. A
    `GatedConv2D` stays gated (no Keras layer computes a gate), without its mask.

    Example:

    ```python
    plain = mayo_lite.prune.strip_masks(masked)
    plain.save("pruned.keras")   # loads with keras.models.load_model, no mayo-lite needed
    ```

    Args:
        model: a built functional or Sequential Keras model with masked layers.

    Returns:
        The stripped copy.
    """
    check_model(model, "strip_masks")
    if not any(_strip(layer) is not None for layer in all_layers(model)):
        raise ModelError(f"strip_masks: model {model.name!r} has no masked layer")
    return _copy(model, _strip, fold=True)


def _copy(model, replace, fold=False):
    copied, replaced = clone(model, replace)
    for original in all_layers(model):
        target = replaced.get(id(original))
        if target is None:
            continue
        mask = keras.ops.convert_to_numpy(original.mask) if fold and getattr(original, "mask", None) is not None \
            else None

        def transform(name, value):
            return value * mask if mask is not None and name == "kernel" else value
        copy_weights(original, target, transform)
    return copied
