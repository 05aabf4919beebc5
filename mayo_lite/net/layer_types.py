"""The layer types of the YAML language: one build function each, in one table (`LAYER_TYPES`: type -> (function,
the keys its spec may have besides `type`)). A build function reads its spec through a `specs.LayerBuilder`."""


import logging

import keras

from mayo_lite.errors import ArgumentError, ConfigError, with_suggestions
from mayo_lite.layers import (GatedConv2D, LocalResponseNormalization, MaskedDense, MaskedDepthwiseConv2D, ReduceMean,
                              Squeeze)
from mayo_lite.layers.space_to_depth import SpaceToDepth
from mayo_lite.net.mayo_layer_types import MAYO_LAYER_TYPES
from mayo_lite.net.specs import BATCH_NORM_KEYS, CONV_KEYS, POOL_KEYS, pair, sequence

log = logging.getLogger("mayo_lite")


def _convolution(builder):
    padding, explicit = builder.padding("same")
    if explicit:
        builder.keep(keras.layers.ZeroPadding2D(explicit, name=f"{builder.name}.pad"))
    conv = builder.keep(builder.convolution_class(
        builder.integer("num_outputs", None),
        pair(builder.get("kernel_size"), "kernel_size", builder.where),
        strides=pair(builder.get("stride", 1), "stride", builder.where),
        dilation_rate=pair(builder.get("rate", 1), "rate", builder.where),
        padding=padding,
        kernel_initializer=builder.initializer("weights_initializer", "glorot_uniform"),
        kernel_regularizer=builder.regularizer("weights_regularizer"),
        trainable=builder.trainable(),
        name=builder.name,
        **builder.bias_arguments(),
        **builder.weight_quantizers(use_bias=builder.get("normalizer_fn") is None)))
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
    params = dict(params)
    if "weight" in params:
        # Older Mayo's weight of the gate's loss; today's Mayo reads none (the weights are `regularizer`'s values).
        log.warning("%s.weight: older Mayo's gate-loss weight, read by nothing in Mayo today (regularizer: "
                    "{l1: WEIGHT, ...} weights the gate's losses): ignored", builder.where_key("gate_params"))
        params.pop("weight")
    if builder.get("enable") is not None:
        # Mayo's squeezenet_v11 gate file switches gates off with `enable` on the layer (Mayo passes it on to
        # slim's convolution, which refuses it); read as gate_params.enable unless that is given.
        params.setdefault("enable", builder.get("enable"))
    if params.get("policy") == "parametric_gamma":  # older Mayo's name of the parametric policy
        params["policy"] = "parametric"
    unknown = sorted(str(key) for key in params if key not in GATE_PARAMS)
    if unknown:
        hints = with_suggestions(unknown, GATE_PARAMS)
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
                          "(the gate replaces its scale; Mayo's parametric policy refuses it too); add "
                          "normalizer_fn: batch_norm")
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
            pair(builder.get("kernel_size"), "kernel_size", builder.where),
            strides=pair(builder.get("stride", 1), "stride", builder.where),
            dilation_rate=pair(builder.get("rate", 1), "rate", builder.where),
            padding=padding,
            activation=builder.activation(),
            kernel_initializer=builder.initializer("weights_initializer", "glorot_uniform"),
            kernel_regularizer=builder.regularizer("weights_regularizer"),
            trainable_kernel=builder.trainable(),
            use_mask=builder.masked,
            name=builder.name,
            **builder.weight_quantizers(use_bias=False),
            **arguments))
    except ArgumentError as error:
        key = _GATE_ARGUMENT_KEYS.get(error.argument, error.argument)
        first, _, rest = key.partition(".")
        raise ConfigError(f"{builder.where_key(first)}{'.' + rest if rest else ''}: expected {error.expected}, "
                          f"got {error.value!r}") from None


def _depthwise(builder, name):
    padding, explicit = builder.padding("same")
    if explicit:
        builder.keep(keras.layers.ZeroPadding2D(explicit, name=f"{builder.name}.pad"))
    separable = name != builder.name
    quantizers = builder.weight_quantizers("depthwise_weights", use_bias=not separable
                                           and builder.get("normalizer_fn") is None)
    return builder.keep((MaskedDepthwiseConv2D if quantizers else keras.layers.DepthwiseConv2D)(
        pair(builder.get("kernel_size"), "kernel_size", builder.where),
        strides=pair(builder.get("stride", 1), "stride", builder.where),
        dilation_rate=pair(builder.get("rate", 1), "rate", builder.where),
        depth_multiplier=builder.integer("depth_multiplier", 1),
        padding=padding,
        depthwise_initializer=builder.initializer("weights_initializer", "glorot_uniform"),
        # Mayo's files spell the depthwise weights' regularizer either way.
        depthwise_regularizer=builder.regularizer(
            "depthwise_regularizer" if builder.get("depthwise_regularizer") is not None else "weights_regularizer"),
        trainable=builder.trainable(),
        name=name,
        **quantizers,
        **({"use_bias": False} if separable else builder.bias_arguments())))


def _depthwise_convolution(builder):
    builder.finish(_depthwise(builder, builder.name))


def _depthwise_separable_convolution(builder):
    # slim.separable_conv2d: depthwise then pointwise, the normalizer and activation only after the pointwise;
    # without num_outputs (Mayo's Hadamard models) the depthwise part alone, as slim does.
    if builder.get("num_outputs") is None:
        builder.finish(_depthwise(builder, builder.name))
        return
    _depthwise(builder, f"{builder.name}.depthwise")
    pointwise = builder.keep(builder.convolution_class(
        builder.integer("num_outputs", None), 1,
        kernel_initializer=builder.initializer("pointwise_initializer", "glorot_uniform"),
        kernel_regularizer=builder.regularizer(
            "pointwise_regularizer" if builder.get("pointwise_regularizer") is not None else "weights_regularizer"),
        trainable=builder.trainable(),
        name=builder.name,
        **builder.bias_arguments(),
        **builder.weight_quantizers(use_bias=builder.get("normalizer_fn") is None)))
    builder.finish(pointwise)


def _fully_connected(builder):
    quantizers = builder.weight_quantizers(use_bias=builder.get("normalizer_fn") is None)
    dense = builder.keep((MaskedDense if quantizers else keras.layers.Dense)(
        builder.integer("num_outputs", None),
        kernel_initializer=builder.initializer("weights_initializer", "glorot_uniform"),
        kernel_regularizer=builder.regularizer("weights_regularizer"),
        trainable=builder.trainable(),
        name=builder.name,
        **quantizers,
        **builder.bias_arguments()))
    builder.finish(dense)


def _pool(cls):
    def build(builder):
        padding, explicit = builder.padding("valid")
        if explicit:
            builder.keep(keras.layers.ZeroPadding2D(explicit, name=f"{builder.name}.pad"))
        spec = builder.get("kernel_size")
        kernel = None if spec == "global" else pair(spec, "kernel_size", builder.where)
        strides = pair(builder.get("stride", 2), "stride", builder.where)

        def make(shape):
            # As Mayo: `global` pools the whole map, and a kernel larger than its input shrinks to it.
            size = shape[1:3]
            fitted = size if kernel is None else tuple(
                min(k, s) if s is not None else k for k, s in zip(kernel, size))
            if fitted != kernel and kernel is not None:
                log.info("%s: pool kernel %s larger than its %s input, reduced to %s (as Mayo does)",
                         builder.where, kernel, "×".join(map(str, size)), fitted)
            return cls(fitted, strides=strides, padding=padding, name=builder.name)
        builder.keep_for_input(make)
    return build


def _dropout(builder):
    keep = builder.number("keep_prob", None, low=0.0, high=1.0)
    builder.keep(keras.layers.Dropout(1.0 - keep, name=builder.name))


def _axes(builder, default):
    value = builder.get("axis", default)
    axes = sequence(value)
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
    # slim.batch_norm's own parameters may also come in `normalizer_params`, as Mayo passes them.
    params = builder.get("normalizer_params") or {}
    value = lambda key, default: builder.get(key, params.get(key, default))  # noqa: E731
    momentum = value("momentum", value("decay", 0.99))
    builder.slim(builder.keep(keras.layers.BatchNormalization(
        momentum=momentum, epsilon=value("epsilon", 0.001), scale=value("scale", True),
        center=value("center", True), trainable=builder.trainable(), name=builder.name)))
    activation = builder.activation("activation_fn", None)  # slim.batch_norm(activation_fn=...), no default
    if activation is not None:
        builder.keep(keras.layers.Activation(activation, name=f"{builder.name}.act"))


def _mul(builder):
    builder.keep(keras.layers.Multiply(name=builder.name))


def _crop(builder):
    cropping = builder.get("cropping")
    try:
        pairs = tuple(tuple(int(v) for v in (p if isinstance(p, (list, tuple)) else (p, p)))
                      for p in (cropping if isinstance(cropping, (list, tuple)) else (cropping, cropping)))
        if len(pairs) != 2 or any(len(p) != 2 or min(p) < 0 for p in pairs):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{builder.where}.cropping: expected [[top, bottom], [left, right]] (or one number, or a "
                          f"pair), got {cropping!r}") from None
    builder.keep(keras.layers.Cropping2D(pairs, name=builder.name))


def _space_to_depth(builder):
    size = builder.integer("block_size", None, minimum=2)
    builder.keep(SpaceToDepth(size, name=builder.name))


def _local_response_normalization(builder):
    builder.keep(LocalResponseNormalization(
        depth_radius=builder.integer("depth_radius", 5, minimum=0), bias=builder.get("bias", 1.0),
        alpha=builder.get("alpha", 1.0), beta=builder.get("beta", 0.5), name=builder.name))


# type -> (build function, the keys its spec may have besides `type`)
LAYER_TYPES = {
    "convolution": (_convolution, CONV_KEYS | {"num_outputs"}),
    # A gated layer normalises its output, so it has no bias: Mayo drops the bias arguments a base convolution
    # passes to it, and so does this (they are accepted and unused).
    "gated_convolution": (_gated_convolution, CONV_KEYS | {"num_outputs", "gate_params", "enable"}),
    "depthwise_convolution": (_depthwise_convolution, CONV_KEYS | {"depth_multiplier", "depthwise_regularizer"}),
    "depthwise_separable_convolution": (
        _depthwise_separable_convolution, CONV_KEYS | {"num_outputs", "depth_multiplier", "pointwise_initializer",
                                                       "depthwise_regularizer", "pointwise_regularizer"}),
    "fully_connected": (_fully_connected, CONV_KEYS - {"kernel_size", "stride", "padding", "rate"}
                        | {"num_outputs"}),
    "max_pool": (_pool(keras.layers.MaxPooling2D), POOL_KEYS),
    "average_pool": (_pool(keras.layers.AveragePooling2D), POOL_KEYS),
    "dropout": (_dropout, {"keep_prob"}),
    "flatten": (_flatten, set()),
    "squeeze": (_squeeze, {"axis"}),
    "reduce_mean": (_reduce_mean, {"axis", "keepdims", "keep_dims"}),
    "pad": (_pad, {"paddings"}),
    "identity": (_identity, set()),
    "add": (_add, set()),
    "concat": (_concat, {"axis"}),
    "activation": (_activation, {"mode"}),
    "batch_normalization": (_batch_normalization, BATCH_NORM_KEYS | {"activation_fn", "normalizer_params"}),
    "mul": (_mul, set()),
    "crop": (_crop, {"cropping"}),
    "space_to_depth": (_space_to_depth, {"block_size"}),
    "local_response_normalization": (_local_response_normalization, {"depth_radius", "bias", "alpha", "beta"}),
}
LAYER_TYPES.update(MAYO_LAYER_TYPES)
