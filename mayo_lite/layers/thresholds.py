"""Which channels a gate keeps: `active_count`, the per-sample threshold (`kth_largest`), the moving thresholds, and
the one `GlobalThreshold` that gated layers may share, moved by `update_global_threshold` after each training
forward pass. Under a multi-replica `tf.distribute` step, what a gate computes from its batch (the moving
thresholds, its density, its regularisers) is computed over the global batch, so that replicas agree with one device
(`global_batch`, `batch_mean`)."""

import math

import keras
import tensorflow as tf
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


def _replica_context():
    """The replica context of a step with several replicas (inside `strategy.run`), else None."""
    context = tf.distribute.get_replica_context()
    return context if context is not None and context.num_replicas_in_sync > 1 else None


def replica_id():
    """The replica this call is traced for, 0 outside `strategy.run`. MirroredStrategy traces every replica's step in
    its own thread through the same layer objects, so what a layer keeps between calls is kept per replica."""
    context = tf.distribute.get_replica_context()
    replica = None if context is None else tf.get_static_value(context.replica_id_in_sync_group)
    return 0 if replica is None else int(replica)


def global_batch(values):
    """`values` (batch first) of every replica's share of the global batch, concatenated, inside a step with several
    replicas; `values` itself elsewhere. Each replica's gradient flows back to its own share (`all_gather` is
    differentiable), so a loss of the global batch that every replica adds once, divided by the number of replicas
    as the step divides every model loss, counts exactly once, as on one device."""
    context = _replica_context()
    return values if context is None else context.all_gather(values, axis=0)


def batch_mean(values):
    """The mean of all of `values` over the global batch, the same on every replica: what one device computes,
    whatever the split (a partial last batch is split unevenly, and a mean of the replicas' means would weigh their
    examples unequally). Assigned to a variable with `aggregation="mean"`, it stays that value."""
    context = _replica_context()
    if context is None:
        return ops.mean(values)
    total, count = context.all_reduce(tf.distribute.ReduceOp.SUM, [
        ops.sum(values), ops.cast(ops.size(values), values.dtype)])
    return total / count


def follow(variable, per_sample_thresholds, decay):
    mean = batch_mean(ops.cast(per_sample_thresholds, variable.dtype))
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
    gammas the layers recorded for this replica.
    """
    from mayo_lite.layers.gated_models import gated_layers  # the gated layer module imports this one

    replica = replica_id()
    groups = {}
    for layer in gated_layers(model_or_layers):
        if layer.threshold == "global" and layer.enable:
            members = groups.setdefault(id(layer.global_threshold), (layer.global_threshold, {}))[1]
            members[id(layer)] = layer
    for shared, members in groups.values():
        layers = list(members.values())
        missing = [layer.name for layer in layers if replica not in layer._recorded_gammas]
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
        gammas = ops.concatenate([layer._recorded_gammas[replica] for layer in layers], axis=-1)
        channels = gammas.shape[-1]
        k = active_count(channels, layer_density)
        if k < channels:
            shared.update(kth_largest(gammas, k + 1))
        for layer in layers:
            del layer._recorded_gammas[replica]
