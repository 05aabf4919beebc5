"""The network room: YAML `model` sections to functional Keras models (and their variants: dense, static width).
What changes or counts any Keras model lives in `mayo_lite.models`; `model_cost` is re-exported here, where the
public API has always had it."""

from mayo_lite.models.cost import ModelCost, model_cost
from mayo_lite.net.builder import build_model
from mayo_lite.net.layer_types import LAYER_TYPES
from mayo_lite.net.variants import static_width, with_widths, without_gates, without_quantizers

__all__ = ["LAYER_TYPES", "ModelCost", "build_model", "model_cost", "static_width", "with_widths",
           "without_gates", "without_quantizers"]
