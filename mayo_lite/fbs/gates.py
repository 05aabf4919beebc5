"""Feature Boosting and Suppression on any Keras model: `add_gates` turns each `Conv2D → BatchNormalization → ReLU`
into one `GatedConv2D`, started from the dense weights as the runner starts a gated model from a dense checkpoint."""

import dataclasses

import keras
import numpy as np

from mayo_lite.layers import GatedConv2D
from mayo_lite.errors import ArgumentError
from mayo_lite.models.cloning import ModelError, all_layers, as_functional, calls, check_model, clone, consumers
from mayo_lite.fbs.sources import gate_sources


@dataclasses.dataclass
class GateReport:
    """What `add_gates` did: the convolutions it gated, and every other convolution with the reason it was not."""

    gated: list
    skipped: dict

    def __str__(self):
        lines = [f"gated {len(self.gated)} convolutions: {', '.join(self.gated) or 'none'}"]
        lines += [f"skipped {name}: {reason}" for name, reason in self.skipped.items()]
        return "\n".join(lines)


def _activation(layer):
    """'relu' or 'relu6' when `layer` is a plain ReLU (a `ReLU` layer or an `Activation`), else None."""
    if isinstance(layer, keras.layers.ReLU):
        if float(layer.negative_slope) != 0 or float(layer.threshold) != 0:
            return None
        return {None: "relu", 6.0: "relu6"}.get(None if layer.max_value is None else float(layer.max_value))
    if isinstance(layer, keras.layers.Activation):
        name = getattr(layer.activation, "__name__", None)
        return name if name in ("relu", "relu6") else None
    return None


def _only(layer_list):
    return layer_list[0] if len(layer_list) == 1 else None


def _pattern(conv):
    """(batch norm, activation layer, activation name) following `conv`, or a string saying why there is none."""
    if type(conv) is not keras.layers.Conv2D:
        return f"a {type(conv).__name__}, not a plain Conv2D"
    if conv.groups != 1 or conv.data_format != "channels_last":
        return "a grouped or channels-first convolution (a gate works on whole channels, last axis)"
    if getattr(conv.activation, "__name__", "linear") != "linear":
        return f"it has its own activation ({conv.activation.__name__}) before any batch norm"
    if calls(conv) != 1:
        return "it is called more than once (a shared layer)"
    batch_norm = _only(consumers(conv))
    if not isinstance(batch_norm, keras.layers.BatchNormalization):
        return "its output does not go to one BatchNormalization alone"
    if batch_norm.axis not in (-1, 3, [-1], [3]) or calls(batch_norm) != 1:
        return f"its batch norm {batch_norm.name} is not over the channel axis, or is shared"
    following = consumers(batch_norm)
    activation = _only(following)
    name = _activation(activation) if activation is not None else None
    if name is None:
        listed = ", ".join(layer.name for layer in following) or "nothing (a model output)"
        return f"its batch norm {batch_norm.name} is followed by {listed}, not by a ReLU alone"
    if calls(activation) != 1:
        return f"its activation {activation.name} is shared"
    return batch_norm, activation, name


def _gated_layer(conv, batch_norm, activation, options):
    settings = {"policy": "parametric", **options}
    return GatedConv2D(conv.filters, conv.kernel_size, strides=conv.strides, padding=conv.padding,
                       dilation_rate=conv.dilation_rate, activation=activation,
                       kernel_initializer=conv.kernel_initializer, kernel_regularizer=conv.kernel_regularizer,
                       kernel_constraint=conv.kernel_constraint, momentum=batch_norm.momentum,
                       epsilon=batch_norm.epsilon, center=batch_norm.center,
                       scale=True if settings["policy"] == "parametric" else batch_norm.scale,
                       name=conv.name, dtype=conv.dtype_policy, **settings)


def _start_from_dense(gated, conv, batch_norm):
    """The runner's dense-to-gated start: the kernel, the batch norm's moving statistics (a convolution bias moved
    into the moving mean), and each gate variable from the batch-norm variable `gate_sources` names."""
    values = {"kernel": keras.ops.convert_to_numpy(conv.kernel)}
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        variable = getattr(batch_norm, name, None)
        if variable is not None:
            values[name] = keras.ops.convert_to_numpy(variable)
    if conv.use_bias:  # BN(conv + b) is BN(conv) with its mean moved by b
        values["moving_mean"] = values["moving_mean"] - keras.ops.convert_to_numpy(conv.bias)
    values.setdefault("gamma", np.ones(conv.filters, np.float32))
    sources = gate_sources(gated.policy)
    for variable in gated.weights:
        name = variable.path.rsplit("/", 1)[-1]
        source = "kernel" if name == "kernel" else sources.get(name)
        if source in values:
            variable.assign(values[source].astype(variable.dtype))
    # The predictor's kernels start as GatedConv2D starts them (std 0.05), divided by √fan-in: a pooled input of
    # 2,048 channels would otherwise move each gamma by about 1 (ResNet-50 at density 1.0: 47% off the dense
    # logits), where divided it moves them by a few hundredths, enough to break ties between equal scales.
    for prefix in ("gate", "beta") if gated.parametric_beta else ("gate",):
        for kernel, _ in gated.predictor(prefix):
            kernel.assign(kernel / np.sqrt(kernel.shape[0]))


def add_gates(model, density, **gate_options):
    """A copy of a Keras model with Feature Boosting and Suppression: every `Conv2D → BatchNormalization → ReLU`
    (or ReLU6) chain becomes one `GatedConv2D` that keeps, per input image, the `ceil(filters · density)` channels
    its predictor finds most salient.

    Each gated layer starts from the dense weights as the runner does when it loads a dense checkpoint into a
    gated model: the convolution's kernel, the batch norm's moving mean and variance (a convolution bias folded
    into the mean) and offset, and the predictor's bias set to the batch norm's scale, so at `density=1.0` the
    copy computes nearly what the dense model computes (the predictor's small random kernel is the difference).
    Convolutions that do not fit the pattern are copied as they are, and the report says why; a convolution
    whose output feeds anything besides its batch norm, or whose batch norm feeds anything besides the ReLU, is
    one of them. Everything else is copied with its weights; the original model is not changed.

    The copy trains with `compile`/`fit`: the gates' regularisers are layer losses, a `"local"` moving threshold
    moves in the training step, and `mayo_lite.fbs.GateDensities` puts the gates' densities in the logs.

    Example:

    ```python
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    gated, report = mayo_lite.fbs.add_gates(model, density=0.5)
    print(report)            # which convolutions were gated, and why the others were not
    ```

    Args:
        model: a built functional or Sequential Keras model (nested functional models included).
        density: fraction of each gated layer's output channels kept per image, in (0, 1].
        **gate_options: other `GatedConv2D` arguments (`policy`, `threshold` `"online"` or `"local"`, `pool`,
            `factor`, `regularizer`, `use_mask`, ...). `threshold="global"` is refused: its shared threshold
            moves in the runner's training step, which `fit` does not run.

    Returns:
        `(gated_model, GateReport)`.

    Raises:
        ValueError: the model cannot be copied, no convolution fits the pattern, or a gate option is invalid.
    """
    check_model(model, "add_gates")
    if gate_options.get("threshold") == "global":
        raise ModelError("add_gates: threshold='global' moves one shared threshold in the runner's training step, "
                         "which model.fit does not run; use threshold='online' or 'local'")
    for name in ("filters", "kernel_size", "activation", "name", "global_threshold"):
        if name in gate_options:
            raise ModelError(f"add_gates: `{name}` comes from the model's own layers, not from gate_options")
    model = as_functional(model)
    chains, skipped = {}, {}
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D):
            found = _pattern(layer)
            if isinstance(found, str):
                skipped[layer.name] = found
            else:
                chains[id(layer)] = (layer, *found)
    if not chains:
        detail = "; ".join(f"{name}: {reason}" for name, reason in list(skipped.items())[:3])
        raise ModelError(f"add_gates: model {model.name!r} has no Conv2D → BatchNormalization → ReLU chain to gate"
                         + (f" ({detail})" if detail else " (it has no Conv2D)"))
    passed = {id(part) for _, batch_norm, activation, _ in chains.values() for part in (batch_norm, activation)}
    try:  # every gated layer built before any copy, so a bad option fails at once
        gated = {key: _gated_layer(conv, batch_norm, name, {"density": density, **gate_options})
                 for key, (conv, batch_norm, _, name) in chains.items()}
    except ArgumentError as error:
        raise ModelError(f"add_gates: {error}") from None

    def replace(layer):
        if id(layer) in gated:
            return gated[id(layer)]
        return layer if id(layer) in passed else None  # never called in the copy: no need to copy it

    def call(original, layer, *args, **kwargs):
        if id(original) in passed:  # the gated layer already normalised and activated its output
            return args[0]
        return layer(*args, **kwargs)

    copied, _ = clone(model, replace, call)
    for key, (conv, batch_norm, _, _) in chains.items():
        _start_from_dense(gated[key], conv, batch_norm)
    return copied, GateReport([conv.name for conv, *_ in chains.values()], skipped)
