"""Mayo's fixed-point quantizers (mayo/override/quantize/fixed.py): `FixedPointQuantizer`, the dynamic ones that
choose their binary point from an overflow rate (`DGQuantizer`, `CourbariauxQuantizer`, `DGTrainableQuantizer`),
and `LogQuantizer` (fixed point in the log domain).

A `width`-bit two's complement value with its binary point `point` bits from the top:

    q(x) = clip(round(x · 2^(width − point)), −2^(width − 1), 2^(width − 1) − 1) / 2^(width − point)

so width 8, point 2 is `clip(round(x · 64), −128, 127) / 64`. The gradient is the identity through the rounding
and zero where the clip saturates, as in Mayo (round's gradient overridden with Identity, clip's own gradient).
"""

import logging

import keras
import numpy as np
from keras import ops

from mayo_lite.quantize.base import Quantizer, is_number, round_to_grid, value_of

log = logging.getLogger("mayo_lite")


def fixed_point(value, point, width, stochastic=None, seed=None):
    width = ops.cast(width, value.dtype)
    shift = ops.power(2.0, ops.round(width) - ops.round(ops.cast(point, value.dtype)))
    scaled = round_to_grid(value * shift, stochastic, seed)
    limit = ops.power(2.0, width - 1)
    return ops.clip(scaled, -limit, limit - 1) / shift


def overflow_rate(value, point, width):
    """Mayo's overflow rate: the fraction of the non-zero rounded values that fall outside the range."""
    scaled = np.round(value * 2.0 ** (round(width) - round(point)))
    scaled = scaled[scaled != 0]
    if scaled.size == 0:
        return 0.0
    limit = 2.0 ** (width - 1)
    return float(np.mean((scaled < -limit) | (scaled > limit - 1)))


@keras.saving.register_keras_serializable(package="mayo_lite")
class FixedPointQuantizer(Quantizer):
    """Two's complement fixed point (Mayo's FixedPointQuantizer): `width` bits, binary point `point` bits from the
    top (Mayo's defaults: width 64, point 8).

    Args:
        point: integer bits, sign included. Default 8.
        width: total bits, at least 1. Default 64.
        stochastic: False, 'naive' or 'ulp' (Mayo's stochastic rounding). Default False.
        should_update, enable: see `Quantizer`.
    """

    ARGUMENTS = ("point", "width", "stochastic")
    STOCHASTIC = True

    def __init__(self, point=None, width=None, stochastic=None, **kwargs):
        super().__init__(**kwargs)
        self.width = 64 if width is None else self.check_width(width)
        if point is not None and not (is_number(point) and point == int(point)):
            raise self.invalid("point", "an integer", point)
        self.initial_point = 8 if point is None else int(point)
        self.stochastic = self.check_stochastic(stochastic)
        self.seed = keras.random.SeedGenerator(0) if self.stochastic else None

    def build_state(self, shape):
        # A variable: the dynamic quantizers move it, and a checkpoint keeps it.
        self.point = self.state("point", initial=float(self.initial_point))

    def quantized(self, value):
        return fixed_point(value, ops.cast(self.point, value.dtype), self.width, self.stochastic, self.seed)

    @property
    def bits(self):
        return self.width

    def describe(self):
        return {"width": self.width, "point": int(value_of(self.point)) if self.built else self.initial_point}

    def get_config(self):
        point = int(value_of(self.point)) if self.built else self.initial_point
        return {**super().get_config(), "point": point, "width": self.width, "stochastic": self.stochastic}


class _DynamicFixedPoint(FixedPointQuantizer):
    """Mayo's DynamicFixedPointQuantizerBase: the point follows the values, an overflow rate allowing."""

    ARGUMENTS = ("width", "overflow_rate", "stochastic")

    def __init__(self, width=None, overflow_rate=None, stochastic=None, point=None, **kwargs):
        for argument, value in (("width", width), ("overflow_rate", overflow_rate)):
            if value is None:
                raise self.invalid(argument, "a value (required)", value)
        super().__init__(point=point, width=width, stochastic=stochastic, **kwargs)
        self.overflow_rate = self.check_rate(overflow_rate)

    def _update(self, value):
        self.point.assign(float(self.policy(value)))

    def get_config(self):
        return {**super().get_config(), "overflow_rate": self.overflow_rate}


@keras.saving.register_keras_serializable(package="mayo_lite")
class DGQuantizer(_DynamicFixedPoint):
    """Dynamic fixed point (Mayo's DGQuantizer): `update` picks the smallest point in [−width, width] whose
    overflow rate is at most `overflow_rate` (brute force, optimal), else the point `width` with a warning."""

    def policy(self, value):
        for point in range(-self.width, self.width + 1):
            if overflow_rate(value, point, self.width) <= self.overflow_rate:
                return point
        log.warning(f"{self.name}: no binary point keeps the overflow rate within {self.overflow_rate}; "
                    f"using the integer point {self.width}")
        return self.width


@keras.saving.register_keras_serializable(package="mayo_lite")
class CourbariauxQuantizer(_DynamicFixedPoint):
    """Courbariaux et al.'s dynamic fixed point (arXiv:1412.7024) as Mayo has it: from point 1, one step down when
    the overflow rate exceeds `overflow_rate`, one step up when twice the rate is still within it."""

    INITIAL_POINT = 1

    def policy(self, value):
        point = self.INITIAL_POINT
        rate = overflow_rate(value, point, self.width)
        if rate > self.overflow_rate:
            return point - 1
        if 2 * rate <= self.overflow_rate:
            return point + 1
        return point


@keras.saving.register_keras_serializable(package="mayo_lite")
class DGTrainableQuantizer(DGQuantizer):
    """Mayo's DGTrainableQuantizer: a DGQuantizer whose width is a variable (initially 16) that, as Mayo says, no
    gradient reaches yet; Mayo declares it trainable, here it is not, so that optimizers do not warn of a variable
    without gradient. (Mayo passes width and point to `_quantize` in swapped order; here they are in the order its
    signature names them.)"""

    ARGUMENTS = ("overflow_rate",)

    def __init__(self, overflow_rate=None, width=16, **kwargs):
        kwargs.pop("stochastic", None)
        super().__init__(width=width, overflow_rate=overflow_rate, **kwargs)

    def build_state(self, shape):
        super().build_state(shape)
        self.trainable_width = self.state("width", initial=float(self.width))

    def quantized(self, value):
        width = ops.stop_gradient(ops.cast(self.trainable_width, value.dtype))
        return fixed_point(value, ops.cast(self.point, value.dtype), width)

    def policy(self, value):
        self.width = int(round(value_of(self.trainable_width)))
        return super().policy(value)


@keras.saving.register_keras_serializable(package="mayo_lite")
class LogQuantizer(Quantizer):
    """Powers of two with a fixed-point exponent (Mayo's LogQuantizer): `sign(x) · 2^q(log2 |x|)`, q a DGQuantizer
    of `width` bits whose point `update` sets from the non-zero values' logarithms; zero stays zero."""

    ARGUMENTS = ("width", "overflow_rate", "stochastic")
    STOCHASTIC = True

    def __init__(self, width=None, overflow_rate=None, stochastic=None, **kwargs):
        super().__init__(**kwargs)
        for argument, value in (("width", width), ("overflow_rate", overflow_rate)):
            if value is None:
                raise self.invalid(argument, "a value (required)", value)
        self.width = self.check_width(width)
        self.overflow_rate = self.check_rate(overflow_rate)
        self.stochastic = self.check_stochastic(stochastic)
        self.exponent = DGQuantizer(width=self.width, overflow_rate=self.overflow_rate, stochastic=self.stochastic,
                                    name="exponent")

    def build_state(self, shape):
        if not self.exponent.built:  # loading a saved model builds it from its own build config
            self.exponent.build(shape)

    def quantized(self, value):
        sign = ops.stop_gradient(ops.sign(value))
        magnitude = ops.maximum(ops.abs(value), 1e-30)
        exponent = self.exponent.quantized(ops.log2(magnitude))
        quantized = ops.where(ops.equal(sign, 0), ops.zeros_like(value), sign * ops.power(2.0, exponent))
        return value + ops.stop_gradient(quantized - value)

    def _update(self, value):
        # Mayo's update sees log2(0) = −inf for a zero (a pruned weight), which always overflows; zeros stay zero
        # whatever the point, so here they are left out.
        value = np.abs(value[value != 0])
        if value.size:
            self.exponent._update(np.log2(value))

    @property
    def bits(self):
        return self.width + 1  # the sign, beside the exponent

    def describe(self):
        return {"width": self.width, **{key: v for key, v in self.exponent.describe().items() if key == "point"}}

    def get_config(self):
        return {**super().get_config(), "width": self.width, "overflow_rate": self.overflow_rate,
                "stochastic": self.stochastic}
