"""What every quantizer shares: the base class (`mayo_lite.layers.quantizer.Quantizer`, a Keras layer whose call
returns the quantized value with a straight-through gradient and whose `update` recomputes its state, as Mayo's
overriders' `update()` does) and the rounding with a straight-through gradient.

Mayo's overriders (`mayo/override/quantize/*.py` of deep-fry/mayo) are the specification: class names, arguments,
defaults and arithmetic follow them; where Mayo's code is broken the module that differs says so.
"""

import keras
from keras import ops

from mayo_lite.layers.quantizer import Quantizer, is_number  # noqa: F401 - the quantizers' base, re-exported


def straight_through(value, quantized):
    """`quantized` forward, the identity backward (Mayo overrides the gradient of round and floor with Identity)."""
    return value + ops.stop_gradient(quantized - value)


def round_to_grid(value, stochastic, seed):
    """`round(value)` with a straight-through gradient; with Mayo's stochastic modes ('naive': up or down with
    probability 1/2, 'ulp': up with the probability of the fractional part) a random choice instead."""
    if not stochastic:
        rounded = ops.round(value)
    else:
        low = ops.floor(value)
        chance = 0.5 if stochastic == "naive" else value - low
        rounded = ops.where(keras.random.uniform(ops.shape(value), seed=seed) > chance, low, low + 1.0)
    return straight_through(value, ops.stop_gradient(rounded))


def value_of(variable):
    return float(ops.convert_to_numpy(variable))
