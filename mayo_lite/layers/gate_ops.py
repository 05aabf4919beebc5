"""The functions a gate is made of, shared by `GatedConv2D` and the sparse execution path: how the input is pooled
for the predictor, the sparsity regularisers, and per-sample values broadcast over a feature map."""

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
