"""The sparse room: runs a gated (FBS) model so that the channels its gates switch off are really not computed, and
measures what that is worth in latency.

Mayo only counted the MACs that FBS saves. For one image at a time, `SparseGatedModel` gathers each gated layer's
active input and output channels and runs the smaller convolution, turning the MAC reduction into time, on one of
two engines: TensorFlow compiled by XLA, or the native runtime (NumPy's BLAS and Numba kernels), whichever `tuning`
timed faster on this machine. `InferenceProgram` is the same machinery for any model: on a dense one it is the
folded dense path that the sparse one is compared with. `profile` says where a program's time goes, layer by layer.
"""

from mayo_lite.sparse.latency import compare_latency, keras_runner
from mayo_lite.sparse.program import InferenceProgram, SparseGatedModel
from mayo_lite.sparse.folding import UnsupportedModel

__all__ = ["InferenceProgram", "SparseGatedModel", "UnsupportedModel", "compare_latency", "keras_runner"]
