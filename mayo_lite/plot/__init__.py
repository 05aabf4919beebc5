"""Figures of a run: gate heatmaps per class, per-layer costs, training curves, accuracy against MACs."""

from mayo_lite.plot.figures import accuracy_against_macs, gate_heatmap, layer_costs, training_curves

__all__ = ["accuracy_against_macs", "gate_heatmap", "layer_costs", "training_curves"]
