"""The `info` action: per-layer shapes, parameters and MACs, and for gated or pruned models their densities and
effective MACs."""

import logging

from mayo_lite.errors import DataError
from mayo_lite.net import layer_table, totals
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
    batches = runner.cfg.integer("system.info.density_batches", 0)
    if batches == 0:
        return {}, "nominal gate densities (system.info.density_batches=0)"
    try:
        result = session.loops.evaluate(progress=False, max_batches=batches)
    except DataError as error:
        return {}, f"nominal gate densities: no validation data to measure them on ({str(error).split(';')[0]})"
    return result["layer_densities"], f"gate densities measured on {result['examples']:,} validation images"


def _print_table(headers, table, left=2):
    widths = [max(len(str(line[i])) for line in [headers] + table) for i in range(len(headers))]
    for number, line in enumerate([headers] + table):
        if number == len(table):
            print("  ".join("-" * w for w in widths))
        print("  ".join(cell.ljust(w) if i < left else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(line, widths))))


def _columns(gated, masked):
    """(header, cell of a row, cell of the total row, key in info.yaml) of the columns `info` prints."""
    columns = [
        ("params", lambda r: f"{r['params']:,}", lambda t: f"{t['params']:,}", "params"),
        ("MACs", lambda r: f"{r['macs']:,}", lambda t: f"{t['macs']:,}", "macs"),
    ]
    if masked:
        columns.append(("weight density", lambda r: "" if r["weight_density"] is None else f"{r['weight_density']:.3f}",
                        lambda t: "", "weight_density"))
    if gated:
        columns += [("in density", lambda r: f"{r['in_density']:.3f}", lambda t: "", "in_density"),
                    ("out density", lambda r: f"{r['out_density']:.3f}", lambda t: "", "out_density")]
    if gated or masked:
        columns.append(("effective MACs", lambda r: f"{round(r['effective_macs']):,}",
                        lambda t: f"{round(t['effective_macs'] - t['gate_macs']):,}", "effective_macs"))
    if gated:
        columns.append(("gate MACs", lambda r: f"{round(r['gate_macs']):,}" if r["gate_macs"] else "",
                        lambda t: f"{round(t['gate_macs']):,}", "gate_macs"))
    return columns


def info(runner):
    session = runner.session()
    densities, source = _gate_densities(runner, session)
    rows = layer_table(session.model, densities)
    total = totals(rows)
    gated, masked = source is not None, any(row["weight_density"] is not None for row in rows)
    columns = _columns(gated, masked)
    headers = ("layer", "output shape") + tuple(header for header, _, _, _ in columns)
    table = [(row["name"], _shape_text(row["output_shape"])) + tuple(cell(row) for _, cell, _, _ in columns)
             for row in rows]
    table.append(("total", "") + tuple(cell(total) for _, _, cell, _ in columns))
    _print_table(headers, table)
    print(f"model {session.model.name} on {session.dataset.get('name')}: {total['params']:,} parameters, "
          f"{total['macs']:,} MACs ({_human(total['macs'])}) per image", flush=True)
    effective = round(total["effective_macs"])
    if gated:
        print(f"with gates: dense {total['macs']:,} MACs, effective {effective:,} MACs ({_human(effective)}, gates "
              f"included), {total['macs'] / effective:.2f}× fewer; {source}", flush=True)
    elif masked:
        print(f"with pruning masks: dense {total['macs']:,} MACs, effective {effective:,} MACs ({_human(effective)}), "
              f"{total['macs'] / max(effective, 1):.2f}× fewer", flush=True)

    def value(key, row):
        number = row[key]
        if number is None or isinstance(number, int):
            return number
        return round(number) if key.endswith("macs") else round(number, 6)
    layers = [{"name": row["name"], "output_shape": list(row["output_shape"]),
               **{key: value(key, row) for _, _, _, key in columns}} for row in rows]
    figures = {"model": session.model.name, "dataset": session.dataset.get("name"), "layers": layers,
               "total": {key: round(number) for key, number in total.items()}}
    if gated:
        figures["densities"] = source
    _plumbing(runner, "info.yaml", figures)
    return rows, total


def _human(count):
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)
