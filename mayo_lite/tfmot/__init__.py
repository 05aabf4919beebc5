"""TensorFlow Model Optimization's public API for Keras 3 (docs/keras.md): `import mayo_lite.tfmot as tfmot` in
place of `import tensorflow_model_optimization as tfmot`, and `tfmot.sparsity.keras` (magnitude pruning) and
`tfmot.quantization.keras` (quantization-aware training, default 8-bit scheme) run on this project's layers."""

from mayo_lite.tfmot import quantization, sparsity

__all__ = ["quantization", "sparsity"]
