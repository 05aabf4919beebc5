"""The `plot` action: PNG figures of the run under `system.plot.path` — per-class gate heatmaps for each gated layer,
per-layer costs, training curves from the run's history, and top-1 against MACs from `eval_all.csv` files."""

import csv
import logging
from pathlib import Path

import keras
import numpy as np

from mayo_lite.errors import ConfigError, DataError
from mayo_lite.files import output_path
from mayo_lite.layers import gated_layers
from mayo_lite.net import model_cost
from mayo_lite.plot import accuracy_against_macs, gate_heatmap, layer_costs, training_curves
from mayo_lite.session.epochs import epoch_text

log = logging.getLogger("mayo_lite")


def check_plot(cfg, settings):
    """The sweep files must exist before anything is drawn (the other settings are `settings.check_settings`')."""
    for index, name in enumerate(settings.plot.runs):
        if not Path(name).is_file():
            raise ConfigError(f"{cfg.where('system.plot.runs')}: {name} (entry {index}) is not a file; list "
                            f"eval_all.csv files of other runs")


def gate_statistics(session, batches):
    """Per gated layer, over `batches` validation batches: {name: (mean gamma·active, fraction kept), each
    (classes, channels)}, {name: fraction of its channels kept over all images}, and the number of images. Gamma
    comes from the layer's own `compute_gate`."""
    model, gated = session.model, list(gated_layers(session.model))
    inputs = keras.Model(model.inputs, [layer.input for layer in gated])
    classes = int(model.output.shape[-1])
    sums = {layer.name: (np.zeros((classes, layer.filters)), np.zeros((classes, layer.filters))) for layer in gated}
    counts, images = np.zeros(classes), 0
    for features, labels in session.pipeline("validate").take(batches):
        labels = keras.ops.convert_to_numpy(labels)
        layer_inputs = inputs(features, training=False)
        for layer, layer_input in zip(gated, layer_inputs if len(gated) > 1 else [layer_inputs]):
            gamma, active = (keras.ops.convert_to_numpy(t) for t in layer.compute_gate(layer_input))
            np.add.at(sums[layer.name][0], labels, gamma * active)
            np.add.at(sums[layer.name][1], labels, active)
        np.add.at(counts, labels, 1)
        images += len(labels)
    if not images:
        raise DataError("plot: the validation split gave no images to measure the gates on")
    seen = np.maximum(counts, 1)[:, None]
    densities = {layer.name: float(sums[layer.name][1].sum() / (images * layer.filters)) for layer in gated}
    return {name: (gamma / seen, kept / seen) for name, (gamma, kept) in sums.items()}, densities, images


def read_csv(path):
    """The rows of a CSV file, numbers as floats, other non-empty cells as text."""
    with open(path, newline="") as stream:
        return [{key: float(value) if _number(value) else value for key, value in row.items()
                 if value not in ("", None)} for row in csv.DictReader(stream)]


def _number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _accuracy_points(runs):
    """This run's checkpoints from `eval_all.csv` [(effective MACs, top-1, label)], and the last checkpoint of each
    run in `system.plot.runs` [(effective MACs, top-1, run label)]."""
    def rows(path):
        found = [row for row in read_csv(path) if "effective_macs" in row and "top1" in row]
        if not found:
            log.warning("plot: %s has no effective_macs and top1 columns (written by eval-all)", path)
        return found

    found = rows("eval_all.csv") if Path("eval_all.csv").is_file() else []
    # `latest` repeats another checkpoint: drawn only when it does not.
    points = {(row["effective_macs"], row["top1"]): row for row in found if row.get("checkpoint") == "latest"}
    points.update({(row["effective_macs"], row["top1"]): row for row in found if row.get("checkpoint") != "latest"})
    checkpoints = sorted((macs, top1, f"{row.get('checkpoint', '?')} (epoch {epoch_text(row.get('epoch', 0))})")
                         for (macs, top1), row in points.items())
    sweep = []
    for name in runs:
        found = rows(name)
        if found:
            path = Path(name)
            last = max(found, key=lambda row: row.get("epoch", 0))
            sweep.append((last["effective_macs"], last["top1"],
                          path.parent.name if path.name == "eval_all.csv" else path.stem))
    return checkpoints, sweep


def plot(runner):
    session = runner.session()
    directory = output_path(runner.settings.plot.path)
    directory.mkdir(parents=True, exist_ok=True)
    subject = (f"model {session.model.name} on {session.dataset.get('name')}, epoch "
               f"{epoch_text(session.epoch.value)}")
    written = []
    densities = None
    if list(gated_layers(session.model)):
        statistics, densities, images = gate_statistics(session, runner.settings.plot.batches)
        classes = len(next(iter(statistics.values()))[0])
        names = [str(name) for name in session.dataset["task"].get("class_names") or []]
        if len(names) == classes - 1:  # a background output first (background_class.use)
            names = ["background"] + names
        if len(names) != classes:
            names = [str(i) for i in range(classes)]
        for name, (gamma, kept) in statistics.items():
            written.append(gate_heatmap(name, gamma, kept, names, f"{subject}, {images:,} validation images",
                                        directory / f"gates_{name}.png"))
    cost = model_cost(session.model, gate_densities=densities)
    written.append(layer_costs(cost.rows, subject, directory / "layer_costs.png"))
    history = runner.settings.history
    if history and Path(history).is_file() and read_csv(history):
        written.append(training_curves(read_csv(history), subject, directory / "training_curves.png"))
    else:
        print(f"plot: no training history at {history}: no training curves (train writes it)", flush=True)
    checkpoints, sweep = _accuracy_points(runner.settings.plot.runs)
    if checkpoints or sweep:
        written.append(accuracy_against_macs(checkpoints, sweep, f"model {session.model.name} on "
                                                                 f"{session.dataset.get('name')}",
                                             directory / "accuracy_macs.png"))
    else:
        print("plot: no eval_all.csv with effective MACs here or in system.plot.runs: no accuracy-against-MACs "
              "figure (eval-all writes it)", flush=True)
    for path in written:
        print(f"wrote {path}", flush=True)
    return written
