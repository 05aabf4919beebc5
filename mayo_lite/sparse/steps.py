"""The steps of a sparse program, one per Keras layer: each reads the layer's weights once, folded for inference,
and maps the compact features of its inputs (`features.Feature`) to the compact feature of its output.

Folding is done ahead of time so that a step costs one operation where Keras spends several: a batch norm that
follows a convolution is folded into its kernel and bias; a gated layer's own normalisation into its kernel (the
per-image gate stays a multiply-add); pruning masks into kernels; and gated kernels are stored output channel first,
so that gathering the active output channels reads contiguous memory.
"""

import keras
import numpy as np
import tensorflow as tf

from mayo_lite.layers import GatedConv2D, ReduceMean, Squeeze
from mayo_lite.layers.gated import POOLS, active_count
from mayo_lite.sparse.features import Feature, absent_fill, materialize, nonzero, take


class UnsupportedModel(ValueError):
    """The model has a layer or a setting that sparse execution does not handle; the message says which."""


def _numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), np.float32)


def _variable(value, name):
    return tf.Variable(np.ascontiguousarray(value, np.float32), trainable=False, name=name)


def batch_norm_affine(layer):
    """(scale, offset) of a `BatchNormalization` layer in inference: `x·scale + offset` per channel."""
    if layer.axis not in (-1, len(layer.input.shape) - 1):
        raise UnsupportedModel(f"layer {layer.name}: a batch norm over axis {layer.axis}, not the channels")
    inverse = 1.0 / np.sqrt(_numpy(layer.moving_variance) + layer.epsilon)
    scale = inverse * (_numpy(layer.gamma) if layer.scale else 1.0)
    offset = (_numpy(layer.beta) if layer.center else 0.0) - _numpy(layer.moving_mean) * scale
    return scale.astype(np.float32), np.broadcast_to(offset, scale.shape).astype(np.float32)


def _kernel(layer):
    kernel = _numpy(layer.kernel)
    return kernel * _numpy(layer.mask) if getattr(layer, "mask", None) is not None else kernel


ELEMENTWISE = {"relu", "relu6", "linear", "sigmoid", "tanh", "elu", "selu", "softplus", "softsign", "silu",
               "swish", "gelu", "hard_sigmoid", "hard_silu", "hard_swish", "leaky_relu", "mish", "exponential"}


def elementwise(activation):
    """Whether a Keras activation acts on each value alone (so it can run on the present channels only)."""
    return getattr(activation, "__name__", None) in ELEMENTWISE


def constant_function(function, values):
    """`function` of a NumPy array, computed eagerly even while a program is being traced: fills are constants."""
    with tf.init_scope():
        return np.asarray(keras.ops.convert_to_numpy(function(tf.constant(values))), np.float32)


def _apply_to_fill(activation, fill, width):
    values = np.zeros(width, np.float32) if fill is None else fill
    return nonzero(constant_function(activation, values[None])[0])


def _spans_whole_kernel(layer):
    """True when every output position sees the whole kernel window, so a constant input channel adds the same
    amount everywhere: 1×1 kernels, or `valid` padding."""
    return layer.padding == "valid" or all(size == 1 for size in layer.kernel_size)


def _convolve(layer, inputs, kernel):
    return tf.nn.conv2d(inputs, kernel, strides=(1, *layer.strides, 1), padding=layer.padding.upper(),
                        dilations=(1, *layer.dilation_rate, 1))


class Step(tf.Module):
    """One layer of the model, prepared; called on the features of its inputs."""

    def __init__(self, layer):
        super().__init__(name=None)
        self.layer_name = layer.name


class ConvolutionStep(Step):
    """`Conv2D` (masked ones included), with a following batch norm folded in. Its output has every channel."""

    def __init__(self, layer, affine=None):
        super().__init__(layer)
        if layer.groups != 1:
            raise UnsupportedModel(f"layer {layer.name}: grouped convolutions are not supported")
        self.layer = layer
        kernel = _kernel(layer)
        bias = _numpy(layer.bias) if layer.use_bias else np.zeros(layer.filters, np.float32)
        if affine is not None:
            kernel, bias = kernel * affine[0], bias * affine[0] + affine[1]
        self.kernel = _variable(kernel, "kernel")
        self.bias = _variable(bias, "bias")
        self.kernel_sum = _variable(kernel.sum(axis=(0, 1)), "kernel_sum") if _spans_whole_kernel(layer) else None

    def __call__(self, features):
        (feature,) = features
        if feature.fill is not None and self.kernel_sum is None:
            feature = Feature.full(materialize(feature))
        bias = self.bias
        if feature.fill is not None:
            bias = bias + tf.linalg.matvec(self.kernel_sum, absent_fill(feature), transpose_a=True)
        outputs = _convolve(self.layer, feature.values, take(self.kernel, feature.channels, axis=2)) + bias
        return Feature.full(self.layer.activation(outputs))


def depthwise_by_shifts(inputs, kernel, strides, padding):
    """A depthwise convolution (multiplier 1, no dilation) written as a sum of shifted slices of `inputs` scaled
    per channel by `kernel` (kh, kw, channels), with TensorFlow's `same` padding.

    XLA compiles this to one pass over the map; its own depthwise convolution on CPU is 10-25 times slower than
    TensorFlow's at batch 1 (measured on MobileNet's layers), and this is as fast as TensorFlow's.
    """
    kernel_height, kernel_width = kernel.shape[0], kernel.shape[1]
    height, width = inputs.shape[1], inputs.shape[2]
    stride_y, stride_x = strides
    if padding == "same":
        out_height, out_width = -(-height // stride_y), -(-width // stride_x)
        pad_y = max((out_height - 1) * stride_y + kernel_height - height, 0)
        pad_x = max((out_width - 1) * stride_x + kernel_width - width, 0)
        inputs = tf.pad(inputs, [[0, 0], [pad_y // 2, pad_y - pad_y // 2], [pad_x // 2, pad_x - pad_x // 2], [0, 0]])
    else:
        out_height = (height - kernel_height) // stride_y + 1
        out_width = (width - kernel_width) // stride_x + 1
    terms = [inputs[:, dy:dy + (out_height - 1) * stride_y + 1:stride_y,
                    dx:dx + (out_width - 1) * stride_x + 1:stride_x, :] * kernel[dy, dx]
             for dy in range(kernel_height) for dx in range(kernel_width)]
    return tf.add_n(terms)


class DepthwiseStep(Step):
    """`DepthwiseConv2D`, with a following batch norm folded in; keeps the channels it is given. Under XLA it
    runs as a sum of shifted slices (`depthwise_by_shifts`)."""

    by_shifts = True

    def __init__(self, layer, affine=None):
        super().__init__(layer)
        self.layer = layer
        kernel = _numpy(layer.kernel)
        channels = kernel.shape[2] * kernel.shape[3]
        bias = _numpy(layer.bias) if layer.use_bias else np.zeros(channels, np.float32)
        if affine is not None:
            kernel = kernel * affine[0].reshape(kernel.shape[2:])
            bias = bias * affine[0] + affine[1]
        self.kernel = _variable(kernel, "kernel")
        self.bias = _variable(bias, "bias")
        self.bias_values = bias
        self.kernel_sum = kernel.sum(axis=(0, 1))[:, 0]

    def __call__(self, features):
        (feature,) = features
        layer = self.layer
        if feature.compact and (layer.depth_multiplier != 1 or (
                feature.fill is not None and not _spans_whole_kernel(layer))):
            feature = Feature.full(materialize(feature))
        kernel = take(self.kernel, feature.channels, axis=2)
        if self.by_shifts and layer.depth_multiplier == 1 and tuple(layer.dilation_rate) == (1, 1):
            outputs = depthwise_by_shifts(feature.values, kernel[..., 0], layer.strides, layer.padding)
        else:
            outputs = tf.nn.depthwise_conv2d(feature.values, kernel, strides=(1, *layer.strides, 1),
                                             padding=layer.padding.upper(), dilations=layer.dilation_rate)
        outputs = layer.activation(outputs + take(self.bias, feature.channels))
        if not feature.compact:
            return Feature.full(outputs)
        fill = self.bias_values + (0.0 if feature.fill is None else feature.fill * self.kernel_sum)
        return feature.with_values(outputs, _apply_to_fill(layer.activation, fill, feature.width))


class DenseStep(Step):
    """`Dense`, with a following batch norm folded in; reads only the kernel rows of the present inputs."""

    def __init__(self, layer, affine=None):
        super().__init__(layer)
        self.layer = layer
        kernel = _kernel(layer)
        bias = _numpy(layer.bias) if layer.use_bias else np.zeros(layer.units, np.float32)
        if affine is not None:
            kernel, bias = kernel * affine[0], bias * affine[0] + affine[1]
        self.kernel = _variable(kernel, "kernel")
        self.bias = _variable(bias, "bias")

    def __call__(self, features):
        (feature,) = features
        bias = self.bias
        if feature.fill is not None:
            bias = bias + tf.linalg.matvec(self.kernel, absent_fill(feature), transpose_a=True)
        kernel = take(self.kernel, feature.channels)
        outputs = tf.einsum("...i,io->...o", feature.values, kernel) + bias
        return Feature.full(self.layer.activation(outputs))


class BatchNormStep(Step):
    """A `BatchNormalization` that could not be folded into the layer before it."""

    def __init__(self, layer):
        super().__init__(layer)
        scale, offset = batch_norm_affine(layer)
        self.scale_values, self.offset_values = scale, offset
        self.scale = _variable(scale, "scale")
        self.offset = _variable(offset, "offset")

    def __call__(self, features):
        (feature,) = features
        outputs = feature.values * take(self.scale, feature.channels) + take(self.offset, feature.channels)
        if not feature.compact:
            return Feature.full(outputs)
        fill = self.offset_values + (0.0 if feature.fill is None else feature.fill * self.scale_values)
        return feature.with_values(outputs, nonzero(fill))


class ActivationStep(Step):
    """An element-wise activation layer (others, such as softmax, run as `LayerStep`)."""

    def __init__(self, layer):
        super().__init__(layer)
        self.layer = layer

    def __call__(self, features):
        (feature,) = features
        outputs = self.layer.call(feature.values)
        if not feature.compact:
            return Feature.full(outputs)
        return feature.with_values(outputs, _apply_to_fill(self.layer.call, feature.fill, feature.width))


class ChannelwiseStep(Step):
    """A layer that treats each channel alone and keeps a constant channel constant (pooling, dropout, identity,
    spatial reductions and squeezes): it runs on the present channels only."""

    def __init__(self, layer):
        super().__init__(layer)
        self.layer = layer

    def __call__(self, features):
        (feature,) = features
        outputs = self.layer.call(feature.values)
        return feature.with_values(outputs, feature.fill) if feature.compact else Feature.full(outputs)


class ZeroPaddingStep(ChannelwiseStep):
    """`ZeroPadding2D`: a zero channel stays zero, a constant one does not, so constants are materialised."""

    def __call__(self, features):
        (feature,) = features
        if feature.fill is not None:
            feature = Feature.full(materialize(feature))
        return super().__call__([feature])


class AddStep(Step):
    """`Add`: a compact input is scattered into the full map and added (one fused pass under XLA)."""

    def __call__(self, features):
        values = [materialize(feature) for feature in features]
        return Feature.full(tf.add_n(values))


class LayerStep(Step):
    """Any other layer: its inputs are materialised and the Keras layer itself runs on them."""

    def __init__(self, layer):
        super().__init__(layer)
        self.layer = layer

    def __call__(self, features):
        values = [materialize(feature) for feature in features]
        outputs = self.layer(values[0] if len(values) == 1 else values, training=False)
        return Feature.full(outputs)


class GatedStep(Step):
    """A `GatedConv2D` in inference, computing only the output channels its gate keeps for this image from only the
    input channels that are present (fbs.md steps 1-7; the same function as `GatedConv2D.call(training=False)`).

    The normalisation is folded into the kernel (`W·inv`, bias `−mean·inv`), so the output of a kept channel c is
    `act(g_c·(conv_c + bias_c) + beta_c)`, with g_c the gate's gamma: the top-k values are reused as gamma. With the
    online threshold k is fixed by the density, so every shape is static and XLA compiles the program once.
    """

    def __init__(self, layer):
        super().__init__(layer)
        if layer.norm != "batch":
            raise UnsupportedModel(f"layer {layer.name}: sparse execution needs norm='batch' (moving statistics); "
                                   f"norm='{layer.norm}' normalises each image by its own moments")
        self.layer = layer
        inverse = 1.0 / np.sqrt(_numpy(layer.moving_variance) + layer.epsilon)
        scale = inverse * (_numpy(layer.gamma) if layer.gamma is not None else 1.0)
        kernel = _kernel(layer) * scale
        bias = -_numpy(layer.moving_mean) * scale
        beta = _numpy(layer.beta) if layer.beta is not None else None
        if layer.policy != "parametric" and beta is not None:  # an ordinary batch-norm offset
            bias, beta = bias + beta, None
        self.count = active_count(layer.filters, layer.density)
        self.selects = layer.enable and self.count < layer.filters
        self.positions = layer.output.shape[1] * layer.output.shape[2]
        # Output channel first when they are gathered, so that each one is a contiguous block; as Conv2D keeps
        # it otherwise (a transposed kernel makes XLA's convolution slower).
        self.kernel = _variable(np.transpose(kernel, (3, 0, 1, 2)) if self.selects else kernel, "kernel")
        # On a small map the layer may compute every channel instead (`_worth_gathering`), from the kernel as is.
        self.whole_kernel = (_variable(kernel, "whole_kernel") if self.selects and self.positions < SMALL_MAP
                             else None)
        self.kernel_sum = _variable(kernel.sum(axis=(0, 1)), "kernel_sum") if _spans_whole_kernel(layer) else None
        self.bias = _variable(bias, "bias")
        self.beta = _variable(beta, "beta") if beta is not None else None
        self.predictors = {prefix: [(_variable(_numpy(getattr(layer, f"{name}_kernel")), f"{name}_kernel"),
                                     _variable(_numpy(getattr(layer, f"{name}_bias")), f"{name}_bias"))
                                    for name in layer.predictor_names(prefix)]
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
        convolved = _convolve(layer, feature.values, kernel) + take(bias, channels)
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
        return saved > GATHER_COST * gathered

    def _every_channel(self, feature, gamma, pooled, pooled_fill):
        """The layer computed for every output channel, those the gate switches off then zeroed."""
        present = feature
        feature = Feature.full(materialize(feature))
        if self.threshold is None:
            threshold = tf.gather(gamma, ranked(gamma, self.count + 1)[self.count])
        else:
            threshold = tf.cast(self.threshold, gamma.dtype)
        kept = tf.cast(gamma > threshold, gamma.dtype)
        convolved = _convolve(self.layer, feature.values, self.whole_kernel) + self.bias
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


# Maps of fewer positions than this are small: a gated layer there keeps a second copy of its kernel, to compute
# every channel when gathering would cost more.
SMALL_MAP = 100

# What gathering one kernel weight costs, in multiply-adds of a convolution (measured on an AVX-512 CPU under XLA:
# the break-even of ResNet-18's and M-CifarNet's small layers); GatedStep gathers when it saves more than this.
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


def is_channelwise(layer):
    """Layers that act on each channel alone and map a constant channel to a constant (ChannelwiseStep)."""
    if isinstance(layer, (keras.layers.Dropout, keras.layers.Identity, keras.layers.MaxPooling2D,
                          keras.layers.AveragePooling2D)):
        return getattr(layer, "data_format", "channels_last") == "channels_last"
    if isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
        return layer.data_format == "channels_last"
    if isinstance(layer, (ReduceMean, Squeeze)):
        rank = len(layer.input.shape)
        return (rank - 1) not in {axis % rank for axis in layer.axis}
    return False


def step_for(layer, affine=None):
    """The step that runs `layer`, with `affine` (a following batch norm's scale and offset) folded in."""
    if len(layer._inbound_nodes) != 1:
        raise UnsupportedModel(f"layer {layer.name}: a layer called more than once is not supported")
    if isinstance(layer, GatedConv2D):
        return GatedStep(layer)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return DepthwiseStep(layer, affine)
    if isinstance(layer, keras.layers.Conv2D) and layer.data_format == "channels_last":
        return ConvolutionStep(layer, affine)
    if isinstance(layer, keras.layers.Dense):
        return DenseStep(layer, affine)
    if isinstance(layer, keras.layers.BatchNormalization):
        return BatchNormStep(layer)
    if isinstance(layer, (keras.layers.Activation, keras.layers.ReLU)) and (
            isinstance(layer, keras.layers.ReLU) or elementwise(layer.activation)):
        return ActivationStep(layer)
    if isinstance(layer, keras.layers.ZeroPadding2D) and layer.data_format == "channels_last":
        return ZeroPaddingStep(layer)
    if is_channelwise(layer):
        return ChannelwiseStep(layer)
    if isinstance(layer, keras.layers.Add):
        return AddStep(layer)
    return LayerStep(layer)


def foldable(layer):
    """Layers a following batch norm can be folded into: linear convolutions and dense layers."""
    return (isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and not isinstance(layer, GatedConv2D)
            and getattr(layer.activation, "__name__", None) == "linear"
            and getattr(layer, "data_format", "channels_last") == "channels_last")

