"""The network room: YAML `model` sections to functional Keras models, and what they cost."""

from mayo_lite.net.builder import build_model
from mayo_lite.net.layer_types import LAYER_TYPES
from mayo_lite.net.sources import dense_sources
from mayo_lite.net.specs import GROUP_ATTRIBUTE
from mayo_lite.net.cost import ModelCost, model_cost
from mayo_lite.net.estimate import layer_table, totals
from mayo_lite.net.variants import static_width, with_widths, without_gates, without_quantizers
from mayo_lite.net.narrowing import kept_channels, narrow_model

__all__ = ["GROUP_ATTRIBUTE", "LAYER_TYPES", "ModelCost", "build_model", "dense_sources", "kept_channels",
           "layer_table", "model_cost", "narrow_model",
           "static_width", "totals", "with_widths", "without_gates", "without_quantizers"]
