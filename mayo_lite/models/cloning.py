"""Copies of any Keras model with some layers replaced, for `mayo_lite.prune.add_masks`/`strip_masks` and
`mayo_lite.fbs.add_gates`: Keras' `clone_model` does the graph, this adds what it lacks — refusing models it
cannot copy in one clear line, copying the weights, and reading who consumes a layer's output."""

import keras

from mayo_lite.errors import UserError


class ModelError(UserError, ValueError):
    """A model the Keras-model functions cannot work on (a subclassed model, one not built yet)."""


def _is_graph(model):
    # Keras has no public test for "functional" (`clone_model` checks for its private class `Functional`, which
    # `keras.Model(inputs, outputs)` returns and a subclassed model is not): found by name, not imported.
    return isinstance(model, keras.Sequential) or any(
        cls.__name__ == "Functional" and cls.__module__.startswith("keras") for cls in type(model).__mro__)


def check_model(model, function):
    """A `ModelError` unless `model` is a built Sequential or functional Keras model."""
    if not isinstance(model, keras.Model):
        raise ModelError(f"{function}: expected a Keras model, got {type(model).__name__}")
    if not _is_graph(model):
        raise ModelError(f"{function}: model {model.name!r} is a subclassed model ({type(model).__name__}); its "
                         f"layers are called in Python code that cannot be rewritten. Build it with the functional "
                         f"API or keras.Sequential")
    if not model.built or not model.inputs:
        raise ModelError(f"{function}: model {model.name!r} is not built; give it an input shape "
                         f"(keras.Input) or call it on data first")


def as_functional(model):
    """A functional model over the same layers (a Sequential's layers called in order), since only functional
    models let `clone_model` change how layers are called."""
    if not isinstance(model, keras.Sequential):
        return model
    inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype)
    outputs = inputs
    for layer in model.layers:
        outputs = layer(outputs)
    return keras.Model(inputs, outputs, name=model.name)


def all_layers(model):
    """Every layer of `model` that is not itself a model, nested models' layers included, each once, in order."""
    seen = {}
    for layer in model.layers:
        for inner in (all_layers(layer) if isinstance(layer, keras.Model) else [layer]):
            seen.setdefault(id(inner), inner)
    return list(seen.values())


def consumers(layer):
    """The distinct layers that take `layer`'s output, in every graph the layer belongs to."""
    # Keras keeps a layer's consumers only in its private `_outbound_nodes`.
    found = {id(node.operation): node.operation for node in getattr(layer, "_outbound_nodes", [])}
    return list(found.values())


def calls(layer):
    """How many times `layer` is called in its graphs (a shared layer more than once)."""
    return len(getattr(layer, "_inbound_nodes", []))


def _named(layer):
    prefix = layer.path + "/" if getattr(layer, "path", None) else ""
    return {variable.path.removeprefix(prefix): variable for variable in layer.weights}


def copy_weights(source, target, transform=None):
    """Assigns `source`'s weights to `target`'s of the same name; `transform(name, value)` may change a value, and
    a target weight without a source (a new mask) keeps its initial value."""
    values = {name: keras.ops.convert_to_numpy(variable) for name, variable in _named(source).items()}
    for name, variable in _named(target).items():
        if name in values:
            value = transform(name, values[name]) if transform else values[name]
            variable.assign(value.astype(variable.dtype) if hasattr(value, "astype") else value)


def clone(model, replace, call=None):
    """A copy of `model` (Sequential or functional, nested models included) in which `replace(layer)` gives each
    layer's replacement (None: an identical copy, given the original's weights).

    `call(original, layer, *args, **kwargs)`, when given, calls each layer of the copy (functional graphs only).
    Returns the copy and {id(original layer): its replacement} for the replaced layers, whose weights are the
    caller's to set.
    """
    replaced, same, originals = {}, [], {}

    def clone_function(layer):
        copy = replace(layer)
        if copy is None:
            copy = layer.__class__.from_config(layer.get_config())
            same.append((layer, copy))
        else:
            replaced[id(layer)] = copy
        originals[id(copy)] = layer
        return copy

    def call_function(layer, *args, **kwargs):
        return call(originals[id(layer)], layer, *args, **kwargs)

    if call is not None:
        model = as_functional(model)
    copied = keras.models.clone_model(model, clone_function=clone_function,
                                      call_function=call_function if call is not None else None, recursive=True)
    for original, copy in same:
        copy_weights(original, copy)
    return copied, replaced
