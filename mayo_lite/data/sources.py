"""The table of source readers, by `dataset.source.type`.

A reader is `reader(dataset, split, search_path) -> SourceExamples`, where `dataset` is the resolved `dataset` section
and `split` is "train" or "validate". A reader that reads files in parallel may also take the keyword arguments
`training` and `seed`, and the pipeline then passes them, so it can shuffle its file order as the pipeline shuffles.
"""

from mayo_lite.data.idx_files import read_idx_source
from mayo_lite.data.synthetic import read_synthetic_source
from mayo_lite.data.tfds_builder import read_tfds_source
from mayo_lite.data.tfrecord import read_tfrecord_source

SOURCES = {
    "idx": read_idx_source,
    "tfds": read_tfds_source,
    "synthetic": read_synthetic_source,
    "tfrecord": read_tfrecord_source,
}
