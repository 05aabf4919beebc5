"""What every source reader returns: the examples of one split, before any preprocessing."""

from typing import NamedTuple

import tensorflow as tf


class SourceExamples(NamedTuple):
    """One split as read from its source.

    Attributes:
        dataset: a `tf.data.Dataset` of (image, integer label) or (image, integer label, boxes [N, 4] of ymin, xmin,
            ymax, xmax in [0, 1]), in file order; the image is [H, W, C] uint8 or float32 in [0, 1], or encoded
            JPEG/PNG bytes that the pipeline decodes after shuffling (so a shuffle buffer holds compressed images).
        in_memory: True when the examples are already held in memory (caching them again would only cost memory).
        origin: where they came from, for the log (`IDX files in /usr/share/datasets/fashion-mnist`).
    """

    dataset: tf.data.Dataset
    in_memory: bool
    origin: str
