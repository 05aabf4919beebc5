"""Mayo's quantizers built on other quantizers: `IncrementalQuantizer` (mayo/override/quantize/incremental.py),
`MixedQuantizer` (mixed.py) and `Recentralizer` (recentralize.py). The inner quantizers are sub-layers: their
state is saved with the outer one's."""

import keras
import numpy as np
from keras import ops

from mayo_lite.quantize.base import Quantizer, is_number, value_of


def inner(quantizer, where, name):
    """A fresh quantizer named `name`, from a quantizer or its Keras config (what `from_config` receives): a fixed
    name, so that its variables' paths (`conv0/conv0.weights/quantizer/point`) are the same in every process and a
    checkpoint matched by name finds them."""
    if isinstance(quantizer, dict) and "class_name" in quantizer:
        quantizer = keras.saving.deserialize_keras_object(quantizer)
    if not isinstance(quantizer, Quantizer):
        raise ValueError(f"{where}: expected a quantizer, got {quantizer!r}")
    return type(quantizer).from_config({**quantizer.get_config(), "name": name})


def build_once(quantizer, shape):
    """Builds an inner quantizer unless loading a saved model built it already (from its own build config)."""
    if not quantizer.built:
        quantizer.build(shape)


def _check_fraction(self, argument, value):
    if not is_number(value) or value < 0:
        raise self.invalid(argument, "a non-negative fraction", value)
    return float(value)


@keras.saving.register_keras_serializable(package="mayo_lite")
class IncrementalQuantizer(Quantizer):
    """Incremental network quantization (Zhou et al., arXiv:1702.03044) as Mayo has it: a boolean mask picks the
    values that are quantized (`quantizer(x)` where the mask is on, `x` elsewhere). Each `update` updates the inner
    quantizer, then switches on the values whose quantization error is below the k-th smallest error of those still
    off (the ones already on count as error 0), `k = interval · count` (of the non-zero values if not `count_zero`).

    Mayo leaves growing the fraction to its search loop, which raises `interval` between updates; here the n-th
    update uses `n · interval`, so that updating once per epoch quantizes a growing fraction — all of it after
    `1 / interval` updates.
    """

    ARGUMENTS = ("quantizer", "interval", "count_zero")

    def __init__(self, quantizer=None, interval=None, count_zero=True, **kwargs):
        super().__init__(**kwargs)
        self.quantizer = inner(quantizer, "IncrementalQuantizer.quantizer", "quantizer")
        self.interval = _check_fraction(self, "interval", interval)
        if not isinstance(count_zero, bool):
            raise self.invalid("count_zero", "True or False", count_zero)
        self.count_zero = count_zero

    def build_state(self, shape):
        build_once(self.quantizer, shape)
        # An activation's batch size varies: its mask is one per position, shared by the images of a batch.
        self.mask = self.state("mask", shape=(1, *shape[1:]) if shape and shape[0] is None else shape, initial=0.0)
        self.updates = self.state("updates", initial=0.0)

    def quantized(self, value):
        mask = ops.cast(self.mask, value.dtype)
        return value * (1 - mask) + self.quantizer.quantized(value) * mask

    def _update(self, value):
        self.quantizer._update(value)
        previous = ops.convert_to_numpy(self.mask) > 0
        count = value_of(self.updates) + 1
        self.updates.assign(count)
        if value.shape != previous.shape:
            # An activation (only its range is kept between updates): no error to rank its positions by, so they
            # are switched on in a fixed pseudo-random order.
            order = np.random.default_rng(0).permutation(previous.size)
            mask = np.zeros(previous.size, bool)
            mask[order[:int(round(min(1.0, count * self.interval) * previous.size))]] = True
            self.mask.assign(mask.reshape(previous.shape).astype(np.float32))
            return
        quantized = ops.convert_to_numpy(self.quantizer.quantized(ops.convert_to_tensor(value)))
        self.mask.assign(incremental_mask(value, quantized, previous, count * self.interval,
                                          self.count_zero).astype(np.float32))

    @property
    def bits(self):
        return self.quantizer.bits

    def describe(self):
        fraction = float(np.mean(ops.convert_to_numpy(self.mask))) if self.built else 0.0
        return {**self.quantizer.describe(), "quantized": round(fraction, 4)}

    def get_config(self):
        return {**super().get_config(), "quantizer": keras.saving.serialize_keras_object(self.quantizer),
                "interval": self.interval, "count_zero": self.count_zero}


def incremental_mask(value, quantized, previous, interval, count_zero):
    """Mayo's IncrementalQuantizer._policy (with NumPy's sorted(...)[k] as its top_k)."""
    metric = value - quantized
    errors = np.abs(metric * (~previous)).ravel()
    if not count_zero:
        errors = errors[value.ravel() != 0]
    if interval >= 1.0 or errors.size == 0:
        threshold = np.abs(metric).max() + 1.0
    else:
        threshold = np.sort(errors)[min(int(errors.size * interval), errors.size - 1)]
    return (np.abs(metric) < threshold) | previous


@keras.saving.register_keras_serializable(package="mayo_lite")
class MixedQuantizer(Quantizer):
    """Mixed precision by output channel (Mayo's MixedQuantizer): `quantizers` maps names to quantizers, and a
    channel labelled k (1-based) uses the k-th; label 0 leaves it unquantized. `reg_factor` adds
    `reg_factor · Σ|x − q(x)|` of the picked quantizer (`index`) to the loss.

    Mayo's version never stores the labels its update computes and lets the last quantizer overwrite the others;
    here each `update` labels, among the channels still unlabelled, the `interval` fraction (of all channels) whose
    mean error under the picked quantizer is smallest, then picks the next quantizer.
    """

    ARGUMENTS = ("quantizers", "index", "reg_factor", "interval")

    def __init__(self, quantizers=None, index=0, reg_factor=0.0, interval=0.1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(quantizers, dict) or not quantizers:
            raise self.invalid("quantizers", "a mapping of names to quantizers", quantizers)
        self.names = list(quantizers)
        self.quantizers = [inner(q, f"MixedQuantizer.quantizers.{name}", str(name)) for name, q in quantizers.items()]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.names):
            raise self.invalid("index", f"an integer in [0, {len(self.names) - 1}]", index)
        self.index = index
        self.reg_factor = _check_fraction(self, "reg_factor", reg_factor)
        self.interval = _check_fraction(self, "interval", interval)

    def build_state(self, shape):
        for quantizer in self.quantizers:
            build_once(quantizer, shape)
        self.labels = self.state("channel_mask", shape=(shape[-1],), initial=0.0)
        self.picked = self.state("index", initial=float(self.index))

    def quantized(self, value):
        result = value * ops.cast(ops.equal(self.labels, 0), value.dtype)
        for label, quantizer in enumerate(self.quantizers, 1):
            result = result + quantizer.quantized(value) * ops.cast(ops.equal(self.labels, label), value.dtype)
        if self.reg_factor:
            picked = self.quantizers[self.index]
            self.add_loss(self.reg_factor * ops.sum(ops.abs(value - ops.stop_gradient(picked.quantized(value)))))
        return result

    def _update(self, value):
        index = int(value_of(self.picked))
        if index >= len(self.quantizers):
            return
        picked = self.quantizers[index]
        picked._update(value)
        labels = ops.convert_to_numpy(self.labels).copy()
        error = np.abs(value - ops.convert_to_numpy(picked.quantized(ops.convert_to_tensor(value))))
        error = error.reshape(-1, labels.size).mean(axis=0)
        free = np.flatnonzero(labels == 0)
        chosen = free[np.argsort(error[free], kind="stable")[:int(np.ceil(labels.size * self.interval))]]
        labels[chosen] = index + 1
        self.labels.assign(labels)
        self.picked.assign(float(index + 1))

    @property
    def bits(self):
        widths = [q.bits for q in self.quantizers]
        return None if None in widths else max(widths)

    def describe(self):
        return {"quantizers": ", ".join(f"{name} {q.bits}b" for name, q in zip(self.names, self.quantizers))}

    def get_config(self):
        return {**super().get_config(), "index": self.index, "reg_factor": self.reg_factor,
                "interval": self.interval, "quantizers": {
                    name: keras.saving.serialize_keras_object(q) for name, q in zip(self.names, self.quantizers)}}


@keras.saving.register_keras_serializable(package="mayo_lite")
class Recentralizer(Quantizer):
    """Recentralized quantization of pruned weights (Mayo's Recentralizer): the non-zero values are split by sign,
    each group is centred on its mean, quantized by `quantizer`, and moved back; zeros stay zero. The means are
    quantized by `mean_quantizer` when given. `update` recomputes the split and the means, then the inner
    quantizers; `reg` adds `reg · Σ|x − q(x)|` to the loss."""

    ARGUMENTS = ("quantizer", "mean_quantizer", "reg")

    def __init__(self, quantizer=None, mean_quantizer=None, reg=False, **kwargs):
        super().__init__(**kwargs)
        self.quantizer = inner(quantizer, "Recentralizer.quantizer", "quantizer")
        self.mean_quantizers = None
        if mean_quantizer:
            self.mean_quantizers = tuple(inner(mean_quantizer, "Recentralizer.mean_quantizer", name)
                                         for name in ("positives_mean", "negatives_mean"))
        if not (reg is False or is_number(reg) and reg >= 0):
            raise self.invalid("reg", "false or a non-negative number", reg)
        self.reg = float(reg or 0.0)

    def build_state(self, shape):
        build_once(self.quantizer, shape)
        self.positives = self.state("positives", shape=shape, initial=1.0)
        self.means = self.state("means", shape=(2,), initial=0.0)
        self.means.assign(np.array([1.0, -1.0], np.float32))  # Mayo's initial positives_mean, negatives_mean
        for quantizer in self.mean_quantizers or ():
            build_once(quantizer, ())

    def _mean(self, which):
        mean = self.means[which]
        return self.mean_quantizers[which].quantized(mean) if self.mean_quantizers else mean

    def quantized(self, value):
        positives = ops.cast(self.positives, value.dtype)
        negatives = 1 - positives
        nonzero = ops.cast(ops.not_equal(value, 0), value.dtype)
        high, low = self._mean(0), self._mean(1)
        centred = self.quantizer.quantized(nonzero * (positives * (value - high) + negatives * (value - low)))
        quantized = nonzero * positives * (centred + high) + nonzero * negatives * (centred + low)
        if self.reg:
            self.add_loss(self.reg * ops.sum(ops.abs(value - quantized)))
        return quantized

    def _update(self, value):
        positives = value > 0
        negatives = ~positives & (value != 0)
        means = [value[group].mean() if group.any() else 0.0 for group in (positives, negatives)]
        self.positives.assign(positives.astype(np.float32))
        self.means.assign(np.array(means, np.float32))
        centred = np.where(positives, value - means[0], value - means[1]) * (value != 0)
        self.quantizer._update(centred)
        for quantizer, mean in zip(self.mean_quantizers or (), means):
            quantizer._update(np.array([mean], np.float32))

    @property
    def bits(self):
        return self.quantizer.bits

    def describe(self):
        return self.quantizer.describe()

    def get_config(self):
        config = {**super().get_config(), "quantizer": keras.saving.serialize_keras_object(self.quantizer),
                  "reg": self.reg}
        if self.mean_quantizers:
            config["mean_quantizer"] = keras.saving.serialize_keras_object(self.mean_quantizers[0])
        return config
