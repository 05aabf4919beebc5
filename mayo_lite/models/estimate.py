"""Parameters and multiply-accumulates of a built model, per YAML layer and in total.

MACs count the multiplications of convolutions and fully connected layers (bias additions, normalisation and
pooling are not counted), which is the convention of Mayo and of the published figures: M-CifarNet on 32×32×3
is 174,301,824 MACs.

With gated (FBS) convolutions a layer computes only the channels that are active on both sides, so its effective
cost is the dense cost times its input density times its output density (docs/design/fbs-semantics.md, "Cost"). The density of
every tensor is followed through the graph: a gated layer's output has its gate density (measured, or nominal),
layers that map a zero channel to a zero channel carry their input's, and any other layer's output is dense.
With pruning masks (static pruning), a convolution computes only its remaining weights: its cost is also
multiplied by its weight density, so kernel pruning counts only the remaining kernels.
"""

import math

import keras
import numpy as np

from mayo_lite.layers import GatedConv2D, LocalResponseNormalization, Quantizer, ReduceMean, Squeeze
from mayo_lite.layers.thresholds import active_count

# The attribute naming the YAML layer a Keras layer was built for (`mayo_lite.net` sets it; a model built otherwise
# is counted layer by layer).
GROUP_ATTRIBUTE = "mayo_group"


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


def nominal_density(layer):
    """The fraction of a gated layer's channels its gate keeps by construction: ceil(C·d)/C, or 1 if disabled."""
    return active_count(layer.filters, layer.density) / layer.filters if layer.enable else 1.0


def gate_macs(layer, in_density, out_density):
    """The predictor's MACs on the active inputs and outputs, plus the gamma multiplication (docs/design/fbs-semantics.md)."""
    _, height, width, channels_out = _static(layer.output.shape)
    prefixes = ("gate", "beta") if layer.parametric_beta else ("gate",)
    predictors = 0
    for prefix in prefixes:
        kernels = [kernel.shape for kernel, _ in layer.predictor(prefix)]
        # Only the first kernel's rows of inactive inputs and the last kernel's columns of inactive outputs go.
        scales = [(in_density if i == 0 else 1.0) * (out_density if i == len(kernels) - 1 else 1.0)
                  for i in range(len(kernels))]
        predictors += sum(rows * columns * scale for (rows, columns), scale in zip(kernels, scales))
    return predictors + height * width * channels_out


# Layers whose output channel is zero wherever their input channel is: the input density passes through.
# Batch norm is listed as docs/design/fbs-semantics.md says, although its offset makes a zero channel non-zero; in gated models the
# normalisation sits inside the gated layer, before the gate.
DENSITY_CARRIERS = (
    keras.layers.Dropout, keras.layers.Identity, keras.layers.Activation, keras.layers.BatchNormalization,
    keras.layers.ZeroPadding2D, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D, keras.layers.Flatten,
    keras.layers.Reshape, keras.layers.DepthwiseConv2D, ReduceMean, Squeeze, LocalResponseNormalization,
)


def _sum_density(layer, densities):
    """An addition's channel is zero only where every input's is (independent inputs assumed)."""
    return 1.0 - math.prod(1.0 - density for density in densities)


def _concat_density(layer, densities):
    channels = [_static(tensor.shape)[-1] for tensor in layer._inbound_nodes[0].input_tensors]
    return sum(c * d for c, d in zip(channels, densities)) / sum(channels)


# Keras layer class -> output density from its input densities (checked after the gated layers and carriers).
DENSITY_JOINS = {keras.layers.Add: _sum_density, keras.layers.Concatenate: _concat_density}


def _output_density(layer, in_densities, gate_densities):
    if isinstance(layer, GatedConv2D):
        return gate_densities.get(layer.name, nominal_density(layer))
    if isinstance(layer, DENSITY_CARRIERS):
        return in_densities[0]
    for cls, join in DENSITY_JOINS.items():
        if isinstance(layer, cls):
            return join(layer, in_densities)
    return 1.0


def weight_density(layer):
    """The fraction of a masked layer's kernel weights its pruning mask keeps; None for a layer without a mask (or
    with a mask of ones that is only there to carry quantizers)."""
    mask = getattr(layer, "mask", None)
    if mask is None or not isinstance(layer, tuple(MAC_COUNTERS)):
        return None
    mask = keras.ops.convert_to_numpy(mask)
    if getattr(layer, "kernel_quantizer", None) is not None and mask.all():
        return None
    return float(np.count_nonzero(mask) / mask.size)


# variable of a quantized layer -> the quantizer attribute that says its width
_QUANTIZED = {"kernel": "kernel_quantizer", "bias": "bias_quantizer"}


def _bits(layer, row):
    """Adds the layer's bit widths (weights w, biases b, activation a) and its parameters' size in bits at those
    widths (32 for what no quantizer touches) to its row."""
    if isinstance(layer, Quantizer):  # an activation's quantizer, a layer of its own
        row["bits"]["a"] = layer.bits
        return
    for name, attribute in _QUANTIZED.items():
        quantizer = getattr(layer, attribute, None)
        if quantizer is not None:
            row["bits"]["w" if name == "kernel" else "b"] = quantizer.bits
    for weight in _parameters(layer):
        key = "w" if weight is getattr(layer, "_kernel", getattr(layer, "kernel", None)) else (
            "b" if weight is getattr(layer, "bias", None) else None)
        row["size_bits"] += math.prod(weight.shape) * (row["bits"].get(key) or 32)


def _parameters(layer):
    """A layer's parameters: not its scalars (a gate's last density, a moving threshold), pruning mask, or
    quantizers' state, which are bookkeeping."""
    if isinstance(layer, Quantizer):
        return []
    state = {id(weight) for sub in layer._flatten_layers(include_self=False) if isinstance(sub, Quantizer)
             for weight in sub.weights}
    return [weight for weight in layer.weights if len(weight.shape) and weight is not getattr(layer, "mask", None)
            and id(weight) not in state]


def layer_table(model, gate_densities=None):
    """One row per YAML layer: name, Keras types, output shape, parameters, dense MACs, weight density (None
    without a mask), and input density, output density, effective MACs and gate MACs.

    `gate_densities` maps gated layers' Keras names to their measured mean output density; a gated layer missing
    from it counts at its nominal density. Scalar bookkeeping variables (a gate's last density, a moving
    threshold) are not counted as parameters.
    """
    rows = {}
    _walk(model, gate_densities or {}, rows, {}, prefix="")
    return list(rows.values())


def _walk(model, gate_densities, rows, tensor_density, prefix):
    """Adds the rows of `model`'s layers; a nested model's layers are walked in turn, named `<model>/<layer>`."""
    for layer in model.layers:
        node = layer._inbound_nodes[0]
        if isinstance(layer, keras.layers.InputLayer):
            for tensor in node.output_tensors:
                tensor_density.setdefault(id(tensor), 1.0)
            continue
        in_densities = [tensor_density.get(id(tensor), 1.0) for tensor in node.input_tensors] or [1.0]
        if isinstance(layer, keras.Model):
            for inner, density in zip(layer.inputs, in_densities):
                tensor_density[id(inner)] = density
            _walk(layer, gate_densities, rows, tensor_density, f"{prefix}{layer.name}/")
            out_density = tensor_density.get(id(layer.outputs[0]), 1.0)
            for tensor in node.output_tensors:
                tensor_density[id(tensor)] = out_density
            continue
        out_density = _output_density(layer, in_densities, gate_densities)
        for tensor in node.output_tensors:
            tensor_density[id(tensor)] = out_density
        group = prefix + getattr(layer, GROUP_ATTRIBUTE, layer.name)
        row = rows.setdefault(group, {"name": group, "types": [], "params": 0, "macs": 0, "effective_macs": 0.0,
                                      "gate_macs": 0.0, "in_density": in_densities[0], "weight_density": None,
                                      "bits": {}, "size_bits": 0})
        row["types"].append(type(layer).__name__)
        row["params"] += sum(math.prod(weight.shape) for weight in _parameters(layer))
        _bits(layer, row)
        macs = layer_macs(layer)
        row["macs"] += macs
        kept = weight_density(layer)
        if kept is not None:
            row["weight_density"] = kept
            macs *= kept
        if isinstance(layer, GatedConv2D):
            row["effective_macs"] += macs * in_densities[0] * out_density
            row["gate_macs"] += gate_macs(layer, in_densities[0], out_density)
        else:
            row["effective_macs"] += macs * in_densities[0]
        row["out_density"] = out_density
        row["output_shape"] = _static(layer.output.shape)[1:]


def totals(rows):
    """Summed parameters, dense MACs, effective MACs (gate MACs included) and gate MACs."""
    gates = sum(row["gate_macs"] for row in rows)
    return {"params": sum(row["params"] for row in rows), "macs": sum(row["macs"] for row in rows),
            "effective_macs": sum(row["effective_macs"] for row in rows) + gates, "gate_macs": gates,
            "size_bits": sum(row["size_bits"] for row in rows)}
