"""Feature Boosting and Suppression (Gao et al., ICLR 2019): a convolution whose output channels a small predictor
boosts or switches off for each input. Its exact semantics are docs/design/fbs-semantics.md.

`GatedConv2D` is a `keras.layers.Conv2D`, so MAC counting and kernel masks treat it as one; it brings its own
normalisation, gate and activation. Which channels it keeps, and the `GlobalThreshold` gated layers may share, are
in `thresholds`; the pooling and regularisers it is made of in `gate_ops`.
"""

import math

import keras
from keras import ops

from mayo_lite.layers.arguments import Arguments
from mayo_lite.layers.gate_ops import (POOLS, REGULARIZERS, SPARSITY_REGULARIZERS, affine, normalization,
                                       per_sample)
from mayo_lite.layers.masking import as_quantizer, build_quantizer, constrain_to_mask
from mayo_lite.layers.thresholds import (INITIAL_THRESHOLD, GlobalThreshold, active_count, batch_mean, follow,
                                         global_batch, kth_largest, replica_id)

PREDICTOR_STDDEV = 0.05

POLICIES = ("parametric", "squeeze", "naive")
THRESHOLDS = ("online", "local", "global")
NORMS = ("batch", "channel")
GRANULARITIES = ("channel",)
PADDINGS = ("same", "valid")

@keras.saving.register_keras_serializable(package="mayo_lite")
class GatedConv2D(keras.layers.Conv2D):
    """2D convolution with Feature Boosting and Suppression: a predictor scales each output channel per sample
    (gamma) and switches off all but the `ceil(filters · density)` most salient ones, which are then exactly zero.

    The layer normalises its convolution itself (it takes the place of Conv2D + BatchNormalization + Activation).
    With `policy="parametric"` (the paper's), the output is `act(n · (active·gamma) + active·beta)`, where `n` is
    the batch-normalised convolution without scale and center, `gamma = act(pool(x) · W + b)` is predicted from
    the pooled input, and `active` marks the channels above the threshold (no gradient). `squeeze` gives
    `active · gamma · act(BN(conv(x)))` and `naive` gives `active · act(BN(conv(x)))` with an ordinary batch norm.

    Where the FBS paper leaves a choice open, docs/design/fbs-semantics.md says which this layer makes.

    Every call assigns the fraction of active channels (batch mean) to the non-trainable scalar `last_density`.
    For `threshold="global"`, give every gated layer the same `GlobalThreshold` and call
    `update_global_threshold(model)` after each training forward pass, in the same traced step; a `.keras`
    round trip keeps the sharing.

    Args:
        filters: number of output channels.
        kernel_size, strides, dilation_rate: as `keras.layers.Conv2D`.
        padding: `"same"` or `"valid"`.
        density: fraction of output channels kept per sample, in (0, 1].
        policy: `"parametric"`, `"squeeze"` or `"naive"`.
        threshold: `"online"` (per-sample top-k), `"local"` (a moving threshold of this layer) or `"global"`
            (the moving threshold of `global_threshold`).
        pool: how the input is pooled for the predictor: `"avg"`, `"max"`, `"l1"` (mean of abs) or `"l2"`
            (mean of squares).
        factor: 0 for a one-layer predictor; `> 0` for two layers with `ceil(filters / factor)` hidden units.
        enable: False keeps the gate's scaling but switches no channel off.
        regularizer: dict of loss weights `{l1, l2, moe, moi, mse}`; a weight of 0 or less is ignored. `mse`
            (matching gamma to the pooled output) is the naive policy's, and that policy needs it.
        trainable_gate: whether the predictor's weights (and the parametric policy's beta) train.
        trainable_kernel: whether the convolution kernel (and the `squeeze`/`naive` batch norm's scale and offset)
            train; False with `trainable_gate=True` trains the gates of a frozen network.
        norm: `"batch"` (batch statistics while training, moving ones otherwise) or `"channel"` (each sample's
            own moments over height and width).
        parametric_beta: parametric policy: predict beta with a second predictor instead of a learned constant.
        add_beta_first: parametric policy: `act((n + active·beta) · active·gamma)`.
        decay: moving-average decay of the `local` threshold (a `GlobalThreshold` has its own).
        granularity: `"channel"`; `"vector"` is not supported.
        activation: the layer's activation, applied to the output and to the predictor's gamma.
        momentum, epsilon: of the batch normalisation, as in `keras.layers.BatchNormalization`.
        center: whether there is a beta (the parametric beta, initially 0.1, or the batch norm's offset).
        scale: the batch norm's scale for `squeeze` and `naive`; must be True for `parametric`, whose gamma
            replaces it.
        kernel_initializer, kernel_regularizer: of the convolution kernel.
        global_threshold: the shared `GlobalThreshold`, required with `threshold="global"`.
        use_mask: add a non-trainable `mask` (ones) of the kernel's shape; the effective kernel is
            `kernel · mask`, so static kernel pruning composes with FBS.

    Call arguments:
        inputs: a 4D tensor `(batch, height, width, channels)`.
        training: True uses batch statistics, updates the moving statistics and the local threshold, and
            records gamma for the global threshold.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="same", density=1.0, policy="parametric",
                 threshold="online", pool="avg", factor=0, enable=True, regularizer=None, trainable_gate=True,
                 trainable_kernel=True,
                 norm="batch", parametric_beta=False, add_beta_first=False, decay=0.9997, granularity="channel",
                 activation="relu", momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 kernel_initializer="glorot_uniform", kernel_regularizer=None, dilation_rate=1,
                 global_threshold=None, use_mask=False, kernel_constraint=None, kernel_quantizer=None, **kwargs):
        arguments = Arguments(kwargs.get("name"))
        arguments.refuse_conv_keywords(kwargs)
        padding = arguments.choice("padding", padding.lower() if isinstance(padding, str) else padding, PADDINGS)
        self.density = arguments.number("density", density, 0, 1, low_open=True)
        self.policy = arguments.choice("policy", policy, POLICIES)
        self.threshold = arguments.choice("threshold", threshold, THRESHOLDS)
        self.pool = arguments.choice("pool", pool, tuple(POOLS))
        self.norm = arguments.choice("norm", norm, NORMS)
        if granularity == "vector":
            raise arguments.invalid("granularity", "'channel' ('vector' is not supported)", granularity)
        self.granularity = arguments.choice("granularity", granularity, GRANULARITIES)
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 0:
            raise arguments.invalid("factor", "a non-negative integer", factor)
        self.factor = factor
        self.decay = arguments.number("decay", decay, 0, 1)
        self.momentum = arguments.number("momentum", momentum, 0, 1)
        self.epsilon = arguments.number("epsilon", epsilon, 0, math.inf, low_open=True,
                                        expected="a positive float")
        self.regularizer = arguments.gate_regularizer(regularizer, policy, REGULARIZERS)
        arguments.gate_combinations(policy, scale, center, parametric_beta, add_beta_first)
        if threshold == "global" and not isinstance(global_threshold, GlobalThreshold):
            raise arguments.invalid("global_threshold", "a GlobalThreshold with threshold='global'",
                                    global_threshold)
        if threshold != "global" and global_threshold is not None:
            raise arguments.invalid("global_threshold", "None unless threshold='global'", global_threshold)
        super().__init__(filters, kernel_size, strides=strides, padding=padding, data_format="channels_last",
                         dilation_rate=dilation_rate, activation=activation, use_bias=False,
                         kernel_initializer=kernel_initializer, kernel_regularizer=kernel_regularizer,
                         kernel_constraint=kernel_constraint, **kwargs)
        self.enable = bool(enable)
        self.trainable_gate = bool(trainable_gate)
        self.trainable_kernel = bool(trainable_kernel)
        self.parametric_beta = bool(parametric_beta)
        self.add_beta_first = bool(add_beta_first)
        self.center = bool(center)
        self.scale = bool(scale)
        self.use_mask = bool(use_mask)
        self.kernel_quantizer = as_quantizer(kernel_quantizer, "kernel_quantizer")
        self.global_threshold = global_threshold
        # Replica -> gamma for `update_global_threshold`: the replicas of a step trace through this one object.
        object.__setattr__(self, "_recorded_gammas", {})

    def build(self, input_shape):
        super().build(input_shape)
        self._kernel.trainable = self.trainable_kernel
        channels_in = input_shape[-1]
        channels = (self.filters,)
        if self.use_mask:
            self.mask = self.add_weight(name="mask", shape=self._kernel.shape, initializer="ones", trainable=False)
            constrain_to_mask(self)
        build_quantizer(self.kernel_quantizer, self._kernel)
        if self.norm == "batch":
            self.moving_mean = self.add_weight(
                name="moving_mean", shape=channels, initializer="zeros", trainable=False, autocast=False)
            self.moving_variance = self.add_weight(
                name="moving_variance", shape=channels, initializer="ones", trainable=False, autocast=False)
        parametric = self.policy == "parametric"
        self.gamma = None
        if self.scale and not parametric:
            self.gamma = self.add_weight(name="gamma", shape=channels, initializer="ones",
                                         trainable=self.trainable_kernel)
        self.beta = None
        if self.center and not self.parametric_beta:
            self.beta = self.add_weight(
                name="beta", shape=channels, initializer=keras.initializers.Constant(0.1 if parametric else 0.0),
                trainable=self.trainable_gate if parametric else self.trainable_kernel)
        self._add_predictor("gate", channels_in, bias=1.0)
        if self.parametric_beta:
            self._add_predictor("beta", channels_in, bias=0.0)
        if self.threshold == "local":
            self.threshold_variable = self.add_weight(
                name="threshold", shape=(), initializer=keras.initializers.Constant(INITIAL_THRESHOLD),
                trainable=False, aggregation="mean")
        self._activation_keeps_zero = float(ops.convert_to_numpy(self.activation(ops.zeros((1,))))[0]) == 0.0
        self.last_density = self.add_weight(
            name="last_density", shape=(), initializer="ones", trainable=False, aggregation="mean")

    def predictor_names(self, prefix):
        """The names of the predictor's layers, input side first: `{prefix}_hidden` (with a factor), `{prefix}`;
        each has the weights `{name}_kernel` and `{name}_bias`."""
        return [f"{prefix}_hidden", prefix] if self.factor else [prefix]

    def _add_predictor(self, prefix, channels_in, bias):
        """Creates `{prefix}_kernel`/`{prefix}_bias` (and `{prefix}_hidden_...` with a factor): pooled input to
        one value per output channel."""
        sizes = [channels_in, math.ceil(self.filters / self.factor), self.filters] if self.factor else [
            channels_in, self.filters]
        for name, fan_in, fan_out in zip(self.predictor_names(prefix), sizes, sizes[1:]):
            kernel = self.add_weight(
                name=f"{name}_kernel", shape=(fan_in, fan_out), trainable=self.trainable_gate,
                initializer=keras.initializers.TruncatedNormal(stddev=PREDICTOR_STDDEV))
            bias_variable = self.add_weight(
                name=f"{name}_bias", shape=(fan_out,), trainable=self.trainable_gate,
                initializer=keras.initializers.Constant(bias))
            setattr(self, f"{name}_kernel", kernel)
            setattr(self, f"{name}_bias", bias_variable)

    def predictor(self, prefix="gate"):
        """The predictor's layers as `(kernel, bias)` variables, input side first: `gate` predicts gamma, `beta`
        (with `parametric_beta`) the offset. Read by the MAC counter and the sparse executor, which computes the
        same product on the channels that are present (`mayo_lite.sparse.gated_step`)."""
        return [(getattr(self, f"{name}_kernel"), getattr(self, f"{name}_bias"))
                for name in self.predictor_names(prefix)]

    def predict(self, pooled, prefix="gate"):
        """The predictor's output for pooled inputs (batch, input channels): gamma (batch, filters) for `gate`,
        with the layer's activation; the offset for `beta`, without."""
        *hidden, (kernel, bias) = self.predictor(prefix)
        for hidden_kernel, hidden_bias in hidden:
            pooled = ops.relu(ops.matmul(pooled, hidden_kernel) + hidden_bias)
        values = ops.matmul(pooled, kernel) + bias
        return self.activation(values) if prefix == "gate" else values

    def _active(self, gamma):
        """1.0 for the channels the gate keeps, 0.0 for the others; no gradient."""
        k = active_count(self.filters, self.density)
        if not self.enable or k == self.filters:
            return ops.ones_like(gamma)
        if self.threshold == "online":
            threshold = kth_largest(gamma, k + 1)
        elif self.threshold == "local":
            threshold = self.threshold_variable
        else:
            threshold = self.global_threshold.threshold_variable
        return ops.cast(ops.stop_gradient(gamma) > ops.cast(threshold, gamma.dtype), gamma.dtype)

    def compute_gate(self, inputs, training=False):
        """What the gate decides for `inputs`: `(gamma, active)`, each (batch, filters), active as 0/1 floats.

        Reads the thresholds without moving them; `training` is accepted for symmetry with `call`, the gate
        itself does not depend on it.
        """
        inputs = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        if not self.built:
            self.build(tuple(inputs.shape))
        gamma = self.predict(POOLS[self.pool](inputs))
        return gamma, self._active(gamma)

    def _follow_threshold(self, gamma):
        """Training only: moves the local threshold, or records gamma for `update_global_threshold`."""
        if self.threshold == "global" and self.enable:
            self._recorded_gammas[replica_id()] = ops.stop_gradient(gamma)
        k = active_count(self.filters, self.density)
        if self.threshold == "local" and k < self.filters:
            follow(self.threshold_variable, kth_largest(gamma, k + 1), self.decay)

    def _parametric_output(self, conved, statistics, gamma, active, pooled):
        # act(n·g + a·β) with n = (y − mean)·inv is computed as act(y·scale + offset), scale = inv·g and
        # offset = a·β − mean·scale, per sample and channel: one multiply-add over the activations instead of
        # four passes (the same function, and the same gradients, reassociated).
        mean, inverse = statistics
        gate = per_sample(active * gamma)
        scale = inverse * gate
        offset = -mean * scale
        if self.parametric_beta:
            beta = self.predict(pooled, "beta")
        else:
            beta = self.beta
        if beta is not None:
            offset = offset + per_sample(active * beta) * (gate if self.add_beta_first else 1.0)
        outputs = self.activation(conved * scale + offset)
        # A switched-off channel has scale and offset 0, so it is act(0): already zero for ReLU-like activations.
        return outputs if self._activation_keeps_zero else per_sample(active) * outputs

    def _squeeze_output(self, conved, statistics, gamma, active, pooled):
        return per_sample(active * gamma) * self.activation(affine(conved, statistics, self.gamma, self.beta))

    def _naive_output(self, conved, statistics, gamma, active, pooled):
        activated = self.activation(affine(conved, statistics, self.gamma, self.beta))
        target = ops.stop_gradient(POOLS[self.pool](activated))
        self.add_loss(self.regularizer["mse"] * ops.mean(global_batch(ops.square(gamma - target))))
        return per_sample(active) * activated

    _POLICY_OUTPUTS = {"parametric": _parametric_output, "squeeze": _squeeze_output, "naive": _naive_output}

    def effective_kernel(self):
        """The kernel the layer convolves with: `kernel · mask` (with `use_mask`), quantized by `kernel_quantizer`."""
        kernel = self.kernel * self.mask if self.use_mask else self.kernel
        return kernel if self.kernel_quantizer is None else self.kernel_quantizer(kernel)

    def call(self, inputs, training=None):
        conved = self.convolution_op(inputs, self.effective_kernel())
        moving = (self.moving_mean, self.moving_variance, self.momentum) if self.norm == "batch" else None
        statistics = normalization(conved, moving, self.epsilon, training and self.trainable)
        pooled = POOLS[self.pool](inputs)
        gamma = self.predict(pooled)
        active = self._active(gamma)
        if training:
            self._follow_threshold(gamma)
        outputs = self._POLICY_OUTPUTS[self.policy](self, conved, statistics, gamma, active, pooled)
        # Of the global batch, the same on every replica, as on one device (`l1` and `l2` sum over the batch).
        sparsity = {name: weight for name, weight in self.regularizer.items() if name in SPARSITY_REGULARIZERS}
        kept = global_batch(gamma * active) if any(weight > 0 for weight in sparsity.values()) else None
        for name, weight in sparsity.items():
            if weight > 0:
                self.add_loss(weight * SPARSITY_REGULARIZERS[name](kept))
        self.last_density.assign(ops.cast(batch_mean(ops.cast(active, "float32")), self.last_density.dtype))
        return outputs

    # Conv2D saves only its kernel and bias; this layer's state is all of its own variables.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    # The constructor arguments `get_config` saves as they are; the others are serialised Keras objects.
    _PLAIN_CONFIG = ("filters", "kernel_size", "strides", "padding", "density", "policy", "threshold", "pool",
                     "factor", "enable", "trainable_gate", "trainable_kernel", "norm", "parametric_beta",
                     "add_beta_first", "decay", "granularity", "momentum", "epsilon", "center", "scale",
                     "dilation_rate", "use_mask")

    def get_config(self):
        # Conv2D's config names arguments this layer does not take (groups, use_bias, data_format, ...).
        config = keras.layers.Layer.get_config(self)
        config.update({name: getattr(self, name) for name in self._PLAIN_CONFIG})
        config.update({
            "regularizer": dict(self.regularizer),
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "global_threshold": self._global_threshold_config(),
        })
        config["kernel_quantizer"] = (None if self.kernel_quantizer is None
                                      else keras.saving.serialize_keras_object(self.kernel_quantizer))
        return config

    def _global_threshold_config(self):
        if self.global_threshold is None:
            return None
        config = keras.saving.serialize_keras_object(self.global_threshold)
        # Keras tags a shared object only when it meets it a second time, after the first layer's config has
        # already been copied; tagging every layer's copy lets `.keras` loading rebuild a single shared instance.
        config["shared_object_id"] = id(self.global_threshold)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("global_threshold") is not None:
            config["global_threshold"] = keras.saving.deserialize_keras_object(config["global_threshold"])
        return cls(**config)
