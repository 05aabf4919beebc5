"""`tfmot.quantization`: its `keras` module is TFMOT's quantization-aware training API."""

from mayo_lite.tfmot.quantization import keras

__all__ = ["keras"]
