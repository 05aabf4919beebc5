"""Mayo's minifloat and shift quantizers (mayo/override/quantize/float.py).

`FloatingPointQuantizer(width, exponent_bias, mantissa_width)`: a value is split into sign, exponent
`e = floor(log2 |x|)` and mantissa `m = |x| / 2^e`; the exponent is clipped to `[−bias, 2^(width − mantissa_width)
− 1 − bias]`, the mantissa rounded to `mantissa_width` fraction bits (a mantissa rounded up to 2 halves and bumps the
exponent), and `sign · 2^e · m` is the result. Values within `2^(−bias) / 2` of zero become zero. As in Mayo the
mantissa is computed before the exponent is clipped, so a value below the smallest exponent keeps its mantissa
(it is raised to `2^(−bias) · m`) and one above the largest saturates to `2^max · m`. `width` counts the exponent
and mantissa bits; the sign is one more bit. `ShiftQuantizer` is the case `mantissa_width = 0`: powers of two.
"""

import keras
import numpy as np
from keras import ops

from mayo_lite.quantize.base import Quantizer, is_number, round_to_grid, value_of


def minifloat(value, exponent_bias, exponent_width, mantissa_width, mantissa=True, stochastic=None, seed=None):
    smallest = 2.0 ** (-exponent_bias) / 2
    sign = ops.cast(value > smallest, value.dtype) - ops.cast(value < -smallest, value.dtype)
    magnitude = ops.maximum(ops.abs(value), 1e-30)
    exponent = ops.floor(ops.log2(magnitude))
    fraction = magnitude / ops.power(2.0, exponent)
    exponent = ops.clip(exponent, -exponent_bias, 2.0 ** exponent_width - 1 - exponent_bias)
    shift = 2.0 ** mantissa_width
    fraction = round_to_grid(fraction * shift, stochastic, seed) / shift
    carry = fraction >= 2
    fraction = ops.where(carry, fraction / 2, fraction)
    exponent = ops.where(carry, exponent + 1, exponent)
    represented = sign * ops.power(2.0, exponent) * (fraction if mantissa else 1.0)
    return ops.where(ops.equal(sign, 0), ops.zeros_like(value), represented)


@keras.saving.register_keras_serializable(package="mayo_lite")
class FloatingPointQuantizer(Quantizer):
    """Minifloat (Mayo's FloatingPointQuantizer).

    Args:
        width: exponent plus mantissa bits (the sign is one more).
        exponent_bias: the bias; the smallest exponent is `−exponent_bias`.
        mantissa_width: fraction bits; `width − mantissa_width` exponent bits. Both widths ≥ 0, not both 0.
        overflow_rate: the fraction of values `update` may let exceed the largest exponent when it picks the bias.
            Default 0.
        should_update, enable: see `Quantizer`.
    """

    ARGUMENTS = ("width", "exponent_bias", "mantissa_width", "overflow_rate", "stochastic")
    STOCHASTIC = True

    def __init__(self, width=None, exponent_bias=None, mantissa_width=None, overflow_rate=0.0, stochastic=None,
                 **kwargs):
        super().__init__(**kwargs)
        for argument, value in (("width", width), ("exponent_bias", exponent_bias),
                                ("mantissa_width", mantissa_width)):
            if not is_number(value) or value != int(value):
                raise self.invalid(argument, "an integer", value)
        self.width, self.initial_bias, self.mantissa_width = int(width), int(exponent_bias), int(mantissa_width)
        if self.exponent_width < 0 or self.mantissa_width < 0 or self.exponent_width == self.mantissa_width == 0:
            raise self.invalid("mantissa_width", f"a width in [0, {self.width}] leaving exponent and mantissa "
                               "widths not both 0", mantissa_width)
        self.overflow_rate = self.check_rate(overflow_rate)
        self.stochastic = self.check_stochastic(stochastic)
        self.seed = keras.random.SeedGenerator(0) if self.stochastic else None

    @property
    def exponent_width(self):
        return self.width - self.mantissa_width

    def build_state(self, shape):
        self.exponent_bias = self.state("exponent_bias", initial=float(self.initial_bias))

    def quantized(self, value):
        bias = ops.cast(self.exponent_bias, value.dtype)
        quantized = minifloat(value, bias, self.exponent_width, self.mantissa_width, self.mantissa_width > 0,
                              self.stochastic, self.seed)
        return value + ops.stop_gradient(quantized - value)

    def _update(self, value):
        self.exponent_bias.assign(float(largest_exponent_bias(value, self.exponent_width, self.overflow_rate)))

    @property
    def bits(self):
        return self.width + 1

    def describe(self):
        bias = int(value_of(self.exponent_bias)) if self.built else self.initial_bias
        return {"width": self.width, "mantissa_width": self.mantissa_width, "exponent_bias": bias}

    def get_config(self):
        bias = int(value_of(self.exponent_bias)) if self.built else self.initial_bias
        return {**super().get_config(), "width": self.width, "exponent_bias": bias,
                "mantissa_width": self.mantissa_width, "overflow_rate": self.overflow_rate,
                "stochastic": self.stochastic}


def top_exponent(value, exponent_width, rate):
    """Mayo's search: the first exponent e (from min(−2^ew, −4) up) where at most `rate` of the values exceed
    2^(e + 1) in magnitude."""
    count = max(value.size, 1)
    exponent = None
    for exponent in range(min(-(2 ** exponent_width), -4), max(2 ** exponent_width, 10)):
        if np.sum(np.abs(value) > 2.0 ** (exponent + 1)) / count <= rate:
            break
    return exponent


def largest_exponent_bias(value, exponent_width, rate):
    return 2 ** exponent_width - 1 - top_exponent(value, exponent_width, rate)


@keras.saving.register_keras_serializable(package="mayo_lite")
class ShiftQuantizer(FloatingPointQuantizer):
    """Powers of two (Mayo's ShiftQuantizer): a minifloat with no mantissa, `sign · 2^e`, `e` rounded (a mantissa of
    1.5 or more rounds up) and clipped to `width` exponent bits below the top exponent that `update` finds.

    Args:
        overflow_rate: as for FloatingPointQuantizer.
        width: exponent bits (the sign is one more).
        exponent_bias: the bias (`bias`, the spelling of five of Mayo's own files, is read as it).
    """

    ARGUMENTS = ("overflow_rate", "width", "exponent_bias", "bias", "stochastic")

    def __init__(self, overflow_rate=None, width=None, exponent_bias=None, bias=None, **kwargs):
        if overflow_rate is None:
            raise Quantizer.invalid(self, "overflow_rate", "a value (required)", overflow_rate)
        if exponent_bias is None:
            exponent_bias = bias
        super().__init__(width=width, exponent_bias=exponent_bias, mantissa_width=0, overflow_rate=overflow_rate,
                         **kwargs)

    def describe(self):
        described = super().describe()
        described.pop("mantissa_width")
        return described

    def get_config(self):
        config = super().get_config()
        config.pop("mantissa_width")
        return config
