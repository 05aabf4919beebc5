"""What a pruning pass did, counted as the reference script counts it: convolution kernel weights only."""

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerPruning:
    """One layer after pruning: its kernel weights, those its mask keeps, and the threshold it was pruned with."""

    name: str
    total: int
    remaining: int
    threshold: float

    @property
    def pruned(self):
        return self.total - self.remaining


@dataclass(frozen=True)
class PruneReport:
    """The result of `prune_model`.

    Counts include weights pruned by earlier passes, as the reference counts a loaded pruned model's zeros.

    Attributes:
        layers: layer name -> `LayerPruning`, in model order.
        threshold: the global threshold (-inf for percent 0); None with `scope="layer"`, whose thresholds are the
            layers' own.
        percent, granularity, saliency, scope: the arguments of the pass.
    """

    layers: dict
    threshold: float | None
    percent: float
    granularity: str
    saliency: str
    scope: str

    @property
    def total(self):
        return sum(layer.total for layer in self.layers.values())

    @property
    def pruned(self):
        return sum(layer.pruned for layer in self.layers.values())

    @property
    def ratio(self):
        """`pruned / total` over the selected layers."""
        return self.pruned / self.total

    @property
    def empty_layers(self):
        """The names of the layers left with no weights: the network is cut there."""
        return [name for name, layer in self.layers.items() if layer.remaining == 0]

    def text(self):
        """The report as the reference script prints it, plus a warning for layers left with no weights."""
        lines = [f"layer index: {index} ({name})  total params: {layer.total}  remaining params: {layer.remaining}"
                 for index, (name, layer) in enumerate(self.layers.items())]
        lines.append(f"Total conv params: {self.total}, Pruned conv params: {self.pruned}, "
                     f"Pruned ratio: {self.ratio:.6f}")
        if self.empty_layers:
            lines.append(f"Warning: layers left with no weights: {', '.join(self.empty_layers)}")
        return "\n".join(lines)
