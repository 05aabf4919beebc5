"""The network room: YAML `model` sections to functional Keras models, and what they cost."""

from mayo_lite.net.builder import GROUP_ATTRIBUTE, LAYER_TYPES, build_model, dense_sources, without_gates
from mayo_lite.net.estimate import layer_table, totals

__all__ = ["GROUP_ATTRIBUTE", "LAYER_TYPES", "build_model", "dense_sources", "layer_table", "totals", "without_gates"]
