"""The functions a gate is made of, shared by `GatedConv2D` and the sparse execution path: how the input is pooled
for the predictor, the sparsity regularisers, per-sample values broadcast over a feature map, and the layer's own
normalisation of its convolution."""

from keras import ops

MIXTURE_EPSILON = 1e-3

# How the input is subsampled to one value per channel before the predictor.
POOLS = {
    "avg": lambda x: ops.mean(x, axis=(1, 2)),
    "max": lambda x: ops.max(x, axis=(1, 2)),
    "l1": lambda x: ops.mean(ops.abs(x), axis=(1, 2)),
    "l2": lambda x: ops.mean(ops.square(x), axis=(1, 2)),
}


def mixture(vector):
    """Squared coefficient of variation, `Var(v) / (Mean(v) + ε)²` (docs/design/fbs-semantics.md)."""
    return ops.var(vector) / ops.square(ops.mean(vector) + MIXTURE_EPSILON)


# Sparsity regularisers of g = gamma · active, shape (batch, channels); `mse` (naive policy) is separate.
SPARSITY_REGULARIZERS = {
    "l1": lambda g: ops.sum(ops.abs(g)),
    "l2": lambda g: ops.sum(ops.square(g)),
    "moe": lambda g: mixture(ops.sum(g, axis=0)),
    "moi": lambda g: mixture(ops.sum(g, axis=1)),
}
REGULARIZERS = (*SPARSITY_REGULARIZERS, "mse")


def per_sample(values):
    """(batch, channels) or (channels,) values broadcast over the spatial axes of (batch, H, W, channels)."""
    return ops.expand_dims(ops.expand_dims(values, 1), 1) if len(values.shape) == 2 else values


def normalization(conved, moving, epsilon, training):
    """(mean, 1 / std) of a gated layer's normalisation, `n = (y − mean) / std`: with `moving` (moving mean,
    moving variance, momentum) batch statistics in training (updating the moving ones) and the moving ones
    otherwise; without, each sample's own moments over height and width (`norm="channel"`).

    As Keras' BatchNormalization does under mixed precision, the moments are computed and the moving statistics
    kept in float32, and cast to the compute dtype (float16 would overflow a sum of squares).
    """
    wide = ops.cast(conved, "float32")
    if moving is None:
        mean, variance = ops.moments(wide, axes=(1, 2), keepdims=True)
    elif training:
        moving_mean, moving_variance, momentum = moving
        mean, variance = ops.moments(wide, axes=(0, 1, 2))
        moving_mean.assign(moving_mean * momentum + mean * (1.0 - momentum))
        moving_variance.assign(moving_variance * momentum + variance * (1.0 - momentum))
    else:
        mean, variance = moving[0], moving[1]
    inverse = ops.rsqrt(variance + epsilon)
    return ops.cast(mean, conved.dtype), ops.cast(inverse, conved.dtype)


def affine(conved, statistics, gamma, beta):
    """The batch norm of the `squeeze` and `naive` policies: `n · gamma + beta` (either may be None)."""
    mean, inverse = statistics
    normalized = (conved - mean) * inverse
    if gamma is not None:
        normalized = normalized * gamma
    return normalized + beta if beta is not None else normalized
