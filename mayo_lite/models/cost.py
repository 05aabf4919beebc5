"""What any Keras model costs, as a table: `model_cost` for Python users, and the `info` action's printout."""

import dataclasses

import keras
import numpy as np

from mayo_lite.layers import gated_layers
from mayo_lite.models.cloning import check_model
from mayo_lite.models.estimate import layer_table, totals


@dataclasses.dataclass
class ModelCost:
    """Parameters and multiply-accumulates of a model, per layer and in total.

    Attributes:
        rows: one dict per layer (per YAML layer for models the runner builds): `name`, `types`, `output_shape`,
            `params`, `macs` (dense), `weight_density` (None without a pruning mask), `in_density`,
            `out_density`, `effective_macs` (what the masks and gates leave) and `gate_macs` (the predictors').
        total: summed `params`, `macs`, `effective_macs` (gate MACs included) and `gate_macs`.
        densities: where the gate densities come from (None for a model without gates).
    """

    rows: list
    total: dict
    densities: str = None

    @property
    def gated(self):
        return self.densities is not None

    @property
    def quantized(self):
        return any(row.get("bits") for row in self.rows)

    @property
    def masked(self):
        return any(row["weight_density"] is not None for row in self.rows)

    def columns(self):
        """(header, cell of a row, cell of the total row, key) of every column worth showing."""
        columns = [
            ("params", lambda r: f"{r['params']:,}", lambda t: f"{t['params']:,}", "params"),
            ("MACs", lambda r: f"{r['macs']:,}", lambda t: f"{t['macs']:,}", "macs"),
        ]
        if self.masked:
            columns.append(("weight density", lambda r: "" if r["weight_density"] is None else
                            f"{r['weight_density']:.3f}", lambda t: "", "weight_density"))
        if self.gated:
            columns += [("in density", lambda r: f"{r['in_density']:.3f}", lambda t: "", "in_density"),
                        ("out density", lambda r: f"{r['out_density']:.3f}", lambda t: "", "out_density")]
        if self.gated or self.masked:
            columns.append(("effective MACs", lambda r: f"{round(r['effective_macs']):,}",
                            lambda t: f"{round(t['effective_macs'] - t['gate_macs']):,}", "effective_macs"))
        if self.quantized:
            columns += [("bits", _bits_text, lambda t: "", "bits"),
                        ("size KB", lambda r: f"{r['size_bits'] / 8192:.1f}" if r["size_bits"] else "",
                         lambda t: f"{t['size_bits'] / 8192:.1f}", "size_bits")]
        if self.gated:
            columns.append(("gate MACs", lambda r: f"{round(r['gate_macs']):,}" if r["gate_macs"] else "",
                            lambda t: f"{round(t['gate_macs']):,}", "gate_macs"))
        return columns

    def table(self):
        """The per-layer table as text, a total line last."""
        columns = self.columns()
        headers = ("layer", "output shape") + tuple(header for header, _, _, _ in columns)
        lines = [(row["name"], "×".join(str(d) for d in row["output_shape"]))
                 + tuple(cell(row) for _, cell, _, _ in columns) for row in self.rows]
        lines.append(("total", "") + tuple(cell(self.total) for _, _, cell, _ in columns))
        widths = [max(len(str(line[i])) for line in [headers] + lines) for i in range(len(headers))]
        text = []
        for number, line in enumerate([headers] + lines):
            if number == len(lines):
                text.append("  ".join("-" * w for w in widths))
            text.append("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                                  for i, (cell, w) in enumerate(zip(line, widths))))
        return "\n".join(text)

    def summary(self):
        """One line per figure that matters: the dense cost, and what masks or gates leave of it."""
        total = self.total
        lines = [f"{total['params']:,} parameters, {total['macs']:,} MACs ({human(total['macs'])}) per image"]
        effective = round(total["effective_macs"])
        if self.gated:
            lines.append(f"with gates: effective {effective:,} MACs ({human(effective)}, gates included), "
                         f"{total['macs'] / max(effective, 1):.2f}× fewer; {self.densities}")
        elif self.masked:
            lines.append(f"with pruning masks: effective {effective:,} MACs ({human(effective)}), "
                         f"{total['macs'] / max(effective, 1):.2f}× fewer")
        if self.quantized:
            lines.append(self.size_line())
        return "\n".join(lines)

    def size_line(self):
        """The parameters' size at the quantizers' widths against float32."""
        size, full = self.total["size_bits"], 32 * self.total["params"]
        return (f"at its quantizers' widths: {size / 8192:,.1f} KB of parameters, {full / max(size, 1):.2f}× smaller "
                f"than float32 ({full / 8192:,.1f} KB)")

    def __str__(self):
        return f"{self.table()}\n{self.summary()}"


def _bits_text(row):
    """'w8 b8 a8': the widths of a row's weights, biases and activation; '' for a row no quantizer touches."""
    return " ".join(f"{key}{'?' if bits is None else bits}" for key, bits in sorted(
        row.get("bits", {}).items(), key=lambda item: "wba".index(item[0])))


def human(count):
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)


def measure_densities(model, data, batch_size=32):
    """Each gated layer's mean output density over `data` in inference: {layer name: density}, examples seen."""
    layers = list(gated_layers(model))
    if isinstance(data, np.ndarray) or keras.ops.is_tensor(data):
        batches = (data[start:start + batch_size] for start in range(0, len(data), batch_size))
    else:
        batches = (batch[0] if isinstance(batch, (tuple, list)) else batch for batch in data)
    sums, examples = np.zeros(len(layers)), 0
    for images in batches:
        model(images, training=False)
        count = int(images.shape[0])
        sums += [float(keras.ops.convert_to_numpy(layer.last_density)) * count for layer in layers]
        examples += count
    if not examples:
        raise ValueError("model_cost: `data` holds no images")
    return {layer.name: float(value / examples) for layer, value in zip(layers, sums)}, examples


def model_cost(model, data=None, batch_size=32, gate_densities=None):
    """Parameters, MACs, weight densities and effective MACs of any built Keras model, per layer.

    MACs count the multiplications of `Conv2D`, `DepthwiseConv2D` and `Dense` layers for one image (additions,
    normalisation and pooling are not counted, as in the published figures: ResNet-50 at 224×224 is about 4.1 G).
    A pruning mask multiplies its layer's MACs by the fraction of weights it keeps. A gated layer computes only
    the channels active on both of its sides: its effective MACs are the dense ones times its input and output
    densities, plus its predictor's; densities are measured on `data` when given, else nominal
    (`ceil(filters · density) / filters`). Nested models are counted layer by layer.

    Example:

    ```python
    cost = mayo_lite.net.model_cost(keras.applications.MobileNetV2(weights=None))
    print(cost.total["macs"])   # 300,774,272
    print(cost)                 # the per-layer table
    ```

    Args:
        model: a built functional or Sequential Keras model.
        data: images to measure gate densities on (an array, or a dataset of images or (images, labels)
            batches); None counts gates at their nominal density.
        batch_size: batch size for an array `data`.
        gate_densities: {gated layer name: density} measured elsewhere, instead of `data`.

    Returns:
        A `ModelCost`; `str()` of it is the table `my ... info` prints.
    """
    check_model(model, "model_cost")
    gated = list(gated_layers(model))
    source = None
    if gated:
        if gate_densities is None and data is not None:
            gate_densities, examples = measure_densities(model, data, batch_size)
            source = f"gate densities measured on {examples:,} images"
        elif gate_densities is not None:
            source = "gate densities given"
        else:
            source = "nominal gate densities"
    rows = layer_table(model, gate_densities)
    return ModelCost(rows, totals(rows), source)
