"""The actions the `my` command runs, as thin functions over a session.

Each action takes the runner (anything with `.cfg` and `.session()`), so actions that need no model, such as
`export`, never build one. Results go to stdout; progress and notices go to the log on stderr.
"""

import csv
import logging
import math
from pathlib import Path

import yaml

from mayo_lite.errors import ConfigError, DataError
from mayo_lite.net import layer_table, totals
from mayo_lite.session.checkpoint import epoch_name
from mayo_lite.session.loop import epoch_text

log = logging.getLogger("mayo_lite")


def _plumbing(runner, name, data):
    if runner.cfg.get("system.info.plumbing", False):
        Path(name).write_text(yaml.safe_dump(data, sort_keys=False))
        log.info("wrote %s", name)


def _max_epochs(cfg):
    value = cfg.get("system.max_epochs")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{cfg.where('system.max_epochs')}: expected a positive number, "
                          f"got {value!r}")
    return float(value)


def train(runner):
    cfg = runner.cfg
    session = runner.session()
    if session.optimizer is None:
        raise ConfigError("train: the config has no `train` section; add a trainer, e.g. trainers/lenet5.yaml")
    session.measured_densities = None  # the gates change with the weights
    max_epochs = _max_epochs(cfg)
    interval = cfg.get("system.checkpoint.save.interval")
    keep = cfg.get("system.checkpoint.save.keep", None)
    if session.epoch.value >= max_epochs - 1e-9:
        log.info("already trained to epoch %s (system.max_epochs=%s); reset-num-epochs trains a full schedule "
                 "again", epoch_text(session.epoch.value), epoch_text(max_epochs))
        return

    def on_epoch_end(epoch):
        if interval and float(epoch).is_integer() and int(epoch) % int(interval) == 0:
            session.save(epoch_name(epoch))
            if keep:
                session.store.prune_numbered(int(keep))
        session.save("latest")
    session.loops.train(max_epochs, on_epoch_end)


def evaluate(runner):
    session = runner.session()
    result = session.loops.evaluate()
    density = f", density: {result['density']:.2%}" if "density" in result else ""
    print(f"top1: {result['top1']:.2%}, top5: {result['top5']:.2%}{density}", flush=True)
    if "layer_densities" in result:
        session.measured_densities = (result["layer_densities"], result["examples"])
    figures = {"model": session.model.name, "dataset": session.dataset.get("name"), "epoch": session.epoch.value,
               "top1": round(result["top1"], 6), "top5": round(result["top5"], 6), "loss": round(result["loss"], 6),
               "examples": result["examples"]}
    if "density" in result:
        figures["density"] = round(result["density"], 6)
        figures["layer_densities"] = {name: round(value, 6) for name, value in result["layer_densities"].items()}
    _plumbing(runner, "eval.yaml", figures)
    return result


def _shape_text(shape):
    return "×".join(str(d) for d in shape)


def _gate_densities(runner, session):
    """Measured gate densities and a sentence saying where they come from; ({}, ...) means nominal."""
    if not session.loops.gated:
        return {}, None
    if session.measured_densities is not None:
        densities, examples = session.measured_densities
        return densities, f"gate densities measured by eval on {examples:,} validation images"
    batches = runner.cfg.get("system.info.density_batches")
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 0:
        raise ConfigError(f"{runner.cfg.where('system.info.density_batches')}: expected a whole number of batches "
                          f"(0 for nominal densities), got {batches!r}")
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


def info(runner):
    session = runner.session()
    densities, source = _gate_densities(runner, session)
    rows = layer_table(session.model, densities)
    total = totals(rows)
    gated = source is not None
    headers = ("layer", "output shape", "params", "MACs") + (
        ("in density", "out density", "effective MACs", "gate MACs") if gated else ())
    table = []
    for row in rows:
        line = (row["name"], _shape_text(row["output_shape"]), f"{row['params']:,}", f"{row['macs']:,}")
        if gated:
            line += (f"{row['in_density']:.3f}", f"{row['out_density']:.3f}", f"{round(row['effective_macs']):,}",
                     f"{round(row['gate_macs']):,}" if row["gate_macs"] else "")
        table.append(line)
    line = ("total", "", f"{total['params']:,}", f"{total['macs']:,}")
    if gated:
        line += ("", "", f"{round(total['effective_macs'] - total['gate_macs']):,}", f"{round(total['gate_macs']):,}")
    table.append(line)
    _print_table(headers, table)
    print(f"model {session.model.name} on {session.dataset.get('name')}: {total['params']:,} parameters, "
          f"{total['macs']:,} MACs ({_human(total['macs'])}) per image", flush=True)
    if gated:
        effective = round(total["effective_macs"])
        print(f"with gates: dense {total['macs']:,} MACs, effective {effective:,} MACs ({_human(effective)}, gates "
              f"included), {total['macs'] / effective:.2f}× fewer; {source}", flush=True)
    layers = []
    for row in rows:
        entry = {"name": row["name"], "output_shape": list(row["output_shape"]), "params": row["params"],
                 "macs": row["macs"]}
        if gated:
            entry.update({"in_density": round(row["in_density"], 6), "out_density": round(row["out_density"], 6),
                          "effective_macs": round(row["effective_macs"]), "gate_macs": round(row["gate_macs"])})
        layers.append(entry)
    figures = {"model": session.model.name, "dataset": session.dataset.get("name"), "layers": layers,
               "total": {key: round(value) for key, value in total.items()}}
    if gated:
        figures["densities"] = source
    _plumbing(runner, "info.yaml", figures)
    return rows, total


def _human(count):
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)


def reset_num_epochs(runner):
    session = runner.session()
    log.info("epoch counter reset from %s to 0", epoch_text(session.epoch.value))
    session.epoch.assign(0.0)


def save(runner):
    runner.session().save("latest")


def export(runner):
    Path("export.yaml").write_text(runner.cfg.dump())
    log.info("wrote export.yaml")


def eval_all(runner):
    session = runner.session()
    paths = session.store.available()
    if not paths:
        raise ConfigError(f"eval-all: no checkpoints in {session.store.directory}")
    rows = []
    for path in paths:
        session.load(path)
        result = session.loops.evaluate(progress=False)
        rows.append({"checkpoint": path.stem, "epoch": session.epoch.value,
                     "top1": round(result["top1"], 6), "top5": round(result["top5"], 6)})
        print(f"{path.stem}: epoch {epoch_text(session.epoch.value)}, top1: {result['top1']:.2%}, "
              f"top5: {result['top5']:.2%}", flush=True)
    with open("eval_all.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    log.info("wrote eval_all.csv")
    # The session now holds the last checkpoint's weights, not the selected one: build afresh next time.
    runner.discard_session()


# name -> function; the command line's table of descriptions (mayo_lite.cli) lists the same names.
ACTIONS = {
    "train": train,
    "eval": evaluate,
    "info": info,
    "reset-num-epochs": reset_num_epochs,
    "save": save,
    "export": export,
    "eval-all": eval_all,
}
