"""The NumPy reference of static pruning (docs/design/pruning-algorithm.md), step by step, one weight at a time: what
the pruning tests hold `mayo_lite.prune` to, for models of this project's layers and for any Keras model."""

import itertools
import math

import numpy as np


def reference_saliencies(kernel, granularity, saliency, gamma):
    """Each weight of a (K_h, K_w, C_in, C_out) kernel with its group's saliency."""
    kernel = np.asarray(kernel, dtype=np.float64)
    k_h, k_w, c_in, c_out = kernel.shape
    out = np.empty(kernel.shape)
    for i, j, c, d in itertools.product(range(k_h), range(k_w), range(c_in), range(c_out)):
        if granularity == "weight":
            out[i, j, c, d] = abs(kernel[i, j, c, d])
        elif granularity == "kernel":
            values = [abs(v) for v in kernel[:, :, c, d].ravel()]
            out[i, j, c, d] = {"max": max(values), "l1": math.fsum(values),
                               "l2": math.sqrt(math.fsum(v * v for v in values))}[saliency]
        elif granularity == "filter":
            out[i, j, c, d] = math.fsum(abs(v) for v in kernel[:, :, :, d].ravel())
        else:
            out[i, j, c, d] = abs(float(gamma[d]))
    return out


def reference_prune(kernels, percent, granularity="kernel", saliency="max", scope="global", gammas=None):
    """Masks and thresholds: every weight listed with its saliency, sorted, threshold at int(total·percent), kept
    when strictly above. percent 0 keeps everything (the documented deviation from the literal reference)."""
    gammas = gammas or [None] * len(kernels)
    saliencies = [reference_saliencies(k, granularity, saliency, g) for k, g in zip(kernels, gammas)]
    groups = [list(range(len(kernels)))] if scope == "global" else [[i] for i in range(len(kernels))]
    masks, thresholds = [None] * len(kernels), [None] * len(kernels)
    for group in groups:
        listed = sorted(value for i in group for value in saliencies[i].ravel().tolist())
        threshold = -math.inf if percent == 0 else listed[int(len(listed) * percent)]
        for i in group:
            masks[i] = (saliencies[i] > threshold).astype("float32")
            thresholds[i] = threshold
    return masks, thresholds


def reference_ratio(masks):
    total = sum(mask.size for mask in masks)
    return sum(mask.size - mask.sum() for mask in masks) / total
