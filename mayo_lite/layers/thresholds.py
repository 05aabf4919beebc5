"""Which channels a gate keeps: `active_count`, the per-sample threshold (`kth_largest`), the moving thresholds, and
the one `GlobalThreshold` that gated layers may share, moved by `update_global_threshold` after each training
forward pass."""

import math

import keras
from keras import ops

from mayo_lite.layers.arguments import Arguments

INITIAL_THRESHOLD = -0.1


def active_count(channels, density):
    """`ceil(channels · density)`, the most channels a sample keeps."""
    # Rounded first: 10 · 0.7 is 7.000000000000001 in floating point, and its ceiling would keep 8 channels.
    return math.ceil(round(channels * density, 9))


def kth_largest(gamma, k):
    """The k-th largest value of each row of `gamma`, without gradient; shape (batch, 1)."""
    values, _ = ops.top_k(ops.stop_gradient(gamma), k)
    return values[:, k - 1:k]


def follow(variable, per_sample_thresholds, decay):
    mean = ops.mean(ops.cast(per_sample_thresholds, variable.dtype))
    variable.assign(decay * variable + (1.0 - decay) * mean)


@keras.saving.register_keras_serializable(package="mayo_lite")
class GlobalThreshold(keras.layers.Layer):
    """One moving gate threshold shared by every `GatedConv2D` that is given it with `threshold="global"`.

    It owns a single non-trainable scalar variable `threshold` (initially -0.1). `update_global_threshold` moves it
    during training to `decay · t + (1 − decay) · mean_over_batch(per-sample threshold)`, where the per-sample
    threshold is taken over the gammas of all its enabled gated layers together. It is never called on tensors.

    Args:
        decay: moving-average decay of the threshold, in [0, 1].
    """

    def __init__(self, decay=0.9997, **kwargs):
        arguments = Arguments(kwargs.get("name"))
        super().__init__(**kwargs)
        self.decay = arguments.number("decay", decay, 0, 1)
        self.threshold_variable = self.add_weight(
            name="threshold", shape=(), initializer=keras.initializers.Constant(INITIAL_THRESHOLD),
            trainable=False, aggregation="mean")
        self.built = True

    def update(self, per_sample_thresholds):
        """Moves the threshold towards the batch mean of `per_sample_thresholds`."""
        follow(self.threshold_variable, per_sample_thresholds, self.decay)

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}


def update_global_threshold(model_or_layers, density=None):
    """Moves each `GlobalThreshold` of `model_or_layers` (a model, nested models included, or a list of layers)
    after a training forward pass.

    The per-sample threshold is the (k+1)-th largest of the gammas of all enabled gated layers sharing that
    `GlobalThreshold`, concatenated, with `k = ceil(total channels · density)`; the threshold moves by
    `t ← decay·t + (1−decay)·mean_over_batch(per-sample threshold)` (no move when k is every channel).
    `density` defaults to the layers' own, which must then agree. Call it in the same traced training step as
    the forward pass (`model(x, training=True)`), inside `strategy.run` for a distributed step; it consumes the
    gammas the layers recorded.
    """
    from mayo_lite.layers.gated import gated_layers  # the gated layer module imports this one

    groups = {}
    for layer in gated_layers(model_or_layers):
        if layer.threshold == "global" and layer.enable:
            members = groups.setdefault(id(layer.global_threshold), (layer.global_threshold, {}))[1]
            members[id(layer)] = layer
    for shared, members in groups.values():
        layers = list(members.values())
        missing = [layer.name for layer in layers if layer._recorded_gamma is None]
        if missing:
            raise ValueError(f"update_global_threshold: no gamma recorded by layers {missing}; call the model with "
                             f"training=True first, in the same traced step")
        if density is None:
            densities = sorted({layer.density for layer in layers})
            if len(densities) > 1:
                raise ValueError(f"update_global_threshold: the layers sharing '{shared.name}' have densities "
                                 f"{densities}; pass `density`")
            layer_density = densities[0]
        else:
            layer_density = Arguments(None).number("density", density, 0, 1, low_open=True)
        gammas = ops.concatenate([layer._recorded_gamma for layer in layers], axis=-1)
        channels = gammas.shape[-1]
        k = active_count(channels, layer_density)
        if k < channels:
            shared.update(kth_largest(gammas, k + 1))
        for layer in layers:
            layer._recorded_gamma = None
