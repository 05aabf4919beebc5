"""The model's side of importing pretrained weights, common to every converter: which variables the model has, that
every target layer exists with the source's strides, that every shape fits and every weight gets a value, and the
background class."""

import keras
import numpy as np

from mayo_lite.errors import CheckpointError
from mayo_lite.fbs.sources import dense_sources
from mayo_lite.weights.architectures import BN_ROLES, CONVOLUTIONS, PREFIX, SHOWN


def first_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def listed(items):
    items = list(items)
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


class ModelSide:
    """What the mapping needs to know of this project's model: its variables' shapes and its layers."""

    def __init__(self, model):
        self.model = model
        self.layers = {layer.name: layer for layer in model.layers}
        self.shapes = {variable.path: tuple(variable.shape) for variable in model.variables}
        # A gated model has no `X.bn`: its gate layer X takes the dense batch norm's variables (Session.load).
        self.aliases = {source: target for target, source in dense_sources(model).items()}
        for source, target in self.aliases.items():
            self.shapes.setdefault(source, self.shapes[target])

    def has_layer(self, name):
        return name in self.layers or any(alias.startswith(f"{name}/") for alias in self.aliases)

    def epsilon(self, bn_name):
        layer = self.layers.get(bn_name) or self.layers.get(bn_name.removesuffix(".bn"))
        return float(getattr(layer, "epsilon", 1e-3))

    def required(self):
        """The variables every import must fill: weights of convolutions, dense layers and batch norms."""
        names = []
        for layer in self.model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                roles = BN_ROLES
            elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
                roles = ("kernel", "bias")
            else:
                continue
            names += [variable.path for variable in layer.variables if variable.path.rsplit("/", 1)[-1] in roles]
        return names


def check_layout(where, architecture, model, strides=True):
    """Every target layer exists; with `strides`, every convolution has the source's stride."""
    absent = [entry.target for entry in architecture.entries if not model.has_layer(entry.target)]
    if absent:
        raise CheckpointError(
            f"{where}: {architecture.title} weights do not fit model {model.model.name!r}: it has no layer "
            f"{listed(absent)} (these weights are for {architecture.config})")
    differ = []
    for entry in architecture.entries if strides else ():
        found = getattr(model.layers.get(entry.target), "strides", None)
        if entry.kind in CONVOLUTIONS and found is not None and tuple(found) != (entry.stride, entry.stride):
            differ.append(f"{entry.target} has stride {tuple(found)[0]} where {entry.source} has {entry.stride}")
    if differ:
        hint = f"; {architecture.hint}" if architecture.hint else ""
        raise CheckpointError(f"{where}: {architecture.title} weights do not fit model {model.model.name!r}: "
                              f"{listed(differ)}{hint}")


def fit(where, architecture, sources, model):
    """Maps source layers onto the model.

    sources: {entry.source: ({role: array in Keras layout}, {role: (source tensor name, source shape)}, epsilon)},
    one item per entry. Returns {"model/<variable path>": float32 array}.
    """
    values, origin, folds = {}, {}, []
    for entry in architecture.entries:
        arrays, names, epsilon = sources[entry.source]
        if entry.kind == "bn":
            arrays = dict(arrays)
            correction = epsilon - model.epsilon(entry.target)
            if correction:
                arrays["moving_variance"] = np.maximum(
                    arrays["moving_variance"].astype(np.float64) + correction, 0.0)
        for role, array in arrays.items():
            name = f"{entry.target}/{role}"
            if role == "bias" and name not in model.shapes:
                folds.append((entry, array))  # this project's convolution has no bias: its batch norm takes it
                continue
            values[name], origin[name] = array, names[role]
        if entry.kind != "bn" and f"{entry.target}/bias" in model.shapes and "bias" not in arrays:
            values[f"{entry.target}/bias"] = np.zeros(model.shapes[f"{entry.target}/bias"], np.float32)
            origin[f"{entry.target}/bias"] = ("(zeros: the source has no bias)", ())
        if entry.classifier:
            add_background(values, entry.target, model)
    nowhere, wrong = [], []
    for entry, bias in folds:
        mean, (source_name, source_shape) = f"{entry.target}.bn/moving_mean", sources[entry.source][1]["bias"]
        if mean not in values:
            nowhere.append(f"{source_name} {source_shape}")
        elif values[mean].shape != bias.shape:
            wrong.append(f"{source_name} {source_shape} does not fit {mean} {model.shapes[mean]}")
        else:
            values[mean] = values[mean].astype(np.float64) - bias
    if nowhere:
        raise CheckpointError(f"{where}: {architecture.title} has biases that model {model.model.name!r} has no "
                              f"place for (no bias and no batch norm after the convolution): {listed(nowhere)}")
    absent = [f"{origin[name][0]} ({name})" for name in values if name not in model.shapes]
    if absent:
        raise CheckpointError(f"{where}: model {model.model.name!r} has no variable for {listed(absent)} "
                              f"(these weights are for {architecture.config})")
    wrong += [f"{origin[name][0]} {origin[name][1]} does not fit {name} {model.shapes[name]}"
              for name, value in values.items() if value.shape != model.shapes[name]]
    if wrong:
        raise CheckpointError(f"{where}: {architecture.title} weights do not fit model {model.model.name!r}: "
                              f"{listed(wrong)}")
    unfilled = [name for name in model.required() if name not in values]
    if unfilled:
        raise CheckpointError(f"{where}: {architecture.title} weights leave {len(unfilled)} variable(s) of model "
                              f"{model.model.name!r} without a value: {listed(unfilled)} (these weights are for "
                              f"{architecture.config})")
    return {PREFIX + name: np.ascontiguousarray(value, dtype=np.float32) for name, value in values.items()}


def add_background(values, target, model):
    """1000 source classes onto a model with 1001 outputs: outputs 1..1000, and output 0 a constant below them."""
    kernel, bias = f"{target}/kernel", f"{target}/bias"
    if kernel not in values or bias not in values or kernel not in model.shapes or bias not in model.shapes:
        return
    if model.shapes[kernel][-1] != values[kernel].shape[-1] + 1 or model.shapes[bias] != (values[bias].size + 1,):
        return
    weights, biases = values[kernel], values[bias]
    zeros = np.zeros(weights.shape[:-1] + (1,), weights.dtype)
    values[kernel] = np.concatenate([zeros, weights], axis=-1)
    values[bias] = np.concatenate([[float(np.min(biases)) - 10.0], biases]).astype(biases.dtype)
