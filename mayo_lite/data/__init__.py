"""The data room: reads a dataset from its source (slim/Mayo TFRecord shards, IDX files, TensorFlow Datasets,
synthetic) and applies the named preprocessing steps in a `tf.data` pipeline for the session.

    from mayo_lite.data import make_dataset, num_examples
    batches = make_dataset(config["dataset"], "train", batch_size=128, training=True, seed=1)
"""

from mayo_lite.data.pipeline import make_dataset, num_examples
from mayo_lite.data.preprocess import PREPROCESS_STEPS
from mayo_lite.data.sources import SOURCES

__all__ = ["PREPROCESS_STEPS", "SOURCES", "make_dataset", "num_examples"]
