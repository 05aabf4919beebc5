"""`MaskedDepthwiseConv2D`: a `DepthwiseConv2D` that convolves with `kernel · mask` (`mayo_lite.layers.masking`)."""

import keras
from keras import ops

from mayo_lite.layers.masking import Masked, add_mask


@keras.saving.register_keras_serializable(package="mayo_lite")
class MaskedDepthwiseConv2D(Masked, keras.layers.DepthwiseConv2D):
    """Depthwise 2D convolution with a non-trainable pruning mask, as `MaskedConv2D` is to `Conv2D`: the layer
    convolves with `kernel · mask` (kernel shape `(K_h, K_w, C_in, depth_multiplier)`).

    Args:
        Those of `keras.layers.DepthwiseConv2D`; a `depthwise_constraint` is applied before the mask.
        regrow: start in regrow mode, as for `MaskedConv2D`. Default False.
    """

    def build(self, input_shape):
        super().build(input_shape)
        add_mask(self)

    def call(self, inputs):
        outputs = ops.depthwise_conv(inputs, self.masked_kernel(self.kernel), strides=self.strides,
                                     padding=self.padding, dilation_rate=self.dilation_rate,
                                     data_format=self.data_format)
        return self.biased_and_activated(outputs)
