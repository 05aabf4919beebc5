"""The sparse room: runs a gated (FBS) model so that the channels its gates switch off are really not computed, and
measures what that is worth in latency.

Mayo only counted the MACs that FBS saves. For one image at a time, `SparseGatedModel` gathers each gated layer's
active input and output channels and runs the smaller convolution, turning the MAC reduction into time.
"""

from mayo_lite.sparse.executor import SparseGatedModel, UnsupportedModel
from mayo_lite.sparse.latency import keras_runner, latency

__all__ = ["SparseGatedModel", "UnsupportedModel", "keras_runner", "latency"]
