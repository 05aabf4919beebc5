"""The table of source readers, by `dataset.source.type`.

A reader is `reader(dataset, split, search_path) -> SourceExamples`, where `dataset` is the resolved `dataset` section
and `split` is "train" or "validate". Mayo/slim TFRecord files are not a source yet.
"""

from mayo_lite.data.idx_files import read_idx_source
from mayo_lite.data.synthetic import read_synthetic_source
from mayo_lite.data.tfds_builder import read_tfds_source

SOURCES = {
    "idx": read_idx_source,
    "tfds": read_tfds_source,
    "synthetic": read_synthetic_source,
}
