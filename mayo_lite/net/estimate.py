"""Parameters and multiply-accumulates of a built model, per YAML layer and in total.

MACs count the multiplications of convolutions and fully connected layers (bias additions, normalisation and
pooling are not counted), which is the convention of Mayo and of the published figures: M-CifarNet on 32×32×3
is 174,301,824 MACs.
"""

import math

import keras

from mayo_lite.net.builder import GROUP_ATTRIBUTE


def _static(shape):
    return tuple(int(d) if d is not None else None for d in shape)


def _conv_macs(layer):
    _, height, width, channels_out = _static(layer.output.shape)
    kernel_h, kernel_w = layer.kernel_size
    channels_in = _static(layer.input.shape)[-1]
    return height * width * kernel_h * kernel_w * (channels_in // layer.groups) * channels_out


def _depthwise_macs(layer):
    _, height, width, channels_out = _static(layer.output.shape)
    kernel_h, kernel_w = layer.kernel_size
    return height * width * kernel_h * kernel_w * channels_out


def _dense_macs(layer):
    input_shape = _static(layer.input.shape)
    positions = math.prod(input_shape[1:-1])
    return positions * input_shape[-1] * layer.units


# Keras layer class -> MACs of one example. Subclasses (masked and gated convolutions) inherit their base's entry.
MAC_COUNTERS = {
    keras.layers.DepthwiseConv2D: _depthwise_macs,
    keras.layers.Conv2D: _conv_macs,
    keras.layers.Dense: _dense_macs,
}


def layer_macs(layer):
    for cls, count in MAC_COUNTERS.items():
        if isinstance(layer, cls):
            return count(layer)
    return 0


def layer_table(model):
    """One row per YAML layer: name, Keras types, output shape, parameters and dense MACs."""
    rows = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        group = getattr(layer, GROUP_ATTRIBUTE, layer.name)
        row = rows.setdefault(group, {"name": group, "types": [], "params": 0, "macs": 0})
        row["types"].append(type(layer).__name__)
        row["params"] += sum(math.prod(weight.shape) for weight in layer.weights)
        row["macs"] += layer_macs(layer)
        row["output_shape"] = _static(layer.output.shape)[1:]
    return list(rows.values())


def totals(rows):
    return {"params": sum(row["params"] for row in rows), "macs": sum(row["macs"] for row in rows)}
