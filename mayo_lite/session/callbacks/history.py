"""The CSV history of a training run."""

import csv
from pathlib import Path

import keras


class History(keras.callbacks.Callback):
    """One CSV row per trained epoch: the epoch counter, then the epoch's figures, appended and closed each time.

    Written here rather than with Keras' `CSVLogger`, which adds a `val_` column for every figure when there is no
    validation, repeats `epoch`, and opens its file when training starts (a run refused or stopped before an epoch
    ends should leave no file).

    Args:
        filename: the CSV file (`system.log.history`), created with its header at the first row.
    """

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
