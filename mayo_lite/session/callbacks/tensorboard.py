"""TensorBoard's summaries of a training run."""

import keras


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras' `TensorBoard`, for a model the session trains without `compile`: the learning rate is in the logs
    already, where Keras would look for `model.optimizer` (which an uncompiled model lacks)."""

    def _collect_learning_rate(self, logs):
        return logs
