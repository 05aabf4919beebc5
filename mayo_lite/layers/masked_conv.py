"""`MaskedConv2D`: a `Conv2D` that convolves with `kernel · mask` (static pruning, `mayo_lite.layers.masking`)."""

import keras

from mayo_lite.layers.masking import Masked, add_mask


@keras.saving.register_keras_serializable(package="mayo_lite")
class MaskedConv2D(Masked, keras.layers.Conv2D):
    """2D convolution with a non-trainable pruning mask: the layer convolves with `kernel · mask`. With a mask of
    ones it computes exactly what `keras.layers.Conv2D` computes.

    The mask (a weight named `mask`, ones when built) is saved and loaded with the kernel and bias, in
    `get_weights`/`set_weights` (order: kernel, bias, mask) and in `.keras` files. The kernel carries a
    `MaskConstraint`, so during fine-tuning every optimizer step leaves the pruned weights exactly zero.

    Args:
        Those of `keras.layers.Conv2D`; a `kernel_constraint` is applied before the mask.
        regrow: start in regrow mode (dynamic network surgery; see `regrow`). Default False.

    Call arguments:
        inputs: a 4D tensor, as for `keras.layers.Conv2D`.
    """

    def build(self, input_shape):
        super().build(input_shape)
        add_mask(self)

    def call(self, inputs):
        return self.biased_and_activated(self.convolution_op(inputs, self.masked_kernel(self.kernel)))
