"""What the loops do with the data's batches: how many an epoch has, joining a last batch too short to give every
replica an example, counting top-1 and top-5 hits, and turning TensorFlow's errors about bad data into one line
that names the dataset."""

import contextlib
import math
import re

import tensorflow as tf

from mayo_lite.errors import DataError

TOP_K = 5


@contextlib.contextmanager
def data_errors(session, split):
    """Turns what bad data makes TensorFlow raise during a step or in the input pipeline into a DataError naming
    the dataset: a label outside [0, num_classes) (Mayo's 1-based records without `background_class`, a wrong
    `num_classes`), unreadable records."""
    try:
        yield
    except tf.errors.OpError as error:
        if "Collective" in str(error.message):  # the replicas' all-reduce failed: not the data's fault
            raise
        lines = [line.strip() for line in str(error.message).splitlines() if line.strip()]
        name = session.dataset.get("name")
        source = (session.dataset.get("source") or {}).get("path") if isinstance(session.dataset, dict) else None
        where = f"dataset {name}" + (f" ({source})" if source else "")
        label = re.search(r"label value of (-?\d+) which is outside the valid range of \[0, (\d+)\)",
                          str(error.message))
        if label:
            origin = session.cfg.origin("dataset.task.num_classes")
            raise DataError(f"{where}: a {split} label is outside [0, num_classes): label {label.group(1)} with "
                            f"{label.group(2)} outputs; check dataset.task.num_classes and background_class "
                            f"{{has, use}} (outputs = num_classes + use − has)" + (f" in {origin}" if origin else "")
                            ) from error
        message = next((line for line in lines if not line.startswith(("Graph execution error", "Detected at"))),
                       lines[0] if lines else type(error).__name__)
        if isinstance(error, (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError)):
            raise DataError(f"{where}: reading the {split} split failed: {message[:200]}") from error
        raise


def leaves_a_replica_empty(size, replicas):
    """Whether a batch of `size` examples (an int or a tensor) leaves a replica without any (0 leaves none)."""
    return (size + replicas - 1) // replicas * (replicas - 1) >= size


def batches_per_epoch(examples, batch_size, replicas):
    """(batches read, batches stepped through): `no_empty_replicas` may join the last two."""
    read = math.ceil(examples / batch_size)
    last = examples - (read - 1) * batch_size
    return read, read - 1 if read > 1 and leaves_a_replica_empty(last, replicas) else read


def no_empty_replicas(dataset, replicas):
    """`dataset`'s batches, with a last batch that would leave a replica empty joined to the batch before it.

    `experimental_distribute_dataset` gives a batch of n examples `ceil(n / replicas)` per replica, in replica order,
    so a short last batch (1 example on 2 replicas, 5 on 4) leaves some replica none, and TensorFlow's CPU
    convolutions fail on an empty batch ("input depth must be evenly divisible by filter depth"). One device steps
    through both batches; the replicas take them as one. The look-ahead is a `scan` holding one batch back, with an
    empty batch appended to flush it, so the data are read once, in order.
    """
    if replicas == 1:
        return dataset
    empty = tf.nest.map_structure(lambda spec: tf.zeros([0, *spec.shape[1:]], spec.dtype), dataset.element_spec)

    def hold_back(pending, batch):
        joined = tf.nest.map_structure(lambda first, second: tf.concat([first, second], 0), pending, batch)
        short = leaves_a_replica_empty(tf.shape(tf.nest.flatten(batch)[0])[0], replicas)
        return tf.cond(short, lambda: (empty, joined), lambda: (batch, pending))
    flushed = dataset.concatenate(tf.data.Dataset.from_tensors(empty)).scan(empty, hold_back)
    return flushed.filter(lambda *batch: tf.shape(tf.nest.flatten(batch)[0])[0] > 0)


def counts(labels, logits, num_classes):
    labels = tf.cast(labels, tf.int32)
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    top1 = tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float64))
    k = min(TOP_K, num_classes)
    top5 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, tf.cast(logits, tf.float32), k), tf.float64))
    return top1, top5
