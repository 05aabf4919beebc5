"""The Keras callbacks that drive a session's training loop: the progress bar, divergence, checkpoints and gradual
pruning, beside TensorBoard, the CSV history and any callback a trainer lists in `train.callbacks`.

The loop is the session's own distributed step (`mayo_lite.session.loop`), not `Model.fit`, but it calls a
`keras.callbacks.CallbackList` exactly as `fit` does — `on_train_begin`, `on_epoch_begin`, `on_train_batch_end`
with the step's logs, `on_epoch_end` with the epoch's — so any Keras callback works with it. Batch logs hold the
running means of the epoch so far; `step` (global, from 1) and `epoch` (the float counter) come with them.
"""

import csv
import logging
import math
from pathlib import Path

import keras

from mayo_lite import registry
from mayo_lite.errors import ConfigError, UserError
from mayo_lite.files import output_path
from mayo_lite.quantize import QuantizerUpdate, quantizer_layers
from mayo_lite.weights.checkpoint import epoch_name

log = logging.getLogger("mayo_lite")

# Figures the progress bar shows; the others (per-layer densities) go to the logs only.
SHOWN = ("loss", "top1", "density", "learning_rate")


class DivergedError(UserError):
    """The loss became NaN or infinite; training stopped without saving it."""


class ProgressBar(keras.callbacks.Callback):
    """Keras' `Progbar`, one per epoch, starting where a resumed epoch starts."""

    def on_epoch_begin(self, epoch, logs=None):
        self.bar = keras.utils.Progbar(self.params["steps"], stateful_metrics=list(SHOWN))
        log.info("epoch %d/%s", epoch + 1, epoch_text(self.params["epochs"]))

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(batch, [(name, logs[name]) for name in SHOWN if name in logs])


class Divergence(keras.callbacks.Callback):
    """Stops with `DivergedError` when the loss becomes NaN or infinite. Keras' `TerminateOnNaN` only stops; this
    also says where, and nothing is saved (the error skips the checkpoint callbacks)."""

    def on_train_batch_end(self, batch, logs=None):
        total = logs["total_loss"]
        if not math.isfinite(total):
            raise DivergedError(
                f"training diverged: the loss became {total} at epoch {logs['epoch']:.3f} (step {batch} of epoch "
                f"{int(logs['epoch'] - 1e-9) + 1}); nothing of it was saved, the last good checkpoint is kept")


class Checkpoints(keras.callbacks.Callback):
    """`latest` after every epoch and on a stop request; `epoch-N` every `interval` epochs, the newest `keep` kept."""

    def __init__(self, session, interval, keep):
        super().__init__()
        self.session, self.interval, self.keep = session, interval, keep

    def on_epoch_end(self, epoch, logs=None):
        counter = logs["epoch"]
        if self.interval and float(counter).is_integer() and int(counter) % int(self.interval) == 0:
            self.session.save(epoch_name(counter))
            if self.keep:
                self.session.store.prune_numbered(int(self.keep))
        self.session.save("latest")

    def on_stop_request(self, logs=None):
        self.session.save("latest")


class History(keras.callbacks.Callback):
    """One CSV row per trained epoch: the epoch counter, then the epoch's figures, appended and closed each time.

    Written here rather than with Keras' `CSVLogger`, which adds a `val_` column for every figure when there is no
    validation, repeats `epoch`, and opens its file when training starts (a run refused or stopped before an epoch
    ends should leave no file)."""

    def __init__(self, filename):
        super().__init__()
        self.filename = Path(filename)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": logs["epoch"], **{key: value for key, value in sorted(logs.items()) if key != "epoch"}}
        new = not self.filename.exists() or self.filename.stat().st_size == 0
        self.filename.parent.mkdir(parents=True, exist_ok=True)
        with open(self.filename, "a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(row), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras' `TensorBoard`, for a model the session trains without `compile`: the learning rate is in the logs
    already, where Keras would look for `model.optimizer` (which an uncompiled model lacks)."""

    def _collect_learning_rate(self, logs):
        return logs


def from_config(cfg, settings, session, gradual=None):
    """The callbacks of a `train` action, in the order they run: the progress bar, divergence, gradual pruning,
    the quantizers' updates (Mayo's overriders-update, when the model has quantizers), the config's own (`train.callbacks`), checkpoints, TensorBoard (`system.log.tensorboard`) and the CSV history
    (`system.log.history`); on a worker other than the chief of a multi-worker run, these write to its scratch
    directory (`mayo_lite.files.output_path`)."""
    callbacks = [ProgressBar(), Divergence()]
    if gradual is not None:
        callbacks.append(gradual)
    if any(quantizer_layers(session.model)):
        callbacks.append(QuantizerUpdate())
    callbacks += user_callbacks(cfg)
    callbacks.append(Checkpoints(session, settings.save_interval, settings.save_keep))
    if settings.tensorboard is not None:
        callbacks.append(TensorBoard(str(output_path(settings.tensorboard)), write_graph=False,
                                     update_freq="epoch"))
    if settings.history is not None:
        callbacks.append(History(output_path(settings.history)))
    return callbacks


def user_callbacks(cfg):
    """`train.callbacks`: a list of callback specs (`{type: EarlyStopping, monitor: loss, patience: 2}`)."""
    specs = cfg.get("train.callbacks", None) or []
    if not isinstance(specs, list):
        raise ConfigError(f"{cfg.where('train.callbacks')}: expected a list of callback specs, got {specs!r}")
    return [registry.build("callback", spec, f"{cfg.where('train.callbacks')}.{index}")
            for index, spec in enumerate(specs)]


def epoch_text(epoch):
    return str(int(epoch)) if float(epoch).is_integer() else f"{epoch:.3f}"
