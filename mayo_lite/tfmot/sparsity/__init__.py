"""`tfmot.sparsity`: its `keras` module is TFMOT's magnitude pruning API."""

from mayo_lite.tfmot.sparsity import keras

__all__ = ["keras"]
