"""`tfmot.quantization.keras`: the public names of TensorFlow Model Optimization's quantization-aware training API."""

from mayo_lite.tfmot.qat import (quantize_annotate_layer, quantize_annotate_model, quantize_apply, quantize_model,
                                 quantize_scope)

__all__ = ["quantize_annotate_layer", "quantize_annotate_model", "quantize_apply", "quantize_model",
           "quantize_scope"]
