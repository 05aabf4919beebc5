"""Stopping on a NaN or infinite loss, with a message that says where."""

import math

import keras

from mayo_lite.errors import UserError


class DivergedError(UserError):
    """The loss became NaN or infinite; training stopped without saving it."""


class Divergence(keras.callbacks.Callback):
    """Stops with `DivergedError` when the loss becomes NaN or infinite. Keras' `TerminateOnNaN` only stops; this
    also says where, and nothing is saved (the error skips the checkpoint callbacks)."""

    def on_train_batch_end(self, batch, logs=None):
        total = logs["total_loss"]
        if not math.isfinite(total):
            raise DivergedError(
                f"training diverged: the loss became {total} at epoch {logs['epoch']:.3f} (step {batch} of epoch "
                f"{int(logs['epoch'] - 1e-9) + 1}); nothing of it was saved, the last good checkpoint is kept")
