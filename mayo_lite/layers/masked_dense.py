"""`MaskedDense`: a `Dense` layer that multiplies by `kernel · mask` (`mayo_lite.layers.masking`)."""

import keras
from keras import ops

from mayo_lite.layers.masking import Masked, add_mask


@keras.saving.register_keras_serializable(package="mayo_lite")
class MaskedDense(Masked, keras.layers.Dense):
    """Fully connected layer with a non-trainable pruning mask: `activation(inputs · (kernel · mask) + bias)`.

    Args:
        Those of `keras.layers.Dense`; a `kernel_constraint` is applied before the mask. LoRA and quantization
        are not supported (they replace the kernel the mask applies to).
        regrow: start in regrow mode, as for `MaskedConv2D`. Default False.
    """

    def build(self, input_shape):
        super().build(input_shape)
        add_mask(self)

    def call(self, inputs, training=None):
        return self.biased_and_activated(ops.matmul(inputs, self.masked_kernel(self._kernel)))
