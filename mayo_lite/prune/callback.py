"""Gradual pruning while a model trains, as a Keras callback: the runner's `train` and `model.fit` both use it."""

import logging
import math

import keras
import numpy as np

from mayo_lite.errors import ArgumentError
from mayo_lite.prune.arguments import choice
from mayo_lite.prune.masks import prune_model
from mayo_lite.prune.saliency import GRANULARITIES, KERNEL_SALIENCIES
from mayo_lite.prune.schedule import PruneSchedule, parse_schedule
from mayo_lite.prune.selection import prunable_layers
from mayo_lite.prune.surgery import check_regrowable, set_regrow, update_masks
from mayo_lite.prune.thresholds import SCOPES

log = logging.getLogger("mayo_lite")
absl_log = logging.getLogger("absl")


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

    A `surgery` schedule (dynamic network surgery) prunes no fraction: the selected layers train in regrow mode
    (pruned weights keep learning; see `MaskedConv2D.regrow`) from the first epoch at or before its `end`, and
    every `frequency` steps from `begin` to `end` each layer's mask is updated from its own weights
    (`mayo_lite.prune.surgery.surgery_mask`). Once past `end`, and when training ends, the masks are folded into
    the kernels: pruned weights are exactly zero and stay so, for export and fine-tuning. Surgery works weight by
    weight in each layer, so `granularity`, `saliency` and `scope` do not apply.

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
            `final + (initial − final)·(1 − progress)^power` with progress going from 0 at `begin` to 1 at `end`,
            or `{"type": "surgery", "alpha": a}` (optional `on_factor` 1.1, `off_factor` 0.9, `begin` 0, `end`
            unbounded, `frequency` 100), which updates each layer's mask to `(mask or |w| > on_factor·t) and
            |w| > off_factor·t` with `t = mean(|w|) + alpha·std(|w|)` over the layer's kernel.
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
        self.regrowing = False
        self._layers = []
        self._epoch = 0
        self._step = 0

    def on_train_begin(self, logs=None):
        # Before the first step, so that a model without masks fails at once rather than after `frequency` steps.
        self._layers = prunable_layers(self.model, self.arguments["layers"])
        if not self._layers:
            raise ArgumentError("model", "a model with masked layers (`mayo_lite.prune.add_masks(model)` gives "
                                              "any Keras model masks)", self.model.name)
        if self.schedule.surgery:
            check_regrowable(self._layers)
        optimizer = getattr(self.model, "optimizer", None)
        self._step = int(keras.ops.convert_to_numpy(optimizer.iterations)) if optimizer is not None else 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.schedule.surgery and not self.regrowing and epoch <= self.schedule.settings["end"]:
            self._set_regrow(True)

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
        if self.regrowing and epoch + 1 >= (self.params or {}).get("epochs", math.inf) - 1e-9:
            # The last epoch: folded now, so that the checkpoint callbacks after this one save zeros.
            self._set_regrow(False)
            self._say(f"epoch {epoch + 1}: training ends; surgery's masks folded into the kernels")
        if logs is not None and self._layers:
            logs["pruned"] = pruned_fraction(self._layers)

    def on_train_end(self, logs=None):
        if self.regrowing:  # training stopped early
            self._set_regrow(False)

    def _set_regrow(self, regrow):
        set_regrow(self._layers, regrow)
        self.regrowing = regrow
        if regrow and getattr(self.model, "train_function", None) is not None:
            # `fit` made its step before this callback ran and may have traced it with the layers out of regrow
            # mode (an earlier `fit`); a new one traces with them in it. (The runner traces after this.)
            self.model.make_train_function(force=True)

    def prune(self, step, epoch):
        """Prunes the model to the schedule's fraction at `epoch` when `step` is due; returns the report or None.
        With a surgery schedule: updates the masks when due (returns a `SurgeryUpdate`), or folds them once past
        its end."""
        if self.schedule.surgery:
            return self._surgery(step, epoch)
        if not self.schedule.due(step, epoch):
            return None
        percent = min(self.schedule.percent(epoch), math.nextafter(1.0, 0.0))
        if percent == self.last_percent:
            return None
        report = prune_model(self.model, **{**self.arguments, "percent": percent})
        self.last_percent = percent
        message = (f"step {step}, epoch {epoch:.3f}: pruned to {100 * report.ratio:.2f}% of the selected weights "
                   f"({report.pruned} of {report.total})")
        self._say(message)
        return report

    def _surgery(self, step, epoch):
        settings = self.schedule.settings
        if epoch > settings["end"]:
            if self.regrowing:
                self._set_regrow(False)
                self._say(f"step {step}, epoch {epoch:.3f}: surgery ended; masks folded into the kernels")
            return None
        if not self.schedule.due(step, epoch):
            return None
        update = update_masks(self._layers, settings["alpha"], settings["on_factor"], settings["off_factor"])
        self._say(f"step {step}, epoch {epoch:.3f}: surgery: {100 * update.ratio:.2f}% of the selected weights "
                  f"pruned ({update.pruned} of {update.total}; {update.spliced} spliced back, {update.cut} cut)")
        return update

    def _say(self, message):
        log.info(message)
        if self.verbose:
            # As Keras' own callbacks print (its `print_msg` is private): to stdout when its interactive logging is
            # on, else through absl's log, as a script's `fit` would.
            if keras.config.is_interactive_logging_enabled():
                print(message, flush=True)
            else:
                absl_log.info(message)
