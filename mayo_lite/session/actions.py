"""The actions the `my` command runs, as thin functions over a session.

Each action takes the runner (anything with `.cfg` and `.session()`), so actions that need no model, such as
`export`, never build one. Results go to stdout; progress and notices go to the log on stderr.
"""

import csv
import logging
import math
from pathlib import Path

import yaml

from mayo_lite.errors import ConfigError
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
    print(f"top1: {result['top1']:.2%}, top5: {result['top5']:.2%}", flush=True)
    _plumbing(runner, "eval.yaml", {
        "model": session.model.name, "dataset": session.dataset.get("name"), "epoch": session.epoch.value,
        "top1": round(result["top1"], 6), "top5": round(result["top5"], 6), "loss": round(result["loss"], 6),
        "examples": result["examples"]})
    return result


def _shape_text(shape):
    return "×".join(str(d) for d in shape)


def info(runner):
    session = runner.session()
    rows = layer_table(session.model)
    total = totals(rows)
    headers = ("layer", "output shape", "params", "MACs")
    table = [(row["name"], _shape_text(row["output_shape"]), f"{row['params']:,}", f"{row['macs']:,}")
             for row in rows]
    table.append(("total", "", f"{total['params']:,}", f"{total['macs']:,}"))
    widths = [max(len(str(line[i])) for line in [headers] + table) for i in range(len(headers))]
    for number, line in enumerate([headers] + table):
        if number == len(table):
            print("  ".join("-" * w for w in widths))
        print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))
    print(f"model {session.model.name} on {session.dataset.get('name')}: {total['params']:,} parameters, "
          f"{total['macs']:,} MACs ({_human(total['macs'])}) per image", flush=True)
    _plumbing(runner, "info.yaml", {
        "model": session.model.name, "dataset": session.dataset.get("name"),
        "layers": [{"name": row["name"], "output_shape": list(row["output_shape"]), "params": row["params"],
                    "macs": row["macs"]} for row in rows],
        "total": total})
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
