"""The masked layers, and the Keras layer each replaces (`mayo_lite.prune.add_masks`, the quantizers, TFMOT's
wrappers look them up here)."""

import keras

from mayo_lite.layers.masked_conv import MaskedConv2D
from mayo_lite.layers.masked_dense import MaskedDense
from mayo_lite.layers.masked_depthwise import MaskedDepthwiseConv2D

# Keras layer class -> its masked counterpart.
MASKED_LAYERS = {
    keras.layers.Conv2D: MaskedConv2D,
    keras.layers.DepthwiseConv2D: MaskedDepthwiseConv2D,
    keras.layers.Dense: MaskedDense,
}
