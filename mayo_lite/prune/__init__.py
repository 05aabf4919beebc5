"""Static pruning (docs/design/pruning-algorithm.md): saliencies of convolution weights, a threshold, and masks written into
the masked convolutions of `mayo_lite.layers`, with a report counted as the reference counts it.

The session's `prune` action calls `prune_model`; everything here also works on any Keras model: `add_masks` gives
its convolutions masks, `GradualPruning` prunes it during `fit`, `strip_masks` folds the masks away for deployment,
`narrow_model` removes the channels that channel pruning switched off.
"""

from mayo_lite.prune.arguments import PruneArgumentError  # = mayo_lite.errors.ArgumentError
from mayo_lite.prune.callback import GradualPruning
from mayo_lite.models.narrowing import narrow_model
from mayo_lite.prune.keras_models import add_masks, strip_masks
from mayo_lite.prune.masks import prune_model
from mayo_lite.prune.report import LayerPruning, PruneReport
from mayo_lite.prune.saliency import GRANULARITIES, KERNEL_SALIENCIES, kernel_saliency, weight_saliencies
from mayo_lite.prune.selection import prunable_layers, weight_density
from mayo_lite.prune.thresholds import SCOPES, global_threshold

__all__ = ["GRANULARITIES", "GradualPruning", "KERNEL_SALIENCIES", "LayerPruning", "PruneArgumentError",
           "PruneReport", "SCOPES", "add_masks", "global_threshold", "kernel_saliency", "narrow_model", "prunable_layers",
           "prune_model", "strip_masks", "weight_density", "weight_saliencies"]
