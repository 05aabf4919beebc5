"""The base class of Mayo's quantizers (`mayo_lite.quantize`): a Keras layer whose call returns the quantized value
with a straight-through gradient, whose state (a binary point, an exponent bias, a mask, a scale) is Keras variables
that checkpoints and `.keras` files keep, and whose `update` recomputes that state from a value, as Mayo's
overriders' `update()` does. Here, among the layers, so that what counts a model's cost or copies it
(`mayo_lite.models`) can know a quantizer without importing the quantization room."""

import numbers

import keras
import numpy as np
from keras import ops

from mayo_lite.errors import ArgumentError


def is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


# The observed range before anything is seen: finite, since a checkpoint with an infinity reads as a diverged run.
_FAR = 3e38


class Quantizer(keras.layers.Layer):
    """Base class: `quantizer(value)` is the quantized value (forward) with a straight-through gradient (backward).

    Args:
        should_update: whether `update` changes the state (Mayo's `should_update`). Default True.
        enable: False makes the quantizer the identity (Mayo's `enable`). Default True.
        observe: record, in training, the smallest and largest value seen, so that `update()` without a value can
            update an activation's quantizer from what training saw (set by the builders for activations).

    Subclasses set `ARGUMENTS` (their own constructor arguments, for the YAML reader) and implement `quantized(value)`,
    and where Mayo's has one, `_update(value)` (a NumPy array) and `describe()`.
    """

    ARGUMENTS = ()
    STOCHASTIC = False  # whether the quantizer takes Mayo's `stochastic` argument

    def __init__(self, should_update=True, enable=True, observe=False, **kwargs):
        super().__init__(**kwargs)
        for argument, value in (("should_update", should_update), ("enable", enable), ("observe", observe)):
            if not isinstance(value, bool):
                raise self.invalid(argument, "True or False", value)
        self.should_update = should_update
        self.enable = enable
        self.observe = observe
        self.observed = None

    def invalid(self, argument, expected, value):
        return ArgumentError(argument, expected, value, type(self).__name__)

    def check_width(self, width, argument="width"):
        # Mayo's one refusal: "Width of quantized value must be greater than 0."
        if not is_number(width) or width < 1 or width != int(width):
            raise self.invalid(argument, "an integer greater than 0", width)
        return int(width)

    def check_rate(self, rate):
        if not is_number(rate) or not 0 <= rate <= 1:
            raise self.invalid("overflow_rate", "a fraction in [0, 1]", rate)
        return float(rate)

    def check_stochastic(self, stochastic):
        if stochastic not in (None, False, "naive", "ulp"):
            raise self.invalid("stochastic", "false, 'naive' or 'ulp'", stochastic)
        return stochastic or None

    def state(self, name, shape=(), initial=0.0, dtype="float32", trainable=False):
        return self.add_weight(name=name, shape=shape, initializer=keras.initializers.Constant(initial),
                               dtype=dtype, trainable=trainable, aggregation="only_first_replica")

    def build(self, input_shape):
        if self.observe:
            self.observed = (self.state("observed_min", initial=_FAR), self.state("observed_max", initial=-_FAR))
        self.build_state(tuple(input_shape))

    def build_state(self, shape):
        """Creates the quantizer's state variables for values of `shape`."""

    def call(self, value, training=False):
        if not self.enable:
            return value
        if self.observe and training:
            low, high = self.observed
            low.assign(ops.minimum(low, ops.cast(ops.min(value), low.dtype)))
            high.assign(ops.maximum(high, ops.cast(ops.max(value), high.dtype)))
        return self.quantized(value)

    def quantized(self, value):
        raise NotImplementedError

    def update(self, value=None):
        """Recomputes the state from `value` (the overridden variable, a NumPy array), or for an observing
        quantizer from the range training saw since the last update, then forgets it. Nothing when
        `should_update` is False or there is nothing to learn from."""
        if self.observe and value is None and self.observed is not None:
            low, high = (float(keras.ops.convert_to_numpy(v)) for v in self.observed)
            for variable, initial in zip(self.observed, (_FAR, -_FAR)):
                variable.assign(initial)
            # An activation's overflow rate is judged on the extremes seen (exact for Mayo's overflow_rate 0).
            value = np.array([low, high], np.float32) if low <= high else None
        if value is None or not self.should_update or not self.built:
            return
        self._update(np.asarray(value, np.float32))

    def _update(self, value):
        """Mayo's update policy; most quantizers have none."""

    @property
    def bits(self):
        """Bits per stored value at this quantizer's setting (for sizes), or None when unbounded."""
        return None

    def describe(self):
        """The settings `info` prints, e.g. {'width': 8, 'point': 2}."""
        return {}

    def get_config(self):
        config = super().get_config()
        config.update(should_update=self.should_update, enable=self.enable, observe=self.observe)
        return config
