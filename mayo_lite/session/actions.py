"""The actions the `my` command runs, as thin functions over a session.

Each action takes the runner (anything with `.cfg` and `.session()`), so actions that need no model, such as
`export`, never build one. Results go to stdout; progress and notices go to the log on stderr.
"""

import csv
import io
import logging
import math

import tensorflow as tf
import yaml

from mayo_lite.errors import ConfigError, DataError
from mayo_lite.files import write_atomically
from mayo_lite import registry
from mayo_lite.net import layer_table, totals
from mayo_lite.session import pruning
from mayo_lite.session.benchmark import bench
from mayo_lite.session.deploy import export_model
from mayo_lite.session.checkpoint import epoch_name
from mayo_lite.session.loop import epoch_text

log = logging.getLogger("mayo_lite")


def _plumbing(runner, name, data):
    if runner.cfg.get("system.info.plumbing", False):
        write_atomically(name, yaml.safe_dump(data, sort_keys=False))
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
    gradual = pruning.schedule(cfg, session.model)
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
    session.loops.train(max_epochs, on_epoch_end, after_step=None if gradual is None else gradual.after_step,
                        on_interrupt=lambda epoch: session.save("latest"))


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


def reset_num_epochs(runner):
    session = runner.session()
    log.info("epoch counter reset from %s to 0", epoch_text(session.epoch.value))
    session.epoch.assign(0.0)


def save(runner):
    runner.session().save("latest")


def export(runner):
    write_atomically("export.yaml", runner.cfg.dump())
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
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomically("eval_all.csv", table.getvalue())
    log.info("wrote eval_all.csv")
    # The session now holds the last checkpoint's weights, not the selected one: build afresh next time.
    runner.discard_session()


def check_train(cfg):
    """What `train` will use, checked before the session is built: the trainer, its learning rate over the whole
    schedule, its optimizer and a gradual pruning schedule."""
    if cfg.get("train", None) is None:
        raise ConfigError("train: the config has no `train` section; add a trainer, e.g. trainers/lenet5.yaml")
    where = cfg.where("train.learning_rate")
    schedule = registry.learning_rate_schedule(cfg.get("train.learning_rate"), where)
    max_epochs = _max_epochs(cfg)
    for epoch in (0.0, max_epochs / 2, max_epochs):
        try:
            rate = float(schedule(tf.constant(epoch, tf.float32)))
        except (TypeError, ValueError, tf.errors.OpError) as error:
            raise ConfigError(f"{where}: cannot compute the learning rate at epoch {epoch:g} "
                              f"({type(error).__name__}: {str(error).splitlines()[0][:160]})") from None
        if not math.isfinite(rate) or rate < 0:
            raise ConfigError(f"{where}: the learning rate at epoch {epoch:g} is {rate}; expected a finite "
                              "non-negative number")
    registry.build("optimizer", cfg.get("train.optimizer"), cfg.where("train.optimizer"))
    pruning.check_schedule(cfg)


def check_bench(cfg):
    """A gate that sparse execution cannot run is refused before the model is built or timed."""
    for path, params in _gate_params(cfg.get("model"), "model"):
        if isinstance(params, dict) and params.get("norm", "batch") != "batch":
            raise ConfigError(f"{cfg.where(path + '.norm')}: bench runs gated models sparsely, which needs "
                              f"norm: batch (moving statistics); norm: {params['norm']} normalises each image by "
                              "its own moments")


def _gate_params(spec, path):
    if isinstance(spec, dict):
        if spec.get("type") == "gated_convolution":
            yield f"{path}.gate_params", spec.get("gate_params")
        for key, value in spec.items():
            yield from _gate_params(value, f"{path}.{key}")
    elif isinstance(spec, list):
        for index, value in enumerate(spec):
            yield from _gate_params(value, f"{path}.{index}")


# name -> a check of the settings only that action uses, run before it does any work (mayo_lite.settings checks
# the settings every action uses).
CHECKS = {
    "train": check_train,
    "prune": pruning.settings,
    "bench": check_bench,
}

# name -> function; the command line's table of descriptions (mayo_lite.cli) lists the same names.
ACTIONS = {
    "train": train,
    "eval": evaluate,
    "info": info,
    "reset-num-epochs": reset_num_epochs,
    "save": save,
    "export": export,
    "eval-all": eval_all,
    "prune": pruning.prune,
    "export-model": export_model,
    "bench": bench,
}
