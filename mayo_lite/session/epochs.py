"""The epoch counter of a session, and how an epoch is written in messages."""

import tensorflow as tf


class EpochCounter:
    """Mayo's float epoch counter: examples seen / examples per epoch; drives the schedule and max_epochs.

    Float64, because a float32 counter drifts by whole steps over a long run of tiny increments.
    """

    def __init__(self):
        self.variable = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="epoch",
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    @property
    def value(self):
        return float(self.variable.numpy())

    def assign(self, value):
        self.variable.assign(float(value))


def epoch_text(epoch):
    """`3` for a whole epoch, `2.517` otherwise."""
    return str(int(epoch)) if float(epoch).is_integer() else f"{epoch:.3f}"
