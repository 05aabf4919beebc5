"""The `synthetic` source: random images of the declared shape and random labels, for smoke tests.

The examples depend only on `source.seed` (default 0) and the split, never on the pipeline seed, so every run and
every epoch sees the same data; only their order and augmentation follow the pipeline seed.
"""

import numpy as np
import tensorflow as tf

from mayo_lite.data.description import (
    SPLITS,
    background,
    bad_value,
    lookup,
    positive_int,
    task_shape,
)
from mayo_lite.data.examples import SourceExamples


def read_synthetic_source(dataset, split, search_path):
    """Uniform [0, 1] float32 images and uniform labels; `num_examples_per_epoch.<split>` of them."""
    seed = lookup(dataset, "source.seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise bad_value("source.seed", "an integer ≥ 0", seed)
    count = positive_int(dataset, f"num_examples_per_epoch.{split}")
    generator = np.random.default_rng([seed, SPLITS.index(split)])
    images = generator.random((count, *task_shape(dataset)), dtype=np.float32)
    # Labels as a source stores them: from 1 when `background_class.has` (class 0 is the background), in
    # [0, task.num_classes) otherwise; the pipeline then shifts them by `use - has`.
    labels = generator.integers(background(dataset, "has"), positive_int(dataset, "task.num_classes"), size=count,
                                dtype=np.int32)
    examples = tf.data.Dataset.from_tensor_slices((images, labels))
    return SourceExamples(examples, in_memory=True, origin=f"synthetic data (seed {seed})")
