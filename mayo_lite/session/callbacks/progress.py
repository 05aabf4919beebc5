"""The progress of training: Keras' `Progbar`, one per epoch."""

import logging

import keras

from mayo_lite.session.epochs import epoch_text

log = logging.getLogger("mayo_lite")

# Figures the progress bar shows; the others (per-layer densities) go to the logs only.
SHOWN = ("loss", "top1", "density", "learning_rate")


class ProgressBar(keras.callbacks.Callback):
    """Keras' `Progbar`, one per epoch, starting where a resumed epoch starts."""

    def on_epoch_begin(self, epoch, logs=None):
        self.bar = keras.utils.Progbar(self.params["steps"], stateful_metrics=list(SHOWN))
        log.info("epoch %d/%s", epoch + 1, epoch_text(self.params["epochs"]))

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(batch, [(name, logs[name]) for name in SHOWN if name in logs])
