"""Keras layers this project adds, one module each; ordinary Keras 3 layers, usable without the rest of the package.

The runner builds models from them, but `from mayo_lite.layers import ...` needs nothing else from mayo-lite.
"""

from mayo_lite.layers.gated import GatedConv2D
from mayo_lite.layers.gated_models import gated_layers, mean_density
from mayo_lite.layers.thresholds import GlobalThreshold, update_global_threshold
from mayo_lite.layers.hadamard import Hadamard
from mayo_lite.layers.local_gating import LocalGating
from mayo_lite.layers.masking import MaskConstraint
from mayo_lite.layers.masked import MASKED_LAYERS, MaskedConv2D, MaskedDense, MaskedDepthwiseConv2D
from mayo_lite.layers.normalization import LocalResponseNormalization
from mayo_lite.layers.quantizer import Quantizer
from mayo_lite.layers.reduction import ReduceMean
from mayo_lite.layers.space_to_depth import SpaceToDepth
from mayo_lite.layers.squeeze import Squeeze

__all__ = ["GatedConv2D", "GlobalThreshold", "Hadamard", "LocalGating", "LocalResponseNormalization", "MASKED_LAYERS",
           "MaskConstraint", "MaskedConv2D", "MaskedDense", "MaskedDepthwiseConv2D", "Quantizer", "ReduceMean",
           "SpaceToDepth", "Squeeze", "gated_layers", "mean_density", "update_global_threshold"]
