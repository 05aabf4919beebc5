"""The step of a gated (FBS) convolution in a sparse program: only the output channels its gate keeps for this image,
computed from only the input channels that are present."""

import numpy as np
import tensorflow as tf

from mayo_lite.layers.gate_ops import POOLS
from mayo_lite.layers.thresholds import active_count
from mayo_lite.sparse.features import Feature, absent_fill, materialize, take
from mayo_lite.sparse.folding import (Step, UnsupportedModel, as_array, constant_function, convolve, folded_kernel,
                                      spans_whole_kernel, variable)

# Maps of fewer positions than this are small: a gated layer there keeps a second copy of its kernel, to compute
# every channel when gathering would cost more.
SMALL_MAP = 100

# What gathering one kernel weight costs, in multiply-adds of a convolution, for a program's first guess (the
# break-even of ResNet-18's and M-CifarNet's small layers on one AVX-512 CPU under XLA); GatedStep gathers when it
# saves more than this. Tuning (`tuning.py`) times this guess against gathering everywhere and against computing
# every channel of every small map, on the machine that runs the program, and keeps the fastest.
GATHER_COST = 55

# Above this many channels a sort (top_k) beats comparing every pair of channels.
RANK_BY_COMPARISON = 512


def ranked(values, count):
    """The indices of the `count` largest of `values` (a vector), largest first, ties in index order: what
    `tf.math.top_k(values, count).indices` gives.

    For a few hundred channels, counting for each channel how many come before it is one fused pass under XLA,
    several times faster at batch 1 than XLA's sort-based top_k.
    """
    size = values.shape[0]
    if size > RANK_BY_COMPARISON:
        return tf.math.top_k(values, count).indices
    index = tf.range(size)
    before = (values[None, :] > values[:, None]) | (
        (values[None, :] == values[:, None]) & (index[None, :] < index[:, None]))
    rank = tf.reduce_sum(tf.cast(before, tf.int32), axis=1)
    chosen = tf.cast(rank[None, :] == tf.range(count)[:, None], tf.int32)
    return tf.reduce_sum(chosen * index[None, :], axis=1)


class GatedStep(Step):
    """A `GatedConv2D` in inference, computing only the output channels its gate keeps for this image from only the
    input channels that are present (docs/design/fbs-semantics.md steps 1-7; the same function as `GatedConv2D.call(training=False)`).

    The normalisation is folded into the kernel (`W·inv`, bias `−mean·inv`), so the output of a kept channel c is
    `act(g_c·(conv_c + bias_c) + beta_c)`, with g_c the gate's gamma: the top-k values are reused as gamma. With the
    online threshold k is fixed by the density, so every shape is static and XLA compiles the program once.
    """

    def __init__(self, layer):
        super().__init__(layer)
        if layer.norm != "batch":
            raise UnsupportedModel(f"layer {layer.name}: sparse execution needs norm='batch' (moving statistics); "
                                   f"norm='{layer.norm}' normalises each image by its own moments")
        inverse = 1.0 / np.sqrt(as_array(layer.moving_variance) + layer.epsilon)
        scale = inverse * (as_array(layer.gamma) if layer.gamma is not None else 1.0)
        kernel = folded_kernel(layer) * scale
        bias = -as_array(layer.moving_mean) * scale
        beta = as_array(layer.beta) if layer.beta is not None else None
        if layer.policy != "parametric" and beta is not None:  # an ordinary batch-norm offset
            bias, beta = bias + beta, None
        self.count = active_count(layer.filters, layer.density)
        self.gather_cost = GATHER_COST
        self.selects = layer.enable and self.count < layer.filters
        self.positions = layer.output.shape[1] * layer.output.shape[2]
        # Output channel first when they are gathered, so that each one is a contiguous block; as Conv2D keeps
        # it otherwise (a transposed kernel makes XLA's convolution slower).
        self.kernel = variable(np.transpose(kernel, (3, 0, 1, 2)) if self.selects else kernel, "kernel")
        # On a small map the layer may compute every channel instead (`_worth_gathering`), from the kernel as is.
        self.whole_kernel = (variable(kernel, "whole_kernel") if self.selects and self.positions < SMALL_MAP
                             else None)
        self.kernel_sum = variable(kernel.sum(axis=(0, 1)), "kernel_sum") if spans_whole_kernel(layer) else None
        self.bias = variable(bias, "bias")
        self.beta = variable(beta, "beta") if beta is not None else None
        self.predictors = {prefix: [(variable(as_array(kernel), f"{prefix}_kernel_{i}"),
                                     variable(as_array(bias), f"{prefix}_bias_{i}"))
                                    for i, (kernel, bias) in enumerate(layer.predictor(prefix))]
                           for prefix in (("gate", "beta") if layer.parametric_beta else ("gate",))}
        self.static = not self.selects or layer.threshold == "online"
        self.threshold = (None if layer.threshold == "online" else layer.threshold_variable
                          if layer.threshold == "local" else layer.global_threshold.threshold_variable)
        self.keeps_zero = constant_function(layer.activation, np.zeros(1, np.float32))[0] == 0.0

    def _predict(self, prefix, pooled, feature, pooled_fill, activation):
        """One value per output channel from the pooled present inputs; absent inputs contribute their pooled fill
        (zero ones contribute nothing, so only the predictor rows of the present inputs are read)."""
        layers = self.predictors[prefix]
        kernel, bias = layers[0]
        if pooled_fill is not None:
            pooled = tf.tensor_scatter_nd_update(tf.constant(pooled_fill),
                                                 tf.stack([tf.zeros_like(feature.channels), feature.channels], 1),
                                                 pooled[0])
        else:
            kernel = take(kernel, feature.channels)
        # A product written as a multiply and a sum, which XLA fuses with the row gather above into one pass (a
        # matrix product would be a separate call on the critical path of every layer).
        values = tf.reduce_sum(tf.transpose(pooled) * kernel, axis=0, keepdims=True) + bias
        for kernel, bias in layers[1:]:
            values = tf.matmul(tf.nn.relu(values), kernel) + bias
        return activation(values)[0]

    def _select(self, gamma):
        """(channels or None for all, gamma of those channels with ties at the threshold zeroed)."""
        if not self.selects:
            return None, gamma
        if self.threshold is None:
            order = ranked(gamma, self.count + 1)
            values = tf.gather(gamma, order)
            # GatedConv2D keeps gamma > the (k+1)-th largest: a tie at the threshold is switched off.
            keep = tf.cast(values[:self.count] > values[self.count], gamma.dtype)
            return order[:self.count], values[:self.count] * keep
        channels = tf.cast(tf.reshape(tf.where(gamma > tf.cast(self.threshold, gamma.dtype)), [-1]), tf.int32)
        return channels, tf.gather(gamma, channels)

    def __call__(self, features):
        (feature,) = features
        layer = self.layer
        if feature.fill is not None and self.kernel_sum is None:
            feature = Feature.full(materialize(feature))
        pool = POOLS[layer.pool]
        pooled = pool(feature.values)
        pooled_fill = None
        if feature.fill is not None:
            pooled_fill = constant_function(pool, feature.fill[None, None, None])
        gamma = self._predict("gate", pooled, feature, pooled_fill, layer.activation)
        if self.selects and not self._worth_gathering(feature):
            return self._every_channel(feature, gamma, pooled, pooled_fill)
        channels, scale = self._select(gamma)
        if self.selects:
            # Input channels first: they are known before this layer's gate is, so XLA can gather them while the
            # previous convolution still runs.
            kernel = tf.transpose(take(take(self.kernel, feature.channels, axis=3), channels), (1, 2, 3, 0))
        else:
            kernel = take(self.kernel, feature.channels, axis=2)
        bias = self.bias
        if feature.fill is not None:
            bias = bias + tf.linalg.matvec(self.kernel_sum, absent_fill(feature), transpose_a=True)
        convolved = convolve(layer, feature.values, kernel) + take(bias, channels)
        outputs = self._policy_output(convolved, scale, channels, pooled, feature, pooled_fill)
        return Feature(outputs, channels, None, layer.filters) if channels is not None else Feature.full(outputs)

    def _worth_gathering(self, feature):
        """Whether the multiply-adds that gathering the active part of the kernel saves outweigh the gathering.

        On a small map a kernel is read for few positions: ResNet-18's 7×7 layers at density 0.5 run 1.5× slower
        gathered than computed whole. Decided when the program is traced, from static shapes.
        """
        inputs, outputs = self.layer.kernel.shape[2], self.layer.filters
        present = feature.values.shape[-1]
        if present is None or self.whole_kernel is None:
            return True
        saved = self.positions * (inputs * outputs - present * self.count)
        gathered = present * (outputs + self.count) if feature.compact else inputs * self.count
        return saved > self.gather_cost * gathered

    def _every_channel(self, feature, gamma, pooled, pooled_fill):
        """The layer computed for every output channel, those the gate switches off then zeroed."""
        present = feature
        feature = Feature.full(materialize(feature))
        if self.threshold is None:
            threshold = tf.gather(gamma, ranked(gamma, self.count + 1)[self.count])
        else:
            threshold = tf.cast(self.threshold, gamma.dtype)
        kept = tf.cast(gamma > threshold, gamma.dtype)
        convolved = convolve(self.layer, feature.values, self.whole_kernel) + self.bias
        outputs = self._policy_output(convolved, gamma * kept, None, pooled, present, pooled_fill, kept)
        return Feature.full(outputs)

    def _policy_output(self, convolved, scale, channels, pooled, feature, pooled_fill, kept=None):
        layer = self.layer
        if kept is None and self.selects and self.threshold is None:
            kept = tf.cast(scale != 0, scale.dtype)
        if layer.policy == "parametric":
            if layer.parametric_beta:
                beta = take(self._predict("beta", pooled, feature, pooled_fill, lambda x: x), channels)
            else:
                beta = take(self.beta, channels) if self.beta is not None else None
            if beta is not None and kept is not None:
                beta = beta * kept
            if beta is None:
                outputs = layer.activation(convolved * scale)
            elif layer.add_beta_first:
                outputs = layer.activation((convolved + beta) * scale)
            else:
                outputs = layer.activation(convolved * scale + beta)
            return outputs if self.keeps_zero or kept is None else outputs * kept
        activated = layer.activation(convolved)
        if layer.policy == "squeeze":
            return activated * scale
        return activated if kept is None else activated * kept  # naive
