"""The steps of a sparse program, one per Keras layer: each reads the layer's weights once, folded for inference,
and maps the compact features of its inputs (`features.Feature`) to the compact feature of its output.

Folding is done ahead of time so that a step costs one operation where Keras spends several: a batch norm that
follows a convolution is folded into its kernel and bias; a gated layer's own normalisation into its kernel (the
per-image gate stays a multiply-add); pruning masks into kernels; and gated kernels are stored output channel first,
so that gathering the active output channels reads contiguous memory.
"""

import keras
import tensorflow as tf

from mayo_lite.layers import GatedConv2D, ReduceMean, Squeeze
from mayo_lite.sparse.features import Feature, absent_fill, materialize, nonzero, take
from mayo_lite.sparse.folding import (Step, UnsupportedModel, apply_to_fill, batch_norm_affine, convolve,
                                      elementwise, folded_bias, folded_kernel, spans_whole_kernel, variable)
from mayo_lite.sparse.gated_step import GatedStep


class ConvolutionStep(Step):
    """`Conv2D` (masked ones included), with a following batch norm folded in. Its output has every channel."""

    def __init__(self, layer, affine=None):
        super().__init__(layer)
        if layer.groups != 1:
            raise UnsupportedModel(f"layer {layer.name}: grouped convolutions are not supported")
        kernel = self._fold(layer, affine)
        self.kernel_sum = variable(kernel.sum(axis=(0, 1)), "kernel_sum") if spans_whole_kernel(layer) else None

    def __call__(self, features):
        (feature,) = features
        if feature.fill is not None and self.kernel_sum is None:
            feature = Feature.full(materialize(feature))
        bias = self.bias
        if feature.fill is not None:
            bias = bias + tf.linalg.matvec(self.kernel_sum, absent_fill(feature), transpose_a=True)
        outputs = convolve(self.layer, feature.values, take(self.kernel, feature.channels, axis=2)) + bias
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
        kernel = folded_kernel(layer)  # masked and quantized, if the layer is
        channels = kernel.shape[2] * kernel.shape[3]
        bias = folded_bias(layer, channels)
        if affine is not None:
            kernel = kernel * affine[0].reshape(kernel.shape[2:])
            bias = bias * affine[0] + affine[1]
        self.kernel = variable(kernel, "kernel")
        self.bias = variable(bias, "bias")
        self.bias_values = bias
        self.kernel_sum = kernel.sum(axis=(0, 1))[:, 0]

    def __call__(self, features):
        (feature,) = features
        layer = self.layer
        if feature.compact and (layer.depth_multiplier != 1 or (
                feature.fill is not None and not spans_whole_kernel(layer))):
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
        return feature.with_values(outputs, apply_to_fill(layer.activation, fill, feature.width))


class DenseStep(Step):
    """`Dense`, with a following batch norm folded in; reads only the kernel rows of the present inputs."""

    def __init__(self, layer, affine=None):
        super().__init__(layer)
        self._fold(layer, affine)

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
        self.scale = variable(scale, "scale")
        self.offset = variable(offset, "offset")

    def __call__(self, features):
        (feature,) = features
        outputs = feature.values * take(self.scale, feature.channels) + take(self.offset, feature.channels)
        if not feature.compact:
            return Feature.full(outputs)
        fill = self.offset_values + (0.0 if feature.fill is None else feature.fill * self.scale_values)
        return feature.with_values(outputs, nonzero(fill))


class ActivationStep(Step):
    """An element-wise activation layer (others, such as softmax, run as `LayerStep`)."""

    def __call__(self, features):
        (feature,) = features
        outputs = self.layer.call(feature.values)
        if not feature.compact:
            return Feature.full(outputs)
        return feature.with_values(outputs, apply_to_fill(self.layer.call, feature.fill, feature.width))


class ChannelwiseStep(Step):
    """A layer that treats each channel alone and keeps a constant channel constant (pooling, dropout, identity,
    spatial reductions and squeezes): it runs on the present channels only."""

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

    def __call__(self, features):
        values = [materialize(feature) for feature in features]
        outputs = self.layer(values[0] if len(values) == 1 else values, training=False)
        return Feature.full(outputs)


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
