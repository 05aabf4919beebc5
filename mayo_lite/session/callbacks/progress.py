"""The progress of training: Keras' `Progbar`, one per epoch."""

import logging
import sys

import keras

from mayo_lite.session.epochs import epoch_text

log = logging.getLogger("mayo_lite")

# Figures the progress bar shows; the others (per-layer densities) go to the logs only.
SHOWN = ("loss", "top1", "density", "learning_rate")


def bar_verbosity():
    """Keras' `Progbar` verbosity for this process's output: the live bar (1) on a terminal, one line when the bar is
    done (2, as `fit(verbose=2)`) for a log file, a pipe, nohup or CI. Decided here because Keras 3's `Progbar`
    takes any POSIX system for a live display and writes every step, with escape codes, into a log."""
    return 1 if getattr(sys.stdout, "isatty", lambda: False)() else 2


class ProgressBar(keras.callbacks.Callback):
    """Keras' `Progbar`, one per epoch, starting where a resumed epoch starts: live on a terminal, else one line per
    epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.bar = keras.utils.Progbar(self.params["steps"], stateful_metrics=list(SHOWN), verbose=bar_verbosity())
        log.info("epoch %d/%s", epoch + 1, epoch_text(self.params["epochs"]))

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(batch, [(name, logs[name]) for name in SHOWN if name in logs])
