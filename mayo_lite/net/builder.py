"""Turns a resolved `model` section (`layers` + `graph`) into a functional Keras model.

Each YAML layer becomes one or more Keras layers (a convolution may bring padding, a normalizer and an
activation); every Keras layer remembers the YAML layer it came from in `mayo_group`, so `info` and pruning
can speak in the config's names. Modules are flattened: layer `conv1` of module instance `b21` is `b21.conv1`.
"""

import logging
import re

import keras

from mayo_lite.errors import ConfigError, did_you_mean
from mayo_lite.layers import GlobalThreshold
from mayo_lite.net.layer_types import LAYER_TYPES
from mayo_lite.net.specs import LayerBuilder, check_keys, sequence

log = logging.getLogger("mayo_lite")

_MODULE_KEYS = {"kwargs", "layers", "graph", "inputs"}


class GraphBuilder:
    """Wires YAML layers along `graph` edges, flattening modules into the same Keras graph."""

    def __init__(self, origin=None, masked=False, slimming=0.0):
        self.origin = origin or (lambda path: None)
        self.masked = masked
        self.slimming = slimming
        self._global_threshold = None

    def global_threshold(self, decay):
        """The one GlobalThreshold that every gated layer with `threshold: global` in this model shares."""
        if self._global_threshold is None:
            self._global_threshold = GlobalThreshold(decay=decay, name="global_threshold")
        elif self._global_threshold.decay != decay:
            raise ValueError(f"gate_params.decay: every layer with a global threshold must share one decay, "
                             f"got {decay} and {self._global_threshold.decay}")
        return self._global_threshold

    def where(self, path):
        source = self.origin(path)
        return f"{source}: {path}" if source else path

    def layer(self, name, spec, path):
        where = self.where(path)
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: a layer spec must be a mapping with `type`, got {spec!r}")
        kind = spec.get("type")
        if kind == "module":
            return self.module(name, spec, path)
        if kind not in LAYER_TYPES:
            hint = (did_you_mean(kind, [*LAYER_TYPES, "module"], 3)
                    or f"known: {', '.join(sorted(LAYER_TYPES))}")
            raise ConfigError(f"{where}.type: unknown layer type {kind!r}; {hint}")
        build, allowed = LAYER_TYPES[kind]
        check_keys(spec, allowed, where)
        builder = LayerBuilder(name, spec, where, self.global_threshold, lambda key: self.where(f"{path}.{key}"),
                               self.masked, self.slimming)
        try:
            build(builder)
            self._leftover_quantizers(builder, kind)
        except ConfigError as error:
            raise self._blame(error, path, spec) from error.__cause__
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: {str(error).splitlines()[0]}{self._overlays(path, spec)}") from error
        return builder

    @staticmethod
    def _leftover_quantizers(builder, kind):
        """Quantizers the layer type did not take: an activation's quantizes the layer's output (Mayo's identity
        layer applies it to its input, as `prep` does); one of a variable the layer does not have (biases under a
        batch norm) is unused, as in Mayo."""
        builder.quantize_activation()

    def _blame(self, error, path, spec):
        """An error about one key of a layer names the file that set that key (an overlay that changed the layer),
        not the file that first defined the layer."""
        where = self.where(path)
        text = str(error)
        for key in spec:
            prefix = f"{where}.{key}"
            if text.startswith(prefix) and self.origin(f"{path}.{key}") != self.origin(path):
                return ConfigError(self.where(f"{path}.{key}") + text[len(prefix):])
        return error

    def _overlays(self, path, spec):
        """` (kernel_size set in overlay.yaml)` for the keys of a layer that another file than its own set."""
        own = self.origin(path)
        others = {}
        for key in spec:
            origin = self.origin(f"{path}.{key}")
            if origin and origin != own:
                others.setdefault(origin, []).append(str(key))
        return "".join(f" ({', '.join(keys)} set in {origin})" for origin, keys in others.items())

    def module(self, name, spec, path):
        where = self.where(path)
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{where}.kwargs: expected a mapping, got {kwargs!r}")
        unknown = sorted(str(key) for key in spec if key not in _MODULE_KEYS | {"type"} and key not in kwargs)
        if unknown:
            # Mayo passes a module only its `kwargs` and ignores the other keys of its instance (its Hadamard
            # models give `kernel_size` to a module that fixes it): ignored here too, but said.
            log.warning("%s: key %s ignored: not a keyword argument of this module (%s), as in Mayo", where,
                        ", ".join(unknown), ", ".join(sorted(map(str, kwargs))) or "none")
        # The config room has substituted the module's `^()` arguments already (Config.get expands modules).
        layers, graph = spec.get("layers") or {}, spec.get("graph")

        names = spec.get("inputs", ["input"])
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{where}.inputs: expected a list of tensor names, got {names!r}")

        def apply(inputs):
            # Mayo's multi-input modules: the edge's `from` tensors become the module's `inputs`, in order.
            values = inputs if isinstance(inputs, list) else [inputs]
            if len(values) != len(names):
                raise ConfigError(f"{where}: the module takes {len(names)} input(s) ({', '.join(names)}), the edge "
                                  f"gives {len(values)}")
            return self.graph(layers, graph, dict(zip(names, values)), f"{path}", prefix=f"{name}.")
        return apply

    def graph(self, layers, graph, tensors, path, prefix=""):
        """Applies the edges of `graph` starting from `tensors` (which hold `input`); returns `output`."""
        if not isinstance(layers, dict):
            raise ConfigError(f"{self.where(path + '.layers')}: expected a mapping of layer names to specs")
        edges = sequence(graph)
        if graph is None or not all(isinstance(edge, dict) for edge in edges):
            raise ConfigError(f"{self.where(path + '.graph')}: expected a mapping or a list of mappings "
                              "{from, with, to}")
        built = {}
        pending = [(index, edge) for index, edge in enumerate(edges) if self._reaches_output(edges, edge, path)]
        while pending:
            progressed = False
            for item in list(pending):
                index, edge = item
                edge_path = f"{path}.graph" + (f".{index}" if isinstance(graph, list) else "")
                sources = sequence(edge.get("from"))
                if not all(source in tensors for source in sources):
                    continue
                pending.remove(item)
                progressed = True
                tensors[self._target(edge, edge_path)] = self._edge(
                    layers, edge, sources, tensors, built, path, edge_path, prefix)
            if not progressed:
                index, edge = pending[0]
                missing = [s for s in sequence(edge.get("from")) if s not in tensors]
                raise ConfigError(f"{self.where(f'{path}.graph')}: edge to {edge.get('to')!r} reads "
                                  f"{', '.join(map(repr, missing))}, which no edge produces")
        if "output" not in tensors:
            raise ConfigError(f"{self.where(f'{path}.graph')}: the graph never reaches `output`")
        # Inside a module, a layer its keyword arguments did not pick (`with: ^(shortcut)`) is unused by design.
        for name in layers if not prefix else []:
            if not str(name).startswith("_") and name not in built:
                log.warning("%s: this layer is not used by the graph", self.where(f"{path}.layers.{name}"))
        return tensors["output"]

    def _reaches_output(self, edges, edge, path):
        """Whether `edge` feeds `output`: as Mayo does, a branch that never reaches it is not built (logged)."""
        needed, changed = {"output"}, True
        while changed:
            changed = False
            for other in edges:
                if isinstance(other, dict) and other.get("to") in needed:
                    for source in sequence(other.get("from")):
                        if isinstance(source, str) and source not in needed:
                            needed.add(source)
                            changed = True
        if not isinstance(edge, dict) or edge.get("to") in needed:
            return True
        log.info("%s: the edge to %r does not lead to `output`; its layers are not built, as in Mayo",
                 self.where(f"{path}.graph"), edge.get("to"))
        return False

    def _target(self, edge, edge_path):
        unknown = sorted(set(edge) - {"from", "with", "to"})
        if unknown or "from" not in edge or "to" not in edge:
            raise ConfigError(f"{self.where(edge_path)}: an edge is {{from, with, to}}, got keys {sorted(edge)}")
        target = edge["to"]
        if not isinstance(target, str):
            raise ConfigError(f"{self.where(edge_path)}.to: expected a tensor name, got {target!r}")
        return target

    def _edge(self, layers, edge, sources, tensors, built, path, edge_path, prefix):
        values = [tensors[source] for source in sources]
        value = values[0] if len(values) == 1 else values
        for name in sequence(edge.get("with")) if edge.get("with") is not None else []:
            if not isinstance(name, str) or name.startswith("_") or name not in layers:
                raise ConfigError(f"{self.where(edge_path)}.with: {name!r} is not a layer of {path}.layers")
            if name in built:
                raise ConfigError(f"{self.where(edge_path)}.with: layer {name!r} is used twice; "
                                  "give each use its own layer")
            built[name] = self.layer(prefix + name, layers[name], f"{path}.layers.{name}")
            try:
                value = built[name](value)
            except (ValueError, tf_errors()) as error:
                # Keras' shape checks (a kernel larger than its input, a bad axis, ...) and TensorFlow's own.
                layer_path = f"{path}.layers.{name}"
                raise ConfigError(f"{self.where(layer_path)}: {keras_message(error)}"
                                  f"{self._overlays(layer_path, layers[name])}") from error
        if isinstance(value, list):
            raise ConfigError(f"{self.where(edge_path)}: several inputs {sources} need a layer that joins them "
                              "(add, concat, mul) or a module with as many `inputs`")
        return value


def tf_errors():
    """TensorFlow's error base class, which a layer's call may raise while the graph is built."""
    import tensorflow as tf

    return tf.errors.OpError


def keras_message(error):
    """The line of a Keras error that says what is wrong (Keras wraps a layer's error in "Exception encountered when
    calling ...", with terminal colour codes)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 1 and lines[0].startswith("Exception encountered when calling"):
        return lines[1]
    return lines[0] if lines else type(error).__name__


def build_model(model, input_shape, origin=None, masked=False):
    """Builds the functional Keras model described by the resolved `model` section.

    Args:
        model: mapping with `name`, `layers` and `graph`, references already resolved.
        input_shape: (height, width, channels) of one image.
        origin: optional function from a key path to the file that set it, for error messages.
        masked: give every convolution (gated ones included, depthwise ones not) a pruning mask.
    """
    if not isinstance(model, dict):
        raise ConfigError(f"model: expected a mapping with name, layers and graph, got {model!r}")
    slimming = model.get("batch_norm_scale_l1", 0.0)
    if isinstance(slimming, bool) or not isinstance(slimming, (int, float)) or slimming < 0:
        raise ConfigError(f"{(origin or (lambda p: None))('model.batch_norm_scale_l1') or 'model'}: "
                          f"model.batch_norm_scale_l1: expected a non-negative number, got {slimming!r}")
    builder = GraphBuilder(origin, masked, float(slimming))
    for key in ("name", "layers", "graph"):
        if key not in model:
            raise ConfigError(f"{builder.where('model')}: missing `model.{key}`")
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    outputs = builder.graph(model["layers"], model["graph"], {"input": inputs}, "model")
    if outputs is inputs:
        raise ConfigError(f"{builder.where('model.graph')}: no layer between `input` and `output`; a model needs "
                          "at least one")
    return keras.Model(inputs, outputs, name=str(model["name"]))
