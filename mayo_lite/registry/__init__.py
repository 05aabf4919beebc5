"""The registry of object specs: the only way a config string becomes a Keras object.

Nothing is ever imported from a config string. Each kind (optimizer, schedule, initializer, regularizer,
normalizer, activation) has a fixed table of names; the Mayo/TF1 spellings are entries of the same tables with
their argument names translated, so Mayo YAML files port with few edits (docs/config-language.md).
"""

import inspect
import math

import keras

from mayo_lite.errors import ConfigError, did_you_mean


class Entry:
    """How one registry name becomes an object: a factory, the arguments it takes, and their translation.

    `rename` maps a config argument name to the factory's (`decay` -> `rho`); `convert` maps a config argument
    name to a function of its value (`uniform` -> `distribution`) returning (factory argument, value);
    `defaults` are the factory arguments this spelling implies (TF1's variance scaling uses factor 2.0).
    """

    def __init__(self, factory, arguments=(), rename=None, convert=None, defaults=None):
        self.factory = factory
        self.arguments = set(arguments) | set(rename or ()) | set(convert or ())
        self.rename = rename or {}
        self.convert = convert or {}
        self.defaults = defaults or {}

    def make(self, arguments, where):
        unknown = sorted(set(arguments) - self.arguments)
        if unknown:
            raise ConfigError(
                f"{where}: unknown argument {', '.join(map(repr, unknown))} "
                f"(accepted: {', '.join(sorted(self.arguments)) or 'none'})")
        kwargs = dict(self.defaults)
        for name, value in arguments.items():
            if name in self.convert:
                name, value = self.convert[name](value)
            kwargs[self.rename.get(name, name)] = value
        try:
            return self.factory(**kwargs)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: {_first_line(error)}") from None


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _distribution(uniform):
    return "distribution", "uniform" if uniform else "truncated_normal"


def _lowercase(name):
    return lambda value: (name, str(value).lower())


class ScaledL2(keras.regularizers.L2):
    """TF1's `l2_regularizer(scale)` computes `scale * sum(w**2) / 2`; Keras' L2 has no halving."""

    def __init__(self, scale=0.0):
        super().__init__(l2=scale / 2.0)
        self.scale = scale

    def get_config(self):
        return {"scale": self.scale}


class BatchNormSpec:
    """A normalizer is not built here but per layer (it needs a name); this records its arguments."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def build(self, name):
        return keras.layers.BatchNormalization(name=name, **self.kwargs)


class ActivationSpec:
    """An activation by name; `None` means linear."""

    def __init__(self, function):
        self.function = function


class ConstantSchedule:
    """A learning rate that does not change with the epoch."""

    def __init__(self, value):
        self.value = float(value)

    def __call__(self, epoch):
        return self.value


class WarmupSchedule:
    """Linear warm-up over `warmup_epochs` into another schedule, as large-batch recipes need."""

    def __init__(self, schedule, warmup_epochs):
        self.schedule = schedule
        self.warmup_epochs = float(warmup_epochs)

    def __call__(self, epoch):
        target = self.schedule(epoch)
        if self.warmup_epochs <= 0:
            return target
        ratio = keras.ops.minimum(keras.ops.cast(epoch, "float32") / self.warmup_epochs, 1.0)
        return keras.ops.cast(target, "float32") * ratio


def _keras_schedule(cls, **renames):
    arguments = [name for name in inspect.signature(cls).parameters if name != "name"]
    return Entry(cls, [name for name in arguments if name not in renames.values()], rename=renames)


OPTIMIZERS = {
    "sgd": Entry(keras.optimizers.SGD, ["momentum", "nesterov", "weight_decay", "clipnorm"]),
    "momentum": Entry(keras.optimizers.SGD, ["momentum", "nesterov", "weight_decay"]),
    "rmsprop": Entry(keras.optimizers.RMSprop, ["rho", "momentum", "epsilon", "centered", "weight_decay"]),
    "adam": Entry(keras.optimizers.Adam, ["beta_1", "beta_2", "epsilon", "amsgrad", "weight_decay"]),
    "adamw": Entry(keras.optimizers.AdamW, ["beta_1", "beta_2", "epsilon", "amsgrad", "weight_decay"]),
    "tensorflow.train.GradientDescentOptimizer": Entry(keras.optimizers.SGD),
    "tensorflow.train.MomentumOptimizer": Entry(
        keras.optimizers.SGD, ["momentum"], rename={"use_nesterov": "nesterov"}),
    "tensorflow.train.RMSPropOptimizer": Entry(
        keras.optimizers.RMSprop, ["momentum", "epsilon", "centered"], rename={"decay": "rho"},
        # TF1's defaults differ from Keras': rho 0.9, epsilon 1e-10.
        defaults={"rho": 0.9, "epsilon": 1e-10}),
    "tensorflow.train.AdamOptimizer": Entry(
        keras.optimizers.Adam, ["epsilon"], rename={"beta1": "beta_1", "beta2": "beta_2"},
        defaults={"epsilon": 1e-8}),
}

# Schedules are functions of the float epoch counter; `decay_steps` and `boundaries` count epochs (Mayo).
SCHEDULES = {
    "constant": Entry(ConstantSchedule, ["value"], rename={"learning_rate": "value"}),
    "exponential_decay": _keras_schedule(keras.optimizers.schedules.ExponentialDecay),
    "piecewise_constant": _keras_schedule(keras.optimizers.schedules.PiecewiseConstantDecay),
    "cosine_decay": _keras_schedule(keras.optimizers.schedules.CosineDecay),
    "tensorflow.train.exponential_decay": _keras_schedule(
        keras.optimizers.schedules.ExponentialDecay, learning_rate="initial_learning_rate"),
    "tensorflow.train.piecewise_constant": _keras_schedule(keras.optimizers.schedules.PiecewiseConstantDecay),
    "tensorflow.train.cosine_decay": _keras_schedule(
        keras.optimizers.schedules.CosineDecay, learning_rate="initial_learning_rate"),
}

# TF1's variance_scaling_initializer: factor 2.0, fan_in, truncated normal unless uniform.
_TF1_VARIANCE_SCALING = Entry(
    keras.initializers.VarianceScaling, ["seed"],
    rename={"factor": "scale"}, convert={"mode": _lowercase("mode"), "uniform": _distribution},
    defaults={"scale": 2.0, "mode": "fan_in", "distribution": "truncated_normal"})

INITIALIZERS = {
    "variance_scaling": Entry(keras.initializers.VarianceScaling, ["scale", "mode", "distribution", "seed"]),
    "truncated_normal": Entry(keras.initializers.TruncatedNormal, ["mean", "stddev", "seed"]),
    "random_normal": Entry(keras.initializers.RandomNormal, ["mean", "stddev", "seed"]),
    "random_uniform": Entry(keras.initializers.RandomUniform, ["minval", "maxval", "seed"]),
    "glorot_uniform": Entry(keras.initializers.GlorotUniform, ["seed"]),
    "glorot_normal": Entry(keras.initializers.GlorotNormal, ["seed"]),
    "he_normal": Entry(keras.initializers.HeNormal, ["seed"]),
    "he_uniform": Entry(keras.initializers.HeUniform, ["seed"]),
    "zeros": Entry(keras.initializers.Zeros),
    "ones": Entry(keras.initializers.Ones),
    "constant": Entry(keras.initializers.Constant, ["value"]),
    "tensorflow.variance_scaling_initializer": _TF1_VARIANCE_SCALING,
    "tensorflow.contrib.layers.variance_scaling_initializer": _TF1_VARIANCE_SCALING,
    "tensorflow.initializers.he_normal": Entry(keras.initializers.HeNormal, ["seed"]),
    "tensorflow.truncated_normal_initializer": Entry(
        keras.initializers.TruncatedNormal, ["mean", "stddev", "seed"], defaults={"stddev": 1.0}),
    "tensorflow.constant_initializer": Entry(keras.initializers.Constant, ["value"]),
    "tensorflow.zeros_initializer": Entry(keras.initializers.Zeros),
    "tensorflow.ones_initializer": Entry(keras.initializers.Ones),
}

REGULARIZERS = {
    "l2": Entry(keras.regularizers.L2, ["l2"]),
    "l1": Entry(keras.regularizers.L1, ["l1"]),
    "l1_l2": Entry(keras.regularizers.L1L2, ["l1", "l2"]),
    "tensorflow.contrib.layers.l2_regularizer": Entry(ScaledL2, ["scale"]),
    "tensorflow.contrib.layers.l1_regularizer": Entry(keras.regularizers.L1, rename={"scale": "l1"}),
}

_KERAS_BATCH_NORM = ["momentum", "epsilon", "scale", "center"]
NORMALIZERS = {
    "batch_norm": Entry(BatchNormSpec, _KERAS_BATCH_NORM),
    "batch_normalization": Entry(BatchNormSpec, _KERAS_BATCH_NORM),
    # slim.batch_norm's defaults: decay 0.999, epsilon 0.001, center on, scale off.
    "tensorflow.contrib.slim.batch_norm": Entry(
        BatchNormSpec, ["epsilon", "scale", "center"], rename={"decay": "momentum"},
        defaults={"momentum": 0.999, "epsilon": 0.001, "center": True, "scale": False}),
}
# Mayo's own batch norm (mayo/objects/normalize.py): slim.batch_norm while training, and at inference the same
# moving-statistics formula written out for its fixed-point overriders; same arguments, same defaults.
NORMALIZERS["mayo.objects.normalize.custom_batch_norm"] = NORMALIZERS["tensorflow.contrib.slim.batch_norm"]

ACTIVATIONS = {
    name: ActivationSpec(name) for name in
    ["relu", "relu6", "sigmoid", "tanh", "softmax", "swish", "silu", "elu", "gelu", "hard_swish", "leaky_relu"]
}
ACTIVATIONS.update({
    "linear": ActivationSpec(None),
    "tensorflow.nn.relu": ActivationSpec("relu"),
    "tensorflow.nn.relu6": ActivationSpec("relu6"),
    "tensorflow.nn.sigmoid": ActivationSpec("sigmoid"),
    "tensorflow.nn.tanh": ActivationSpec("tanh"),
    "tensorflow.nn.softmax": ActivationSpec("softmax"),
})

# Keras callbacks a trainer may list in `train.callbacks` (they receive the loop's logs: loss, top1, top5,
# learning_rate, regularization_loss, density and each gated layer's density).
CALLBACKS = {
    "EarlyStopping": Entry(keras.callbacks.EarlyStopping, ["monitor", "min_delta", "patience", "mode", "baseline",
                                                          "start_from_epoch"]),
    "TerminateOnNaN": Entry(keras.callbacks.TerminateOnNaN),
    "CSVLogger": Entry(keras.callbacks.CSVLogger, ["filename", "separator", "append"]),
}

KINDS = {
    "callback": CALLBACKS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "initializer": INITIALIZERS,
    "regularizer": REGULARIZERS,
    "normalizer": NORMALIZERS,
}


def unknown_name(kind, name, table, where):
    hint = "; " + (did_you_mean(name, table, 3, 0.5) or f"known: {', '.join(sorted(table))}")
    return ConfigError(f"{where}: unknown {kind} type {name!r}{hint}")


def build(kind, spec, where, arguments=None):
    """Turns `spec` (a name, or a mapping with `type` and arguments) into an object of `kind`.

    `arguments`, when given, are extra keyword arguments (slim's `normalizer_params`); they are merged under
    the spec's own. Raises ConfigError naming `where` for an unknown name or argument.
    """
    table = KINDS[kind]
    if isinstance(spec, str):
        name, given = spec, {}
    elif isinstance(spec, dict) and "type" in spec:
        given = {key: value for key, value in spec.items() if key != "type" and not str(key).startswith("_")}
        name = spec["type"]
    else:
        raise ConfigError(f"{where}: expected a spec for the {kind} (a name, or a mapping with `type`), got {spec!r}")
    if not isinstance(name, str) or name not in table:
        raise unknown_name(kind, name, table, f"{where}.type" if isinstance(spec, dict) else where)
    merged = dict(arguments or {})
    merged.update(given)
    return table[name].make(merged, where)


def activation(spec, where):
    """An activation name (or null for linear) as a Keras activation identifier or None."""
    if spec is None:
        return None
    if not isinstance(spec, str) or spec not in ACTIVATIONS:
        raise unknown_name("activation", spec, ACTIVATIONS, where)
    return ACTIVATIONS[spec].function


def learning_rate_schedule(spec, where):
    """A learning rate spec (a number or a schedule mapping) as a function of the epoch counter.

    `warmup_epochs` in the mapping wraps the schedule in a linear warm-up.
    """
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if not math.isfinite(spec) or spec <= 0:
            raise ConfigError(f"{where}: a learning rate must be a positive number, got {spec!r}")
        return ConstantSchedule(spec)
    if isinstance(spec, dict):
        spec = dict(spec)
        warmup = spec.pop("warmup_epochs", 0)
        if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0 <= warmup < math.inf:
            raise ConfigError(f"{where}.warmup_epochs: expected a number of epochs ≥ 0, got {warmup!r}")
        schedule = build("schedule", spec, where)
        return WarmupSchedule(schedule, warmup) if warmup else schedule
    raise ConfigError(f"{where}: expected a number or a schedule mapping with `type`, got {spec!r}")
