"""Finding the gated layers of a model and their mean density (the runner's and `mayo_lite.fbs`' bookkeeping)."""

import keras
from keras import ops

from mayo_lite.layers.gated import GatedConv2D


def gated_layers(model_or_layers):
    """Every `GatedConv2D` of a model (nested models included) or of a list of layers, in order."""
    if isinstance(model_or_layers, GatedConv2D):
        yield model_or_layers
    elif isinstance(model_or_layers, keras.Model):
        for layer in model_or_layers.layers:
            yield from gated_layers(layer)
    elif isinstance(model_or_layers, (list, tuple)):
        for layer in model_or_layers:
            yield from gated_layers(layer)


def mean_density(layers):
    """The fraction of all output channels of `layers` that their last call kept active (each layer's
    `last_density` weighted by its number of channels); 1.0 without layers."""
    layers = list(layers)
    if not layers:
        return ops.convert_to_tensor(1.0)
    kept = [ops.cast(layer.last_density, "float32") * layer.filters for layer in layers]
    return sum(kept[1:], kept[0]) / sum(layer.filters for layer in layers)
