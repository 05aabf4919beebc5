"""TensorBoard's summaries of a training run."""

import logging
from pathlib import Path

import keras
import tensorflow as tf

from mayo_lite.errors import OutputError
from mayo_lite.session.stopping import LoopCallback

log = logging.getLogger("mayo_lite")


class TensorBoard(LoopCallback, keras.callbacks.TensorBoard):
    """Keras' `TensorBoard`, for a model the session trains without `compile` (the learning rate is in the logs
    already, where Keras would look for `model.optimizer`, which an uncompiled model lacks), that leaves nothing
    behind for a run that produced nothing: when its writer cannot start (a full disk) the error is one line and
    the directories it made are gone, and when training fails (a diverged loss) the event files of this run are
    removed. Files of earlier runs in the same directory are kept. A write that fails later (the disk filled during
    the run) stops the log with one warning, not the training: the summaries are a by-product, the checkpoints are
    not. It writes each epoch's logs, and no graph.

    Args:
        log_dir: the run's TensorBoard directory (`system.log.tensorboard`).
    """

    def __init__(self, log_dir):
        super().__init__(log_dir, write_graph=False, update_freq="epoch")
        self._before = None
        self._stopped = False

    def _collect_learning_rate(self, logs):
        return logs

    def on_train_begin(self, logs=None):
        self._before = _tree(Path(self.log_dir))
        try:
            super().on_train_begin(logs)
        except (OSError, tf.errors.OpError) as error:
            self._writers = {}
            self._remove_new()
            raise OutputError(f"cannot write the TensorBoard log in {self.log_dir}: {_reason(error)}; free space "
                              "there or set system.log.tensorboard=null") from None

    def _guarded(self, write, *args):
        if self._stopped:
            return
        try:
            write(*args)
        except (OSError, tf.errors.OpError) as error:
            self._stopped = True
            self._writers = {}  # dropped unclosed: closing would retry the events that failed
            log.warning("TensorBoard: cannot write to %s (%s); training goes on without its TensorBoard log",
                        self.log_dir, _reason(error))

    def on_epoch_end(self, epoch, logs=None):
        self._guarded(super().on_epoch_end, epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        # Keras writes per-batch scalars to the default writer, which a failed flush can leave set (measured on a
        # full tmpfs: the next step raised ResourceExhaustedError).
        self._guarded(super().on_train_batch_end, batch, logs)

    def on_train_end(self, logs=None):
        self._guarded(super().on_train_end, logs)

    def on_train_failure(self, error):
        for writer in self._writers.values():
            try:
                writer.close()
            except (OSError, tf.errors.OpError):
                pass
        self._writers = {}
        self._remove_new()

    def _remove_new(self):
        """Removes the files under the log directory, and the (then empty) directories there, the log directory and
        its parents, that were not there when training began, the deepest first."""
        found = sorted(_tree(Path(self.log_dir)) - self._before, key=lambda path: len(path.parts), reverse=True)
        for path in found:
            if path.is_file() or path.is_symlink():
                path.unlink(missing_ok=True)
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def _reason(error):
    """The cause of a failed write in a few words ("No space left on device"), without TensorFlow's op names."""
    reason = getattr(error, "strerror", None) or str(getattr(error, "message", error)).splitlines()[0]
    return reason.rsplit("; ", 1)[-1][:160]


def _tree(directory):
    """Every path under `directory`, the directory itself and its existing parents, as a set."""
    found = {parent for parent in (directory, *directory.parents) if parent.exists()}
    if directory.is_dir():
        found.update(directory.rglob("*"))
    return found
