"""The `info` action: per-layer shapes, parameters and MACs, and for gated or pruned models their densities and
effective MACs."""

import logging

from mayo_lite.data.description import lookup
from mayo_lite.errors import DataError
from mayo_lite.layers import LocalGating
from mayo_lite.net import model_cost
from mayo_lite.models.cost import human
from mayo_lite.session.actions.common import plumbing as _plumbing

log = logging.getLogger("mayo_lite")


def _shape_text(shape):
    return "×".join(str(d) for d in shape)


def _gate_densities(runner, session):
    """Measured gate densities and a sentence saying where they come from; ({}, ...) means nominal."""
    if not session.loops.gated:
        return {}, None
    if session.measured_densities is not None:
        densities, examples = session.measured_densities
        return densities, f"gate densities measured by eval on {examples:,} validation images"
    batches = runner.settings.density_batches
    if batches == 0:
        return {}, "nominal gate densities (system.info.density_batches=0)"
    if lookup(session.dataset, "source.type", None) is None:
        # Mayo's dataset files name no source (Mayo read TFRecords from its own folders): `info` needs no data.
        return {}, "nominal gate densities: the dataset names no source to measure them on (dataset.source.type)"
    try:
        result = session.loops.evaluate(progress=False, max_batches=batches)
    except DataError as error:
        return {}, f"nominal gate densities: no validation data to measure them on ({str(error).split(';')[0]})"
    return result["layer_densities"], f"gate densities measured on {result['examples']:,} validation images"


def info(runner):
    session = runner.session()
    densities, source = _gate_densities(runner, session)
    cost = model_cost(session.model, gate_densities=densities)
    cost.densities = source
    total = cost.total
    print(cost.table())
    shape, shape_source = session.input_source()
    why = ("as the model's dataset.task.preprocess.shape sets it; images are converted and resized to it, as in Mayo"
           if shape_source != "dataset.task.shape" else "the dataset's own shape, dataset.task.shape")
    print(f"model {session.model.name} on {session.dataset.get('name')}: {total['params']:,} parameters, "
          f"{total['macs']:,} MACs ({human(total['macs'])}) per image", flush=True)
    print(f"input {'×'.join(map(str, shape))}: {why}", flush=True)
    effective = round(total["effective_macs"])
    if cost.gated:
        print(f"with gates: dense {total['macs']:,} MACs, effective {effective:,} MACs ({human(effective)}, gates "
              f"included), {total['macs'] / effective:.2f}× fewer; {source}", flush=True)
    elif cost.masked:
        print(f"with pruning masks: dense {total['macs']:,} MACs, effective {effective:,} MACs ({human(effective)}), "
              f"{total['macs'] / max(effective, 1):.2f}× fewer", flush=True)
    if cost.quantized:
        print(cost.size_line(), flush=True)
    gates = [layer.name for layer in session.model.layers if isinstance(layer, LocalGating)]
    if gates:  # its saving depends on each image and on alpha: not estimated
        print(f"input gating ({', '.join(gates)}): switches channels off per image; the MACs above count them all",
              flush=True)

    def value(key, row):
        number = row[key]
        if number is None or isinstance(number, (int, dict)):
            return number
        return round(number) if key.endswith("macs") else round(number, 6)
    layers = [{"name": row["name"], "output_shape": list(row["output_shape"]),
               **{key: value(key, row) for _, _, _, key in cost.columns()}} for row in cost.rows]
    figures = {"model": session.model.name, "dataset": session.dataset.get("name"), "layers": layers,
               "total": {key: round(number) for key, number in total.items()}}
    if cost.gated:
        figures["densities"] = source
    _plumbing(runner, "info.yaml", figures)
    return cost.rows, total
