"""Mayo's ternary quantizers (mayo/override/quantize/ternary.py): every value becomes `−2^base · scale`, 0 or
`2^base · scale` by its sign, with a trainable `scale` — one for the tensor (`TernaryQuantizer`) or one per output
channel, the last axis (`ChannelTernaryQuantizer`). The value's gradient is straight-through (Mayo's sign has no
gradient, so its weights never moved; here they do) and the scale's is the true one."""

import keras
from keras import ops

from mayo_lite.quantize.base import Quantizer, is_number


@keras.saving.register_keras_serializable(package="mayo_lite")
class TernaryQuantizer(Quantizer):
    """{−2^base · scale, 0, 2^base · scale} (Mayo's TernaryQuantizer; Li et al.'s ternary weights, Zhu et al.'s
    trained scale).

    Args:
        base: the power of two of the coarse scale, ≥ 0. Default 1 (Mayo's).
        stochastic: Mayo refuses it for ternary quantization; so does this class.
        should_update, enable: see `Quantizer`.
    """

    ARGUMENTS = ("base", "stochastic")

    def __init__(self, base=None, stochastic=None, **kwargs):
        super().__init__(**kwargs)
        if base is None:
            base = 1
        if not is_number(base) or base != int(base) or base < 0:
            raise self.invalid("base", "an integer greater or equal than 0", base)
        if stochastic is not None:  # Mayo: "Ternary quantization does not implement stochastic mode."
            raise self.invalid("stochastic", "no value (ternary quantization has no stochastic mode)", stochastic)
        self.base = int(base)

    def scale_shape(self, shape):
        return ()

    def build_state(self, shape):
        self.scale = self.state("scale", shape=self.scale_shape(shape), initial=1.0, trainable=True)

    def quantized(self, value):
        sign = ops.stop_gradient(ops.sign(value))
        ternary = sign * (2.0 ** self.base) * ops.cast(self.scale, value.dtype)
        # forward: the ternary value; backward: 1 to the value, the true gradient to the scale
        return ternary + (value - ops.stop_gradient(value))

    @property
    def bits(self):
        return 2

    def describe(self):
        return {"width": 2, "base": self.base}

    def get_config(self):
        return {**super().get_config(), "base": self.base}


@keras.saving.register_keras_serializable(package="mayo_lite")
class ChannelTernaryQuantizer(TernaryQuantizer):
    """TernaryQuantizer with one trainable scale per output channel (the last axis), as Mayo's."""

    def scale_shape(self, shape):
        return (shape[-1],)
