"""Reading one YAML layer spec: `LayerBuilder` gives a layer type's build function typed access to the spec's keys
(each bad value a config error naming the file and key) and assembles the Keras layers a YAML layer becomes (the
layer, then its normaliser and activation), each tagged with the YAML layer's name (`GROUP_ATTRIBUTE`)."""


import keras

from mayo_lite import registry
from mayo_lite.errors import ConfigError, with_suggestions
from mayo_lite.layers import MaskedConv2D
from mayo_lite.models.estimate import GROUP_ATTRIBUTE
from mayo_lite.quantize.spec import SpecError, from_spec


CONV_KEYS = {"kernel_size", "stride", "padding", "rate", "activation_fn", "normalizer_fn", "normalizer_params",
              "weights_initializer", "biases_initializer", "weights_regularizer", "biases_regularizer", "trainable"}
POOL_KEYS = {"kernel_size", "stride", "padding"}
BATCH_NORM_KEYS = {"momentum", "decay", "epsilon", "scale", "center", "trainable"}


def sequence(value):
    return value if isinstance(value, list) else [value]


def pair(value, key, where):
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
        # `quantize:` (Mayo's quantizers, put there by the config's reading of `overrider:`): target -> {spec, where}
        self.quantize = dict(spec.get("quantize") or {})

    def quantizer(self, target, layer_name=None):
        """The quantizer of one of the layer's variables (weights, biases, activation, depthwise_weights), or None;
        a ConfigError naming the file and key of a bad setting. Each is taken once: what is left was not used."""
        entry = self.quantize.pop(target, None)
        if entry is None:
            return None
        try:
            return from_spec(entry["spec"], name=f"{layer_name or self.name}.{target}", observe=target == "activation")
        except SpecError as error:
            raise ConfigError(f"{entry['where']}{'.' + error.key if error.key else ''}: {error}") from None

    def weight_quantizers(self, weights="weights", use_bias=True):
        """The `kernel_quantizer`/`bias_quantizer` arguments of a masked layer (empty when there are none)."""
        arguments = {"kernel_quantizer": self.quantizer(weights),
                     "bias_quantizer": self.quantizer("biases") if use_bias else None}
        return {key: value for key, value in arguments.items() if value is not None}

    def slim(self, batch_norm):
        """Network slimming (Liu et al., 2017): an L1 penalty on the batch norm's scales, when the model asks."""
        if self.slimming > 0 and batch_norm.scale:
            batch_norm.gamma_regularizer = keras.regularizers.L1(self.slimming)

    @property
    def convolution_class(self):
        """Conv2D, or with masks (static pruning) or quantizers the drop-in MaskedConv2D."""
        quantized = "weights" in self.quantize or "biases" in self.quantize
        return MaskedConv2D if self.masked or quantized else keras.layers.Conv2D

    def where_key(self, key):
        """Where `key` of this layer was set (the file that set it, which may not be the layer's), for errors."""
        return self._where_key(key) if self._where_key else f"{self.where}.{key}"

    def keep(self, layer):
        setattr(layer, GROUP_ATTRIBUTE, self.name)
        self.layers.append(layer)
        return layer

    def keep_for_input(self, factory):
        """Keeps the layer `factory(input shape)` makes once the layer's input is known (a pool's kernel that
        depends on its input's size)."""
        self.layers.append(_ForInput(factory))

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
        self.quantize_activation()
        activation = self.activation()
        if activation is not None:
            self.keep(keras.layers.Activation(activation, name=f"{self.name}.act"))
        return main

    def quantize_activation(self):
        """Mayo applies an activation's quantizer after the normalizer, before the activation function."""
        quantizer = self.quantizer("activation", f"{self.name}.quantize")
        if quantizer is not None:
            self.keep(quantizer)

    def bias_arguments(self):
        use_bias = self.spec.get("normalizer_fn") is None
        arguments = {"use_bias": use_bias}
        if use_bias:
            arguments["bias_initializer"] = self.initializer("biases_initializer", "zeros")
            arguments["bias_regularizer"] = self.regularizer("biases_regularizer")
        return arguments

    def __call__(self, inputs):
        outputs = inputs
        for index, layer in enumerate(self.layers):
            if isinstance(layer, _ForInput):
                layer = self.layers[index] = layer.factory(tuple(outputs.shape))
                setattr(layer, GROUP_ATTRIBUTE, self.name)
            outputs = layer(outputs)
        return outputs


class _ForInput:
    def __init__(self, factory):
        self.factory = factory


def check_keys(spec, allowed, where):
    # The runner reads Mayo's overriders before it builds (mayo_lite.config.mayo_overriders): pruners into the
    # `prune:` section, quantizers into `quantize:`; one left here was not read that way.
    overrider = next((key for key in spec if key == "overrider" or str(key).endswith("_overrider")), None)
    if overrider is not None:
        raise ConfigError(f"{where}.{overrider}: Mayo's overriders are read by the runner's configuration, not by "
                          "build_model; use the `prune:` section for pruning, mayo_lite.quantize for quantizers")
    unknown = sorted(str(key) for key in spec if key not in ("type", "quantize") and key not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(with_suggestions(unknown, allowed))} for {spec['type']} "
                          f"(accepted: {', '.join(sorted(allowed))})")


def with_class_count(model, classes):
    """`model` with every `num_outputs: num_classes` (older Mayo's spelling, still in its input-gated and Hadamard
    files) replaced by `classes`, in modules too."""
    if isinstance(model, dict):
        return {key: classes if key == "num_outputs" and value == "num_classes" else with_class_count(value, classes)
                for key, value in model.items()}
    if isinstance(model, list):
        return [with_class_count(value, classes) for value in model]
    return model
