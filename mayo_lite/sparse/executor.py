"""One image at a time through a gated model, computing only the channels that are active.

The state between layers is the compact activation (only the active channels of the full tensor) and the indices of
those channels in the full tensor (None when all are there). A gated layer predicts gamma from the compact input
(the predictor's rows of inactive inputs would multiply zeros), picks its active outputs, gathers the kernel's
active input and output channels and convolves only those; layers that act channel by channel run on the compact
tensor, taking the matching slice of their own parameters. The result equals the gated model's output (tested).

Keras cannot express a convolution whose channel set changes with every input, hence this hand-written executor. It
handles chains of layers (no branches) and the parametric policy, the paper's; other models raise
`UnsupportedModel`.
"""

import keras
import tensorflow as tf

from mayo_lite.layers import GatedConv2D, LocalResponseNormalization, ReduceMean, Squeeze
from mayo_lite.layers.gated import POOLS, active_count


class UnsupportedModel(ValueError):
    """The model has a layer or a topology that sparse execution does not handle; the message says which."""


def _take(values, indices, axis=0):
    return values if indices is None else tf.gather(values, indices, axis=axis)


def _convolve(layer, inputs, kernel):
    return tf.nn.conv2d(inputs, kernel, strides=(1, *layer.strides, 1), padding=layer.padding.upper(),
                        dilations=(1, *layer.dilation_rate, 1))


def _kernel(layer):
    return layer.kernel * layer.mask if getattr(layer, "mask", None) is not None else layer.kernel


def _active_channels(layer, gamma):
    """The channels the gate keeps for this one image, as GatedConv2D decides (fbs.md step 5): (indices, keep),
    where `keep` is None or a 0/1 factor per index.

    With the online threshold the k best channels are taken with a static k, so every shape downstream is static
    (TensorFlow's CPU convolutions are much faster with static shapes); a tie at the threshold, which GatedConv2D
    switches off, is kept in the set and zeroed by `keep`.
    """
    count = active_count(layer.filters, layer.density)
    if not layer.enable or count == layer.filters:
        return tf.range(layer.filters), None
    if layer.threshold == "online":
        top = tf.math.top_k(gamma, count + 1)
        keep = tf.cast(top.values[:count] > top.values[count], gamma.dtype)
        return top.indices[:count], keep
    variable = layer.threshold_variable if layer.threshold == "local" else layer.global_threshold.threshold_variable
    return tf.cast(tf.reshape(tf.where(gamma > tf.cast(variable, gamma.dtype)), [-1]), tf.int32), None


def _gated(layer, inputs, channels):
    names = layer._predictor_names("gate")
    pooled = POOLS[layer.pool](inputs)
    for index, name in enumerate(names):
        kernel = getattr(layer, f"{name}_kernel")
        kernel = _take(kernel, channels) if index == 0 else kernel
        pooled = tf.matmul(pooled, kernel) + getattr(layer, f"{name}_bias")
        pooled = tf.nn.relu(pooled) if index < len(names) - 1 else layer.activation(pooled)
    gamma = pooled[0]
    active, keep = _active_channels(layer, gamma)
    kernel = tf.gather(_take(_kernel(layer), channels, axis=2), active, axis=3)
    convolved = _convolve(layer, inputs, kernel)
    normalized = (convolved - tf.gather(layer.moving_mean, active)) * tf.math.rsqrt(
        tf.gather(layer.moving_variance, active) + layer.epsilon)
    scale = tf.gather(gamma, active)
    beta = tf.gather(layer.beta, active) if layer.beta is not None else 0.0
    mixed = (normalized + beta) * scale if layer.add_beta_first else normalized * scale + beta
    outputs = layer.activation(mixed)
    return (outputs if keep is None else outputs * keep), active


def _convolution(layer, inputs, channels):
    outputs = _convolve(layer, inputs, _take(_kernel(layer), channels, axis=2))
    if layer.use_bias:
        outputs = outputs + layer.bias
    return layer.activation(outputs), None


def _depthwise(layer, inputs, channels):
    kernel = _take(layer.kernel, channels, axis=2)
    outputs = tf.nn.depthwise_conv2d(inputs, kernel, strides=(1, *layer.strides, 1),
                                     padding=layer.padding.upper(), dilations=layer.dilation_rate)
    if layer.use_bias:
        outputs = outputs + _take(layer.bias, channels)
    return layer.activation(outputs), channels


def _dense(layer, inputs, channels):
    outputs = tf.matmul(inputs, _take(layer.kernel, channels)) + (layer.bias if layer.use_bias else 0.0)
    return layer.activation(outputs), None


def _batch_norm(layer, inputs, channels):
    def part(variable, default):
        return _take(variable, channels) if variable is not None else default
    return tf.nn.batch_normalization(
        inputs, part(layer.moving_mean, 0.0), part(layer.moving_variance, 1.0), part(layer.beta, None),
        part(layer.gamma, None), layer.epsilon), channels


def _flatten(layer, inputs, channels):
    """Flattening a compact map: the full tensor's index of compact element (h, w, c) is (h·W + w)·C + channels[c]."""
    _, height, width, full = layer.input.shape
    outputs = tf.reshape(inputs, (tf.shape(inputs)[0], -1))
    if channels is None:
        return outputs, None
    positions = tf.range(height * width)[:, None] * full + channels[None, :]
    return outputs, tf.reshape(positions, [-1])


def _channelwise(layer, inputs, channels):
    return layer(inputs, training=False), channels


def _cross_channel(layer, inputs, channels):
    return layer(inputs, training=False), None


# Keras layer class -> (layer, compact inputs, channel indices) -> (compact outputs, channel indices). Checked in
# order, so GatedConv2D and DepthwiseConv2D come before their base class Conv2D.
RUNNERS = {
    GatedConv2D: _gated,
    keras.layers.DepthwiseConv2D: _depthwise,
    keras.layers.Conv2D: _convolution,
    keras.layers.Dense: _dense,
    keras.layers.BatchNormalization: _batch_norm,
    keras.layers.Flatten: _flatten,
    LocalResponseNormalization: _cross_channel,
}
CHANNELWISE = (keras.layers.Dropout, keras.layers.Identity, keras.layers.Activation, keras.layers.ZeroPadding2D,
               keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.GlobalAveragePooling2D,
               keras.layers.GlobalMaxPooling2D, ReduceMean, Squeeze)


def _check_after_gate(layer):
    """Raises for a layer that cannot take the compact channels a gate leaves (checked when the model is read)."""
    if isinstance(layer, keras.layers.BatchNormalization) and layer.center:
        # Its offset makes a switched-off (zero) channel non-zero, so the next layer would need it after all.
        raise UnsupportedModel(f"layer {layer.name}: a batch norm with an offset after a gate turns switched-off "
                               "channels into constants; sparse execution needs them to stay zero")
    if isinstance(layer, LocalResponseNormalization):
        raise UnsupportedModel(f"layer {layer.name}: {type(layer).__name__} mixes channels, after a gate")
    if isinstance(layer, keras.layers.DepthwiseConv2D) and layer.depth_multiplier != 1:
        raise UnsupportedModel(f"layer {layer.name}: a depthwise multiplier above 1 after a gate")


def _runner(layer):
    if isinstance(layer, GatedConv2D) and (layer.policy != "parametric" or layer.parametric_beta
                                           or layer.norm != "batch"):
        raise UnsupportedModel(f"layer {layer.name}: sparse execution handles the parametric policy with batch "
                               f"norm (policy={layer.policy}, parametric_beta={layer.parametric_beta}, "
                               f"norm={layer.norm})")
    for cls, run in RUNNERS.items():
        if isinstance(layer, cls):
            return run
    if isinstance(layer, CHANNELWISE):
        return _channelwise
    raise UnsupportedModel(f"layer {layer.name}: {type(layer).__name__} is not supported by sparse execution")


class SparseGatedModel:
    """Runs `model` (a chain of layers with gated convolutions) on one image, skipping switched-off channels.

    Call it with a batch of one image, (1, H, W, C); it returns the model's output for it, as
    `model(image, training=False)` would, computed with only the active channels of every gated layer.
    """

    def __init__(self, model):
        self.model = model
        self.steps = []
        previous, compact = None, False
        for layer in model.layers:
            node = layer._inbound_nodes[0]
            if isinstance(layer, keras.layers.InputLayer):
                previous = node.output_tensors[0]
                continue
            if len(node.input_tensors) != 1 or node.input_tensors[0] is not previous:
                raise UnsupportedModel(f"layer {layer.name}: sparse execution handles chains of layers; this one "
                                       "joins or branches")
            if compact:
                _check_after_gate(layer)
            run = _runner(layer)
            self.steps.append((layer, run))
            compact = run is _gated or (compact and run in (_depthwise, _batch_norm, _flatten, _channelwise))
            previous = node.output_tensors[0]
        self._call = tf.function(self._run, reduce_retracing=True)

    def _run(self, image):
        outputs, channels = image, None
        for layer, run in self.steps:
            outputs, channels = run(layer, outputs, channels)
        if channels is not None:  # the model ends on gated channels: scatter them into the full output
            full = self.model.output.shape[-1]
            outputs = tf.transpose(tf.scatter_nd(channels[:, None], tf.transpose(outputs),
                                                 (full, tf.shape(outputs)[0])))
        return outputs

    def __call__(self, image):
        image = tf.convert_to_tensor(image, dtype=self.model.compute_dtype)
        if image.shape.rank != 4 or image.shape[0] != 1:
            raise ValueError(f"SparseGatedModel takes one image, shape (1, H, W, C); got {tuple(image.shape)}")
        return self._call(image)
