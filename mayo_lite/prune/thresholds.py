"""The pruning threshold of docs/design/pruning-algorithm.md step 3, over all selected layers together (`global` scope) or
over each layer alone (`layer` scope). A weight is kept when its saliency is strictly above the threshold."""

import math

import numpy as np


def global_threshold(saliencies, percent):
    """One threshold over every weight of `saliencies` (arrays of per-weight saliencies): with `total` weights sorted
    ascending, the value at index `int(total · percent)`.

    `percent == 0` gives -inf, which prunes nothing; taken literally the reference would still prune the weights
    tied at the smallest saliency (docs/design/pruning-algorithm.md step 4).
    """
    if percent == 0:
        return -math.inf
    values = np.concatenate([np.ravel(s) for s in saliencies])
    index = int(values.size * percent)
    # np.partition places the same value at `index` as a full sort would, in linear time.
    return float(np.partition(values, index)[index])


# Scope -> (per-layer saliencies, percent) -> one threshold per layer.
SCOPES = {
    "global": lambda saliencies, percent: [global_threshold(saliencies, percent)] * len(saliencies),
    "layer": lambda saliencies, percent: [global_threshold([s], percent) for s in saliencies],
}
