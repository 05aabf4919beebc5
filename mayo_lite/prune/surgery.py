"""Dynamic network surgery (Guo et al., NIPS 2016; Mayo's `DynamicNetworkSurgeryPruner`): each layer's mask follows
its weights' magnitudes, pruning weights that fall below a threshold and splicing back pruned weights that grow above
it, while every weight keeps learning (the masked layers' regrow mode). `GradualPruning` drives it with a `surgery`
schedule; this module holds the mask update and the switches between regrow mode and static masks.
"""

from dataclasses import dataclass

import keras
import numpy as np

from mayo_lite.layers import MASKED_LAYERS
from mayo_lite.errors import ArgumentError
from mayo_lite.prune.saliency import as_float64
from mayo_lite.prune.selection import kernel_of


def surgery_threshold(kernel, alpha):
    """`mean(|w|) + alpha · std(|w|)` over every weight of `kernel` (the population standard deviation, as Mayo's
    `MeanStdPruner` computes it)."""
    magnitudes = np.abs(as_float64(kernel))
    return float(magnitudes.mean() + alpha * magnitudes.std())


def surgery_mask(kernel, mask, alpha, on_factor=1.1, off_factor=0.9):
    """The updated mask, as a boolean array: `(mask or |w| > on_factor·t) and |w| > off_factor·t` with
    `t = surgery_threshold(kernel, alpha)`. Between the two factors a weight keeps its state (hysteresis).

    Args:
        kernel: the layer's underlying kernel (not multiplied by its mask).
        mask: the current mask, of the kernel's shape; non-zero keeps a weight.
        alpha, on_factor, off_factor: as in the `surgery` schedule.
    """
    magnitudes = np.abs(as_float64(kernel))
    threshold = surgery_threshold(magnitudes, alpha)
    return ((np.asarray(mask) != 0) | (magnitudes > on_factor * threshold)) & (magnitudes > off_factor * threshold)


@dataclass(frozen=True)
class SurgeryUpdate:
    """What one mask update did over the selected layers: `pruned` of `total` weights are pruned afterwards;
    `spliced` were pruned before and are back, `cut` were kept before and are pruned now."""

    total: int
    pruned: int
    spliced: int
    cut: int

    @property
    def ratio(self):
        return self.pruned / self.total if self.total else 0.0


def check_regrowable(layers):
    """Raises for a layer that cannot regrow: only masked layers (`MaskedConv2D`, `MaskedDepthwiseConv2D`,
    `MaskedDense`) can; a `GatedConv2D(use_mask=True)` keeps its static mask."""
    others = [layer.name for layer in layers if not isinstance(layer, tuple(MASKED_LAYERS.values()))]
    if others:
        raise ArgumentError("layers", "masked layers for dynamic network surgery (a GatedConv2D's mask cannot "
                                           f"regrow; leave {', '.join(others)} out with `layers`)", others)


def set_regrow(layers, regrow):
    """Switches masked layers into regrow mode, or out of it, folding their masks into their kernels (pruned
    weights become exactly 0 and stay so under the layers' constraint)."""
    for layer in layers:
        layer.regrow = regrow


def update_masks(layers, alpha, on_factor=1.1, off_factor=0.9):
    """Writes `surgery_mask` into the mask of each layer (each its own threshold); returns a `SurgeryUpdate`."""
    total = pruned = spliced = cut = 0
    for layer in layers:
        before = keras.ops.convert_to_numpy(layer.mask) != 0
        after = surgery_mask(kernel_of(layer), before, alpha, on_factor, off_factor)
        layer.mask.assign(after.astype(layer.mask.dtype))
        total += after.size
        pruned += int(after.size - np.count_nonzero(after))
        spliced += int(np.count_nonzero(after & ~before))
        cut += int(np.count_nonzero(before & ~after))
    return SurgeryUpdate(total, pruned, spliced, cut)
