"""`tfmot.sparsity.keras`: the public names of TensorFlow Model Optimization's pruning API."""

from mayo_lite.tfmot.pruning import (ConstantSparsity, PolynomialDecay, PruningSchedule, PruningSummaries,
                                     UpdatePruningStep, prune_low_magnitude, prune_scope, strip_pruning)

__all__ = ["ConstantSparsity", "PolynomialDecay", "PruningSchedule", "PruningSummaries", "UpdatePruningStep",
           "prune_low_magnitude", "prune_scope", "strip_pruning"]
