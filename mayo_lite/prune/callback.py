"""Gradual pruning while a model trains, as a Keras callback: the runner's `train` and `model.fit` both use it."""

import logging
import math

import keras
import numpy as np

from mayo_lite.prune.arguments import PruneArgumentError, choice
from mayo_lite.prune.masks import prune_model
from mayo_lite.prune.saliency import GRANULARITIES, KERNEL_SALIENCIES
from mayo_lite.prune.schedule import PruneSchedule, parse_schedule
from mayo_lite.prune.selection import prunable_layers
from mayo_lite.prune.thresholds import SCOPES

log = logging.getLogger("mayo_lite")


def pruned_fraction(layers):
    """The fraction of the weights of `layers` (masked layers) that their masks prune."""
    masks = [keras.ops.convert_to_numpy(layer.mask) for layer in layers]
    total = sum(mask.size for mask in masks)
    return float(1.0 - sum(np.count_nonzero(mask) for mask in masks) / total) if total else 0.0


class GradualPruning(keras.callbacks.Callback):
    """Prunes a model while it trains, to a fraction that follows a schedule of the training progress.

    Every `frequency` training steps while the schedule is active, the callback calls `prune_model` with the
    schedule's current fraction: masks only ever grow, and `prune_model` counts the weights pruned before, so
    the model holds exactly that fraction of pruned weights afterwards. Between prunings the masked layers keep
    pruned weights at exactly zero whatever the optimizer does (their kernels carry a `MaskConstraint`).

    Progress is counted in epochs, fractional within an epoch (`epoch + batches done / steps per epoch`), as the
    runner's `prune.schedule` counts it; steps are the optimizer's (`model.optimizer.iterations`), so a resumed
    `fit(initial_epoch=...)` continues the schedule. With `fit(steps_per_epoch=None)` on a dataset of unknown
    length, progress moves only at epoch boundaries. At the end of every epoch the logs get `pruned`, the
    fraction of the selected weights that is pruned (TensorBoard and `CSVLogger` record it).

    Example:

    ```python
    masked = mayo_lite.prune.add_masks(model)
    masked.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    schedule = {"type": "polynomial", "initial": 0.0, "final": 0.8, "begin": 0, "end": 3, "frequency": 50}
    masked.fit(x, y, epochs=4, callbacks=[mayo_lite.prune.GradualPruning(schedule)])
    ```

    Args:
        schedule: a mapping, as the runner's `prune.schedule`: `{"type": "constant", "percent": p}` (with optional
            `begin`, `end` in epochs and `frequency` in steps, default 100), or `{"type": "polynomial", "final": f,
            "end": e}` (optional `initial` 0, `begin` 0, `power` 3, `frequency` 100), which prunes
            `final + (initial − final)·(1 − progress)^power` with progress going from 0 at `begin` to 1 at `end`.
        granularity, saliency, scope, layers: as for `prune_model`.
        verbose: 1 prints a line at each pruning, 0 only logs it (logger `mayo_lite`, level INFO).
    """

    def __init__(self, schedule, granularity="kernel", saliency="max", scope="global", layers=None, verbose=0):
        super().__init__()
        self.schedule = schedule if isinstance(schedule, PruneSchedule) else parse_schedule(schedule)
        self.arguments = {"granularity": choice("granularity", granularity, GRANULARITIES),
                          "saliency": choice("saliency", saliency, KERNEL_SALIENCIES),
                          "scope": choice("scope", scope, SCOPES), "layers": layers}
        self.verbose = verbose
        self.last_percent = None
        self._layers = []
        self._epoch = 0
        self._step = 0

    def on_train_begin(self, logs=None):
        # Before the first step, so that a model without masks fails at once rather than after `frequency` steps.
        self._layers = prunable_layers(self.model, self.arguments["layers"])
        if not self._layers:
            raise PruneArgumentError("model", "a model with masked layers (`mayo_lite.prune.add_masks(model)` gives "
                                              "any Keras model masks)", self.model.name)
        optimizer = getattr(self.model, "optimizer", None)
        self._step = int(keras.ops.convert_to_numpy(optimizer.iterations)) if optimizer is not None else 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs if logs is not None else {}
        if "step" in logs and "epoch" in logs:  # the runner's loop counts both, across resumed runs
            step, epoch = logs["step"], logs["epoch"]
        else:
            self._step += 1
            steps = (self.params or {}).get("steps")
            step, epoch = self._step, self._epoch + ((batch + 1) / steps if steps else 0.0)
        self.prune(step, epoch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._layers:
            logs["pruned"] = pruned_fraction(self._layers)

    def prune(self, step, epoch):
        """Prunes the model to the schedule's fraction at `epoch` when `step` is due; returns the report or None."""
        if not self.schedule.due(step, epoch):
            return None
        percent = min(self.schedule.percent(epoch), math.nextafter(1.0, 0.0))
        if percent == self.last_percent:
            return None
        report = prune_model(self.model, **{**self.arguments, "percent": percent})
        self.last_percent = percent
        message = (f"step {step}, epoch {epoch:.3f}: pruned to {100 * report.ratio:.2f}% of the selected weights "
                   f"({report.pruned} of {report.total})")
        log.info(message)
        if self.verbose:
            keras.utils.io_utils.print_msg(message)
        return report
