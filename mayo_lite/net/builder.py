"""Turns a resolved `model` section (`layers` + `graph`) into a functional Keras model.

Each YAML layer becomes one or more Keras layers (a convolution may bring padding, a normalizer and an
activation); every Keras layer remembers the YAML layer it came from in `mayo_group`, so `info` and pruning
can speak in the config's names. Modules are flattened: layer `conv1` of module instance `b21` is `b21.conv1`.
"""

import difflib
import logging
import re

import keras

from mayo_lite import registry
from mayo_lite.config import substitute_module_kwargs
from mayo_lite.errors import ConfigError
from mayo_lite.layers import (GatedConv2D, GlobalThreshold, LocalResponseNormalization, MaskedConv2D, ReduceMean,
                              Squeeze)
from mayo_lite.layers.gated import GateArgumentError

log = logging.getLogger("mayo_lite")

GROUP_ATTRIBUTE = "mayo_group"

_CONV_KEYS = {"kernel_size", "stride", "padding", "rate", "activation_fn", "normalizer_fn", "normalizer_params",
              "weights_initializer", "biases_initializer", "weights_regularizer", "biases_regularizer", "trainable"}
_POOL_KEYS = {"kernel_size", "stride", "padding"}
_BATCH_NORM_KEYS = {"momentum", "decay", "epsilon", "scale", "center", "trainable"}


def _sequence(value):
    return value if isinstance(value, list) else [value]


def _pair(value, key, where):
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where}.{key}: expected an integer or a pair of integers, got {value!r}")
    if isinstance(value, int) and value > 0:
        return (value, value)
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return tuple(value)
    raise ConfigError(f"{where}.{key}: expected a positive integer or a pair of them, got {value!r}")


class LayerBuilder:
    """Builds the Keras layers of one YAML layer spec and applies them to tensors."""

    def __init__(self, name, spec, where, global_threshold=None, where_key=None, masked=False, slimming=0.0):
        self.name = name
        self.spec = spec
        self.where = where
        self.layers = []
        self.global_threshold = global_threshold
        self._where_key = where_key
        self.masked = masked
        self.slimming = slimming

    def slim(self, batch_norm):
        """Network slimming (Liu et al., 2017): an L1 penalty on the batch norm's scales, when the model asks."""
        if self.slimming > 0 and batch_norm.scale:
            batch_norm.gamma_regularizer = keras.regularizers.L1(self.slimming)

    @property
    def convolution_class(self):
        """Conv2D, or with masks (static pruning) the drop-in MaskedConv2D."""
        return MaskedConv2D if self.masked else keras.layers.Conv2D

    def where_key(self, key):
        """Where `key` of this layer was set (the file that set it, which may not be the layer's), for errors."""
        return self._where_key(key) if self._where_key else f"{self.where}.{key}"

    def keep(self, layer):
        setattr(layer, GROUP_ATTRIBUTE, self.name)
        self.layers.append(layer)
        return layer

    def get(self, key, default=None):
        return self.spec.get(key, default)

    def integer(self, key, default, minimum=1):
        value = self.spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{self.where}.{key}: expected an integer >= {minimum}, got {value!r}")
        return value

    def number(self, key, default, low=None, high=None):
        value = self.spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{self.where}.{key}: expected a number, got {value!r}")
        if (low is not None and value <= low) or (high is not None and value > high):
            raise ConfigError(f"{self.where}.{key}: expected a number in ({low}, {high}], got {value!r}")
        return float(value)

    def padding(self, default):
        """Keras padding mode, plus explicit zero padding (slim's integer padding) applied first."""
        value = self.spec.get("padding", default)
        if isinstance(value, str) and value.lower() in ("same", "valid"):
            return value.lower(), None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return "valid", (value, value)
        if (isinstance(value, list) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
            return "valid", tuple(value)
        raise ConfigError(
            f"{self.where}.padding: expected same, valid, an integer or a pair of integers, got {value!r}")

    def initializer(self, key, default):
        spec = self.spec.get(key, default)
        return registry.build("initializer", spec, f"{self.where}.{key}") if spec is not None else default

    def regularizer(self, key):
        spec = self.spec.get(key)
        return registry.build("regularizer", spec, f"{self.where}.{key}") if spec is not None else None

    def normalizer(self):
        spec = self.spec.get("normalizer_fn")
        if spec is None:
            return None
        params = self.spec.get("normalizer_params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{self.where}.normalizer_params: expected a mapping, got {params!r}")
        params = {key: value for key, value in params.items() if key != "trainable"}
        return registry.build("normalizer", spec, f"{self.where}.normalizer_fn", arguments=params)

    def activation(self, key="activation_fn", default="relu"):
        return registry.activation(self.spec.get(key, default), f"{self.where}.{key}")

    def trainable(self):
        value = self.spec.get("trainable", True)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.where}.trainable: expected true or false, got {value!r}")
        return value

    def finish(self, main):
        """The slim tail of a weighted layer: normalizer (which disables the bias), then activation."""
        normalizer = self.normalizer()
        if normalizer is not None:
            batch_norm = self.keep(normalizer.build(f"{self.name}.bn"))
            batch_norm.trainable = self.trainable()
            self.slim(batch_norm)
        activation = self.activation()
        if activation is not None:
            self.keep(keras.layers.Activation(activation, name=f"{self.name}.act"))
        return main

    def bias_arguments(self):
        use_bias = self.spec.get("normalizer_fn") is None
        arguments = {"use_bias": use_bias}
        if use_bias:
            arguments["bias_initializer"] = self.initializer("biases_initializer", "zeros")
            arguments["bias_regularizer"] = self.regularizer("biases_regularizer")
        return arguments

    def __call__(self, inputs):
        outputs = inputs
        for layer in self.layers:
            outputs = layer(outputs)
        return outputs


def _convolution(builder):
    padding, explicit = builder.padding("same")
    if explicit:
        builder.keep(keras.layers.ZeroPadding2D(explicit, name=f"{builder.name}.pad"))
    conv = builder.keep(builder.convolution_class(
        builder.integer("num_outputs", None),
        _pair(builder.get("kernel_size"), "kernel_size", builder.where),
        strides=_pair(builder.get("stride", 1), "stride", builder.where),
        dilation_rate=_pair(builder.get("rate", 1), "rate", builder.where),
        padding=padding,
        kernel_initializer=builder.initializer("weights_initializer", "glorot_uniform"),
        kernel_regularizer=builder.regularizer("weights_regularizer"),
        trainable=builder.trainable(),
        name=builder.name,
        **builder.bias_arguments()))
    builder.finish(conv)


# gate_params key -> GatedConv2D argument (docs/design/fbs-semantics.md's table; `density` is required).
GATE_PARAMS = {
    "enable": "enable", "density": "density", "policy": "policy", "pool": "pool", "granularity": "granularity",
    "factor": "factor", "threshold": "threshold", "decay": "decay", "regularizer": "regularizer",
    "trainable": "trainable_gate", "norm": "norm", "parametric_beta": "parametric_beta",
    "add_beta_first": "add_beta_first",
}
# GatedConv2D argument -> where it comes from in the YAML layer, for error messages.
_GATE_ARGUMENT_KEYS = {
    **{argument: f"gate_params.{key}" for key, argument in GATE_PARAMS.items()},
    "filters": "num_outputs", "kernel_size": "kernel_size", "strides": "stride", "dilation_rate": "rate",
    "momentum": "normalizer_params.decay", "epsilon": "normalizer_params.epsilon",
    "scale": "normalizer_params.scale", "center": "normalizer_params.center", "trainable_kernel": "trainable",
}


def _gate_arguments(builder):
    params = builder.get("gate_params")
    if not isinstance(params, dict):
        raise ConfigError(f"{builder.where_key('gate_params')}: expected a mapping with at least `density` "
                          f"(usually $(_gate)), got {params!r}")
    unknown = sorted(str(key) for key in params if key not in GATE_PARAMS)
    if unknown:
        hints = [f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(key, GATE_PARAMS, 1))
                 else key for key in unknown]
        raise ConfigError(f"{builder.where_key('gate_params')}: unknown key {', '.join(hints)} "
                          f"(accepted: {', '.join(GATE_PARAMS)})")
    if "density" not in params:
        raise ConfigError(f"{builder.where_key('gate_params')}.density: missing; the fraction of output channels each "
                          "input keeps, in (0, 1]")
    arguments = {GATE_PARAMS[key]: value for key, value in params.items()}
    # The gate takes the place of the layer's batch norm (docs/design/fbs-semantics.md, parametric policy step 2), so it reads its
    # statistics' decay and epsilon, and whether it has a scale and an offset, from `normalizer_params`.
    normalizer = builder.normalizer()
    if normalizer is None:
        raise ConfigError(f"{builder.where}.normalizer_fn: a gated convolution needs a batch-norm normalizer "
                          "(the gate replaces its scale); add normalizer_fn: batch_norm")
    for key in ("momentum", "epsilon", "scale", "center"):
        if key in normalizer.kwargs:
            arguments[key] = normalizer.kwargs[key]
    if arguments.get("policy", "parametric") == "parametric" and not arguments.get("scale", True):
        raise ConfigError(f"{builder.where}.normalizer_params.scale: the parametric gate replaces the batch norm's "
                          "scale, so the base layer must have scale: true")
    return arguments


def _gated_convolution(builder):
    padding, explicit = builder.padding("same")
    if explicit:
        builder.keep(keras.layers.ZeroPadding2D(explicit, name=f"{builder.name}.pad"))
    arguments = _gate_arguments(builder)
    try:
        if arguments.get("threshold") == "global":
            arguments["global_threshold"] = builder.global_threshold(arguments.get("decay", 0.9997))
        builder.keep(GatedConv2D(
            builder.integer("num_outputs", None),
            _pair(builder.get("kernel_size"), "kernel_size", builder.where),
            strides=_pair(builder.get("stride", 1), "stride", builder.where),
            dilation_rate=_pair(builder.get("rate", 1), "rate", builder.where),
            padding=padding,
            activation=builder.activation(),
            kernel_initializer=builder.initializer("weights_initializer", "glorot_uniform"),
            kernel_regularizer=builder.regularizer("weights_regularizer"),
            trainable_kernel=builder.trainable(),
            use_mask=builder.masked,
            name=builder.name,
            **arguments))
    except GateArgumentError as error:
        key = _GATE_ARGUMENT_KEYS.get(error.argument, error.argument)
        first, _, rest = key.partition(".")
        raise ConfigError(f"{builder.where_key(first)}{'.' + rest if rest else ''}: expected {error.expected}, "
                          f"got {error.value!r}") from None


def _depthwise(builder, name):
    padding, explicit = builder.padding("same")
    if explicit:
        builder.keep(keras.layers.ZeroPadding2D(explicit, name=f"{builder.name}.pad"))
    separable = name != builder.name
    return builder.keep(keras.layers.DepthwiseConv2D(
        _pair(builder.get("kernel_size"), "kernel_size", builder.where),
        strides=_pair(builder.get("stride", 1), "stride", builder.where),
        dilation_rate=_pair(builder.get("rate", 1), "rate", builder.where),
        depth_multiplier=builder.integer("depth_multiplier", 1),
        padding=padding,
        depthwise_initializer=builder.initializer("weights_initializer", "glorot_uniform"),
        depthwise_regularizer=builder.regularizer("weights_regularizer"),
        trainable=builder.trainable(),
        name=name,
        **({"use_bias": False} if separable else builder.bias_arguments())))


def _depthwise_convolution(builder):
    builder.finish(_depthwise(builder, builder.name))


def _depthwise_separable_convolution(builder):
    # slim.separable_conv2d: depthwise then pointwise, the normalizer and activation only after the pointwise.
    _depthwise(builder, f"{builder.name}.depthwise")
    pointwise = builder.keep(builder.convolution_class(
        builder.integer("num_outputs", None), 1,
        kernel_initializer=builder.initializer("pointwise_initializer", "glorot_uniform"),
        kernel_regularizer=builder.regularizer("weights_regularizer"),
        trainable=builder.trainable(),
        name=builder.name,
        **builder.bias_arguments()))
    builder.finish(pointwise)


def _fully_connected(builder):
    dense = builder.keep(keras.layers.Dense(
        builder.integer("num_outputs", None),
        kernel_initializer=builder.initializer("weights_initializer", "glorot_uniform"),
        kernel_regularizer=builder.regularizer("weights_regularizer"),
        trainable=builder.trainable(),
        name=builder.name,
        **builder.bias_arguments()))
    builder.finish(dense)


def _pool(cls):
    def build(builder):
        padding, explicit = builder.padding("valid")
        if explicit:
            builder.keep(keras.layers.ZeroPadding2D(explicit, name=f"{builder.name}.pad"))
        builder.keep(cls(
            _pair(builder.get("kernel_size"), "kernel_size", builder.where),
            strides=_pair(builder.get("stride", 2), "stride", builder.where),
            padding=padding, name=builder.name))
    return build


def _dropout(builder):
    keep = builder.number("keep_prob", None, low=0.0, high=1.0)
    builder.keep(keras.layers.Dropout(1.0 - keep, name=builder.name))


def _axes(builder, default):
    value = builder.get("axis", default)
    axes = _sequence(value)
    if not axes or any(isinstance(a, bool) or not isinstance(a, int) or a == 0 for a in axes):
        raise ConfigError(f"{builder.where}.axis: expected a non-batch axis or a list of them, got {value!r}")
    return axes


def _squeeze(builder):
    builder.keep(Squeeze(_axes(builder, [1, 2]), name=builder.name))


def _reduce_mean(builder):
    keepdims = builder.get("keepdims", builder.get("keep_dims", False))
    builder.keep(ReduceMean(_axes(builder, [1, 2]), keepdims=bool(keepdims), name=builder.name))


def _pad(builder):
    paddings = builder.get("paddings")
    try:
        pairs = [tuple(p) for p in paddings]
        if len(pairs) == 4:
            if pairs[0] != (0, 0) or pairs[3] != (0, 0):
                raise ValueError
            pairs = pairs[1:3]
        if len(pairs) != 2 or any(len(p) != 2 or min(p) < 0 for p in pairs):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(
            f"{builder.where}.paddings: expected [[top, bottom], [left, right]] (or NHWC pairs with zero "
            f"batch and channel padding), got {paddings!r}") from None
    builder.keep(keras.layers.ZeroPadding2D(tuple(pairs), name=builder.name))


def _identity(builder):
    builder.keep(keras.layers.Identity(name=builder.name))


def _add(builder):
    builder.keep(keras.layers.Add(name=builder.name))


def _concat(builder):
    builder.keep(keras.layers.Concatenate(axis=builder.get("axis", -1), name=builder.name))


def _flatten(builder):
    builder.keep(keras.layers.Flatten(name=builder.name))


def _activation(builder):
    builder.keep(keras.layers.Activation(builder.activation("mode", None) or "linear", name=builder.name))


def _batch_normalization(builder):
    momentum = builder.get("momentum", builder.get("decay", 0.99))
    builder.slim(builder.keep(keras.layers.BatchNormalization(
        momentum=momentum, epsilon=builder.get("epsilon", 0.001), scale=builder.get("scale", True),
        center=builder.get("center", True), trainable=builder.trainable(), name=builder.name)))


def _local_response_normalization(builder):
    builder.keep(LocalResponseNormalization(
        depth_radius=builder.integer("depth_radius", 5, minimum=0), bias=builder.get("bias", 1.0),
        alpha=builder.get("alpha", 1.0), beta=builder.get("beta", 0.5), name=builder.name))


# type -> (build function, the keys its spec may have besides `type`)
LAYER_TYPES = {
    "convolution": (_convolution, _CONV_KEYS | {"num_outputs"}),
    "gated_convolution": (_gated_convolution, _CONV_KEYS - {"biases_initializer", "biases_regularizer"}
                          | {"num_outputs", "gate_params"}),
    "depthwise_convolution": (_depthwise_convolution, _CONV_KEYS | {"depth_multiplier"}),
    "depthwise_separable_convolution": (
        _depthwise_separable_convolution, _CONV_KEYS | {"num_outputs", "depth_multiplier", "pointwise_initializer"}),
    "fully_connected": (_fully_connected, _CONV_KEYS - {"kernel_size", "stride", "padding", "rate"}
                        | {"num_outputs"}),
    "max_pool": (_pool(keras.layers.MaxPooling2D), _POOL_KEYS),
    "average_pool": (_pool(keras.layers.AveragePooling2D), _POOL_KEYS),
    "dropout": (_dropout, {"keep_prob"}),
    "flatten": (_flatten, set()),
    "squeeze": (_squeeze, {"axis"}),
    "reduce_mean": (_reduce_mean, {"axis", "keepdims", "keep_dims"}),
    "pad": (_pad, {"paddings"}),
    "identity": (_identity, set()),
    "add": (_add, set()),
    "concat": (_concat, {"axis"}),
    "activation": (_activation, {"mode"}),
    "batch_normalization": (_batch_normalization, _BATCH_NORM_KEYS),
    "local_response_normalization": (_local_response_normalization, {"depth_radius", "bias", "alpha", "beta"}),
}

_MODULE_KEYS = {"kwargs", "layers", "graph"}


def _check_keys(spec, allowed, where):
    if "overrider" in spec:
        raise ConfigError(f"{where}.overrider: Mayo's overriders (quantizers, mayo.override.*) are not supported; "
                          "use the `prune:` section for pruning")
    unknown = sorted(str(key) for key in spec if key != "type" and key not in allowed)
    if unknown:
        hints = [f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(key, allowed, 1)) else key
                 for key in unknown]
        raise ConfigError(f"{where}: unknown key {', '.join(hints)} for {spec['type']} "
                          f"(accepted: {', '.join(sorted(allowed))})")


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
            close = difflib.get_close_matches(str(kind), list(LAYER_TYPES) + ["module"], 3)
            hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(sorted(LAYER_TYPES))}"
            raise ConfigError(f"{where}.type: unknown layer type {kind!r}; {hint}")
        build, allowed = LAYER_TYPES[kind]
        _check_keys(spec, allowed, where)
        builder = LayerBuilder(name, spec, where, self.global_threshold, lambda key: self.where(f"{path}.{key}"),
                               self.masked, self.slimming)
        try:
            build(builder)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: {str(error).splitlines()[0]}") from error
        return builder

    def module(self, name, spec, path):
        where = self.where(path)
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{where}.kwargs: expected a mapping, got {kwargs!r}")
        unknown = sorted(str(key) for key in spec if key not in _MODULE_KEYS | {"type"} and key not in kwargs)
        if unknown:
            raise ConfigError(f"{where}: unknown key {', '.join(unknown)} for module "
                              f"(keyword arguments: {', '.join(sorted(map(str, kwargs))) or 'none'})")
        values = {**kwargs, **{key: value for key, value in spec.items() if key in kwargs}}
        layers = substitute_module_kwargs(spec.get("layers") or {}, values, f"{where}.layers")
        graph = substitute_module_kwargs(spec.get("graph"), values, f"{where}.graph")

        def apply(inputs):
            return self.graph(layers, graph, {"input": inputs}, f"{path}", prefix=f"{name}.")
        return apply

    def graph(self, layers, graph, tensors, path, prefix=""):
        """Applies the edges of `graph` starting from `tensors` (which hold `input`); returns `output`."""
        if not isinstance(layers, dict):
            raise ConfigError(f"{self.where(path + '.layers')}: expected a mapping of layer names to specs")
        edges = _sequence(graph)
        if graph is None or not all(isinstance(edge, dict) for edge in edges):
            raise ConfigError(f"{self.where(path + '.graph')}: expected a mapping or a list of mappings "
                              "{from, with, to}")
        built = {}
        pending = list(enumerate(edges))
        while pending:
            progressed = False
            for item in list(pending):
                index, edge = item
                edge_path = f"{path}.graph" + (f".{index}" if isinstance(graph, list) else "")
                sources = _sequence(edge.get("from"))
                if not all(source in tensors for source in sources):
                    continue
                pending.remove(item)
                progressed = True
                tensors[self._target(edge, edge_path)] = self._edge(
                    layers, edge, sources, tensors, built, path, edge_path, prefix)
            if not progressed:
                index, edge = pending[0]
                missing = [s for s in _sequence(edge.get("from")) if s not in tensors]
                raise ConfigError(f"{self.where(f'{path}.graph')}: edge to {edge.get('to')!r} reads "
                                  f"{', '.join(map(repr, missing))}, which no edge produces")
        if "output" not in tensors:
            raise ConfigError(f"{self.where(f'{path}.graph')}: the graph never reaches `output`")
        # Inside a module, a layer its keyword arguments did not pick (`with: ^(shortcut)`) is unused by design.
        for name in layers if not prefix else []:
            if not str(name).startswith("_") and name not in built:
                log.warning("%s: this layer is not used by the graph", self.where(f"{path}.layers.{name}"))
        return tensors["output"]

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
        for name in _sequence(edge.get("with")) if edge.get("with") is not None else []:
            if not isinstance(name, str) or name.startswith("_") or name not in layers:
                raise ConfigError(f"{self.where(edge_path)}.with: {name!r} is not a layer of {path}.layers")
            if name in built:
                raise ConfigError(f"{self.where(edge_path)}.with: layer {name!r} is used twice; "
                                  "give each use its own layer")
            built[name] = self.layer(prefix + name, layers[name], f"{path}.layers.{name}")
            try:
                value = built[name](value)
            except ValueError as error:  # Keras' shape checks: a kernel larger than its input, a bad axis, ...
                raise ConfigError(f"{self.where(f'{path}.layers.{name}')}: {keras_message(error)}") from error
        if isinstance(value, list):
            raise ConfigError(f"{self.where(edge_path)}: several inputs {sources} need a layer that joins them "
                              "(add or concat)")
        return value


# What starts a gated layer's variables when a dense checkpoint is loaded into a gated model: the variable of the
# dense layer's batch norm (`<name>.bn`). docs/design/fbs-semantics.md: the predictor's bias starts from the dense scale and beta from the
# dense offset, so at density 1.0 the gated model computes almost what the dense one did.
_DENSE_SOURCES = {
    "parametric": {"moving_mean": "moving_mean", "moving_variance": "moving_variance", "beta": "beta",
                   "gate_bias": "gamma", "beta_bias": "beta"},
    "squeeze": {"moving_mean": "moving_mean", "moving_variance": "moving_variance", "beta": "beta",
                "gamma": "gamma"},
}
_DENSE_SOURCES["naive"] = _DENSE_SOURCES["squeeze"]


def keras_message(error):
    """The line of a Keras error that says what is wrong (Keras wraps a layer's error in "Exception encountered when
    calling ...", with terminal colour codes)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 1 and lines[0].startswith("Exception encountered when calling"):
        return lines[1]
    return lines[0] if lines else type(error).__name__


def dense_sources(model):
    """{path of a gated layer's variable: path of the dense model's variable that initialises it}."""
    sources = {}
    for layer in model.layers:
        if not isinstance(layer, GatedConv2D):
            continue
        for variable in layer.variables:
            name = variable.path.rsplit("/", 1)[-1]
            source = _DENSE_SOURCES[layer.policy].get(name)
            if source is not None:
                prefix = variable.path[:-len(f"{layer.name}/{name}")]
                sources[variable.path] = f"{prefix}{layer.name}.bn/{source}"
    return sources


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
