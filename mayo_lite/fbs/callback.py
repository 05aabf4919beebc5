"""Gate densities in the logs of `model.fit`, where the progress bar, TensorBoard and `CSVLogger` pick them up."""

import keras
import numpy as np

from mayo_lite.layers import gated_layers


class GateDensities(keras.callbacks.Callback):
    """Adds the fraction of output channels the gates keep to the training logs.

    After each training batch the logs get `density` (as the runner names it), the epoch's running mean over all
    gated layers (weighted by their channels), and with `per_layer=True` also `density/<layer name>` for each gated layer; at
    the end of the epoch they hold the epoch's means. Place it before any callback that should see them
    (Keras' own progress bar always comes last).

    Example:

    ```python
    gated.fit(x, y, epochs=2, callbacks=[mayo_lite.fbs.GateDensities()])
    ```

    Args:
        per_layer: also report each gated layer's density.
    """

    def __init__(self, per_layer=False):
        super().__init__()
        self.per_layer = per_layer
        self._layers = []
        self._sums = None
        self._batches = 0

    def on_train_begin(self, logs=None):
        self._layers = list(gated_layers(self.model))
        if not self._layers:
            raise ValueError(f"GateDensities: model {self.model.name!r} has no GatedConv2D layer "
                             f"(mayo_lite.fbs.add_gates gates a Keras model)")

    def on_epoch_begin(self, epoch, logs=None):
        self._sums = np.zeros(len(self._layers))
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        if self._sums is None:
            self.on_epoch_begin(0)
        self._sums += [float(keras.ops.convert_to_numpy(layer.last_density)) for layer in self._layers]
        self._batches += 1
        if logs is not None:
            logs.update(self._figures())

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._batches:
            logs.update(self._figures())

    def _figures(self):
        means = self._sums / self._batches
        channels = np.array([layer.filters for layer in self._layers], dtype=np.float64)
        figures = {"density": float(np.sum(means * channels) / np.sum(channels))}
        if self.per_layer:
            figures.update({f"density/{layer.name}": float(mean) for layer, mean in zip(self._layers, means)})
        return figures
