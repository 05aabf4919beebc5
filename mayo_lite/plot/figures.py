"""The figures of the `plot` action, drawn with matplotlib from plain numbers (no TensorFlow here): each function
takes what it shows, a title line naming the model and data, and the PNG file to write."""

import io
import math

import matplotlib

matplotlib.use("Agg")  # files only: no display, and no GUI toolkit to import

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from mayo_lite.files import write_atomically  # noqa: E402

DPI = 120


def _short(count):
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return f"{count:.3g}"


def _save(figure, path):
    # Drawn to memory and written atomically: an interrupted plot leaves the previous figure, not half a PNG.
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    write_atomically(path, buffer.getvalue())
    return path


def gate_heatmap(layer, mean_gamma, kept, class_names, subject, path):
    """The FBS paper's picture of which channels fire for which class: for one gated layer, the mean gate value
    (gamma, after the gate's threshold: 0 where switched off) of each channel over each class's validation images,
    and beside it the fraction of those images that keep the channel.

    mean_gamma, kept: arrays (classes, channels). Channels are ordered by how often they are kept overall.
    """
    order = np.lexsort((-mean_gamma.mean(axis=0), -kept.mean(axis=0)))  # most often kept, then largest gamma
    classes, channels = mean_gamma.shape
    width = min(max(6.0, channels * 0.06 + 3), 16.0)
    figure, axes = plt.subplots(1, 2, figsize=(2 * width, max(3.0, classes * 0.35 + 1.5)), squeeze=False,
                                layout="constrained")
    panels = ((axes[0, 0], mean_gamma[:, order], "mean gate value (gamma × active)", "viridis", None),
              (axes[0, 1], kept[:, order], "fraction of images keeping the channel", "magma", 1))
    for axis, values, label, colours, top in panels:
        image = axis.imshow(values, aspect="auto", interpolation="nearest", cmap=colours, vmin=0, vmax=top)
        axis.set_xlabel(f"output channel of {layer} ({channels}; most often kept, then largest, first)")
        axis.set_ylabel("class")
        axis.set_yticks(range(classes), labels=class_names)
        figure.colorbar(image, ax=axis, label=label)
    axes[0, 0].set_title("mean gate value per class")
    axes[0, 1].set_title("fraction of images that keep each channel")
    figure.suptitle(f"Which channels fire for which class — layer {layer}\n{subject}")
    return _save(figure, path)


def layer_costs(rows, subject, path):
    """Per layer: dense MACs against effective MACs (log scale), and the weight and gate densities."""
    rows = [row for row in rows if row["macs"]]
    names = [row["name"] for row in rows]
    positions = np.arange(len(rows))
    figure, (macs_axis, density_axis) = plt.subplots(2, 1, figsize=(max(7.0, 0.5 * len(rows) + 3), 8),
                                                     sharex=True, layout="constrained")
    macs_axis.bar(positions - 0.2, [row["macs"] for row in rows], width=0.4, label="dense MACs")
    macs_axis.bar(positions + 0.2, [max(row["effective_macs"], 1) for row in rows], width=0.4,
                  label="effective MACs (masks and gates)")
    macs_axis.set_yscale("log")
    macs_axis.set_ylabel("multiply-accumulates per image (log scale)")
    macs_axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    macs_axis.set_title("MACs per layer")
    weight = [row["weight_density"] if row["weight_density"] is not None else math.nan for row in rows]
    density_axis.bar(positions - 0.2, weight, width=0.4, label="weight density (kept by pruning masks)")
    density_axis.bar(positions + 0.2, [row["out_density"] for row in rows], width=0.4,
                     label="output channel density (kept by gates)")
    density_axis.set_ylim(0, 1.05)
    density_axis.set_ylabel("fraction kept")
    density_axis.set_xticks(positions, labels=names, rotation=60, ha="right")
    density_axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    density_axis.set_title("weight and gate density per layer (no bar: no mask)")
    figure.suptitle(f"Per-layer cost\n{subject}")
    return _save(figure, path)


# The history columns the training curves show: (column, axis label), each on its own axes when present.
CURVES = (("loss", "training loss"), ("top1", "training top-1 accuracy"), ("learning_rate", "learning rate"),
          ("density", "mean gate density"))


def stages(history):
    """The history's rows split where the epoch counter goes back (`reset-num-epochs` starts a new stage), each
    row placed at the epochs trained before it plus its own epoch: [(stage rows, their x positions)]."""
    result, offset, previous = [], 0.0, None
    for row in history:
        if previous is None or row["epoch"] <= previous:
            if result:
                offset += previous
            result.append(([], []))
        result[-1][0].append(row)
        result[-1][1].append(offset + row["epoch"])
        previous = row["epoch"]
    return result


def training_curves(history, subject, path):
    """Loss, top-1, learning rate and gate density per epoch, from the run's history rows; a stage started by
    `reset-num-epochs` continues to the right in its own colour."""
    present = [(key, label) for key, label in CURVES if any(key in row for row in history)]
    parts = stages(history)
    figure, axes = plt.subplots(len(present), 1, figsize=(7, 2.4 * len(present)), sharex=True, squeeze=False,
                                layout="constrained")
    for axis, (key, label) in zip(axes[:, 0], present):
        for number, (rows, positions) in enumerate(parts, start=1):
            points = [(x, row[key]) for x, row in zip(positions, rows) if key in row]
            if points:
                axis.plot(*zip(*points), marker="o", label=f"stage {number}" if len(parts) > 1 else None)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if key in ("top1", "density"):
            axis.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        if key == "density":
            axis.set_ylim(0, 1.05)
    if len(parts) > 1:
        axes[0, 0].legend(fontsize="small")
    axes[-1, 0].set_xlabel("epochs trained" + (" (all stages, in order)" if len(parts) > 1 else ""))
    figure.suptitle(f"Training curves\n{subject}")
    return _save(figure, path)


def accuracy_against_macs(checkpoints, sweep, subject, path):
    """Validation top-1 against effective MACs: this run's checkpoints as labelled points, and a sweep of runs
    (each run's last checkpoint) as a line from the cheapest to the dearest.

    checkpoints: [(effective MACs, top-1, label)]; sweep: [(effective MACs, top-1, run label)].
    """
    figure, axis = plt.subplots(figsize=(7, 5), layout="constrained")
    if checkpoints:
        axis.plot([p[0] for p in checkpoints], [p[1] for p in checkpoints], "o", label="this run's checkpoints")
        for macs, top1, label in checkpoints:
            axis.annotate(label, (macs, top1), textcoords="offset points", xytext=(5, 3), fontsize=8)
    if sweep:
        sweep = sorted(sweep)
        axis.plot([p[0] for p in sweep], [p[1] for p in sweep], "s-", label="runs of the sweep (last checkpoint)")
        for macs, top1, label in sweep:
            axis.annotate(label, (macs, top1), textcoords="offset points", xytext=(5, -10), fontsize=8)
    macs = [p[0] for p in list(checkpoints) + list(sweep)]
    if max(macs) > 1.5 * min(macs):
        axis.set_xscale("log")
        axis.set_xlabel("effective multiply-accumulates per image (log scale)")
    else:  # a log axis over a narrow range labels every minor tick with the same long number
        axis.set_xlim(0.9 * min(macs), 1.1 * max(macs))
        axis.set_xlabel("effective multiply-accumulates per image")
    axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: _short(value)))
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set_ylabel("validation top-1 accuracy")
    axis.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    figure.suptitle(f"Accuracy against cost\n{subject}")
    return _save(figure, path)
