"""Quantization-aware training of any Keras 3 model: `quantize_model` gives a copy whose convolutions and dense
layers compute with quantized weights (and, if asked, quantized activations), trains with `fit`, saves as
`.keras`; `QuantizerUpdate` runs Mayo's updates (dynamic points, incremental masks) during training;
`strip_quantizers` bakes the quantized weights into plain Keras layers for deployment."""

import keras
from keras import ops

from mayo_lite.layers import MASKED_LAYERS, GatedConv2D, MaskedConv2D, MaskedDense, MaskedDepthwiseConv2D
from mayo_lite.layers.masking import kernel_variable
from mayo_lite.models.cloning import ModelError, check_model, clone, copy_weights
from mayo_lite.quantize.base import Quantizer

_MASKED = (MaskedConv2D, MaskedDepthwiseConv2D, MaskedDense)


def quantizer_layers(model):
    """(layer, kind, quantizer) for every quantizer of `model`: kind 'kernel', 'bias' or 'activation'."""
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, Quantizer) and getattr(layer, "observe", False):
            yield layer, "activation", layer
        for kind in ("kernel", "bias"):
            quantizer = getattr(layer, f"{kind}_quantizer", None)
            if isinstance(quantizer, Quantizer):
                yield layer, kind, quantizer


def update_quantizers(model, activations=True):
    """Mayo's `overriders-update`: each weight quantizer updates from its layer's (masked) kernel or bias, and each
    activation quantizer, if `activations`, from the range training showed it since its last update."""
    for layer, kind, quantizer in quantizer_layers(model):
        if kind == "activation":
            if activations:
                quantizer.update()
            continue
        if kind == "kernel":
            value = ops.convert_to_numpy(kernel_variable(layer))
            if getattr(layer, "mask", None) is not None:
                value = value * ops.convert_to_numpy(layer.mask)
        else:
            value = ops.convert_to_numpy(layer.bias)
        quantizer.update(value)


class QuantizerUpdate(keras.callbacks.Callback):
    """Updates the quantizers' state when training starts (weights) and after every epoch (weights and activations):
    dynamic fixed point re-picks its binary point, shift and minifloat their exponent bias, incremental
    quantization switches on its next fraction. Mayo does this on its `overriders-update` command; a quantizer
    with `should_update: false` keeps its state."""

    def on_train_begin(self, logs=None):
        update_quantizers(self.model, activations=False)

    def on_epoch_end(self, epoch, logs=None):
        update_quantizers(self.model)


def _quantizer(spec, name, shape_name, observe=False):
    """A fresh quantizer from a quantizer object (copied through its config), a config dict, or a callable
    `spec(layer_name)`."""
    if spec is None:
        return None
    if callable(spec) and not isinstance(spec, Quantizer):
        spec = spec(shape_name)
        if spec is None:
            return None
    if isinstance(spec, Quantizer):
        config = spec.get_config()
        config.update(name=name, observe=observe)
        return type(spec).from_config(config)
    raise ValueError(f"Invalid quantizer for `{shape_name}`: expected a mayo_lite.quantize quantizer, None or a "
                     f"function of the layer name returning one. Received: {spec!r}")


def quantize_model(model, weights=None, biases=None, activations=None, layers=None):
    """A copy of `model` whose Conv2D, DepthwiseConv2D and Dense layers (masked ones included, their masks kept)
    compute with `weights(kernel · mask)` and `biases(bias)`, and whose activations — each such layer's output,
    after its activation — are quantized by `activations`. Each argument is a quantizer (copied for every layer),
    or a function of the layer's name returning one or None. The copy has the same weights, trains with `fit`
    (straight-through gradients; add `QuantizerUpdate()` to the callbacks for Mayo's updates) and saves as `.keras`.

    Example:

    ```python
    from mayo_lite import quantize
    qat = quantize.quantize_model(model, weights=quantize.FixedPointQuantizer(width=8, point=2),
                                  activations=quantize.FixedPointQuantizer(width=8, point=4))
    qat.compile(...); qat.fit(x, y, callbacks=[quantize.QuantizerUpdate()])
    ```

    Args:
        model: a built functional or Sequential Keras model.
        weights, biases, activations: quantizers, functions of a layer name, or None (not quantized).
        layers: names of the layers to quantize; None for every Conv2D, DepthwiseConv2D and Dense.
    """
    check_model(model, "quantize_model")
    after, originals = {}, {}

    def replace(layer):
        base = next((cls for cls in MASKED_LAYERS if type(layer) is cls), None)
        masked = type(layer) if type(layer) in _MASKED else MASKED_LAYERS.get(base)
        if masked is None or (layers is not None and layer.name not in layers):
            return None
        config = layer.get_config()
        config["kernel_quantizer"] = _quantizer(weights, f"{layer.name}.weights", layer.name)
        config["bias_quantizer"] = (_quantizer(biases, f"{layer.name}.biases", layer.name)
                                    if config.get("use_bias", True) else None)
        after[id(layer)] = _quantizer(activations, f"{layer.name}.quantize", layer.name, observe=True)
        originals[id(layer)] = layer
        return masked.from_config(config)

    def call(original, layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        quantizer = after.get(id(original))
        return outputs if quantizer is None else quantizer(outputs)

    copied, replaced = clone(model, replace, call=call if activations is not None else None)
    if not replaced:
        raise ModelError(f"quantize_model: model {model.name!r} has no Conv2D, DepthwiseConv2D or Dense layer"
                         + (f" named {', '.join(layers)}" if layers is not None else ""))
    for key, target in replaced.items():
        copy_weights(originals[key], target)
    return copied


def strip_quantizers(model):
    """A copy of `model` for deployment: every quantized (or masked) layer becomes the plain Keras layer it was,
    holding `quantize(kernel · mask)` and `quantize(bias)` as its weights, so it exports as any Keras model does.
    Activation quantizers stay: they are part of what the model computes. The copy's outputs are the model's in
    inference."""
    check_model(model, "strip_quantizers")
    if not any(quantizer_layers(model)):
        raise ModelError(f"strip_quantizers: model {model.name!r} has no quantizer")
    originals = {}

    def replace(layer):
        if isinstance(layer, GatedConv2D) and layer.kernel_quantizer is not None:  # stays gated, kernel baked
            originals[id(layer)] = layer
            return GatedConv2D.from_config({**layer.get_config(), "kernel_quantizer": None})
        if type(layer) not in _MASKED:
            return None
        base = next(cls for cls, masked in MASKED_LAYERS.items() if type(layer) is masked)
        originals[id(layer)] = layer
        return base.from_config({key: value for key, value in layer.get_config().items()
                                 if key not in ("kernel_quantizer", "bias_quantizer", "regrow")})

    copied, replaced = clone(model, replace)
    for key, target in replaced.items():
        layer = originals[key]
        kernel = layer.effective_kernel() if isinstance(layer, GatedConv2D) else layer.masked_kernel(
            kernel_variable(layer))
        quantized = {"kernel": kernel}
        if getattr(layer, "bias", None) is not None:
            quantized["bias"] = layer.effective_bias()

        def transform(name, value, quantized=quantized):
            return ops.convert_to_numpy(quantized[name]) if name in quantized else value
        copy_weights(layer, target, transform)
    return copied
