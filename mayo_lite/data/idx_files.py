"""The `idx` source: MNIST-style IDX files (`train-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`, ...).

A split is small enough to read whole into memory with NumPy. When no directory holds the files, the reader falls
back to the TensorFlow Datasets builder named by `source.tfds`; when that fails too, the one error says where it
looked and how to get the data.
"""

import functools
import gzip
import logging
import os

import numpy as np
import tensorflow as tf

from mayo_lite.data.description import dataset_name, lookup
from mayo_lite.data.examples import SourceExamples
from mayo_lite.data.tfds_builder import TfdsUnavailable, load_tfds_split
from mayo_lite.errors import DataError

logger = logging.getLogger(__name__)

# File-name prefix of each split, as in the original MNIST distribution.
SPLIT_PREFIXES = {"train": "train", "validate": "t10k"}

# The IDX type byte -> big-endian NumPy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Distribution packages that install a dataset's IDX files under /usr/share/datasets.
DEBIAN_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}


def read_idx(path):
    """Parses one IDX file (gzip-compressed when its name ends in `.gz`) into a read-only NumPy array.

    Raises a DataError naming the file when it is unreadable, truncated or not IDX. The session builds a fresh
    training pipeline every epoch (seeded per epoch), so parsed files are kept while they are unchanged on disk.
    """
    try:
        status = os.stat(path)
    except OSError as error:
        raise DataError(f"{path}: cannot read IDX file ({error})") from None
    return _read_idx_unchanged(path, status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=8)
def _read_idx_unchanged(path, mtime_ns, size):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            content = stream.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read IDX file ({error})") from None
    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {content[:4].hex() or 'none'})")
    dtype, ndim = IDX_DTYPES[content[2]], content[3]
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(content) < header_size:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims)) * dtype.itemsize
    found = len(content) - header_size
    if found != expected:
        raise DataError(
            f"{path}: IDX file of shape {dims} should hold {expected} bytes of data, found {found} "
            f"(truncated or corrupt)"
        )
    return np.frombuffer(content, dtype=dtype, offset=header_size).reshape(dims)


def _find_file(directory, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def candidate_directories(dataset, search_path):
    """The directories searched, in order: `source.path` (relative ones under each search-path entry), or else
    `<entry>/<dataset name with - for _>` for each entry."""
    path = lookup(dataset, "source.path", None)
    if path is not None:
        path = os.path.expanduser(str(path))
        if os.path.isabs(path):
            return [path]
        return [os.path.join(entry, path) for entry in search_path]
    folder = dataset_name(dataset).replace("_", "-")
    return [os.path.join(entry, folder) for entry in search_path]


def read_idx_split(directory, split):
    """Images [N, H, W, C] and labels [N] of `split` from `directory`, or None when it holds no images file."""
    prefix = SPLIT_PREFIXES[split]
    images_path = _find_file(directory, f"{prefix}-images-idx3-ubyte")
    if images_path is None:
        return None
    labels_path = _find_file(directory, f"{prefix}-labels-idx1-ubyte")
    if labels_path is None:
        raise DataError(f"{directory}: has {os.path.basename(images_path)} but no {prefix}-labels-idx1-ubyte[.gz]")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or labels.ndim != 1:
        raise DataError(
            f"{images_path}: expected images of shape [N, H, W] or [N, H, W, C] and labels of shape [N], "
            f"found {list(images.shape)} and {list(labels.shape)}"
        )
    if len(images) != len(labels):
        raise DataError(f"{directory}: {len(images)} images but {len(labels)} labels for the {split} split")
    return images, labels


def read_idx_source(dataset, split, search_path):
    """The `idx` source reader (see the module docstring)."""
    directories = candidate_directories(dataset, search_path)
    for directory in directories:
        arrays = read_idx_split(directory, split)
        if arrays is not None:
            images, labels = arrays
            if images.dtype != np.uint8:  # other IDX types are taken as intensities in [0, 1] already
                images = images.astype(np.float32)
            examples = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
            return SourceExamples(examples, in_memory=True, origin=f"IDX files in {directory}")
    name = dataset_name(dataset)
    builder = lookup(dataset, "source.tfds", None)
    looked = f"{name}: no IDX files in {', '.join(directories)}"
    if builder is None:
        raise DataError(f"{looked}; {_how_to_get(name, tfds=False)}")
    logger.info("%s; trying TensorFlow Datasets '%s'", looked, builder)
    try:
        return load_tfds_split(dataset, split)
    except TfdsUnavailable as error:
        raise DataError(
            f"{looked}, and TensorFlow Datasets could not load '{builder}' from {error.data_dir} ({error.reason}); "
            f"{_how_to_get(name, tfds=True)}"
        ) from None


def _how_to_get(name, tfds):
    ways = []
    if name in DEBIAN_PACKAGES:
        ways.append(f"install them with 'apt-get install {DEBIAN_PACKAGES[name]}'")
    else:
        ways.append("put the IDX files in one of those directories")
    ways.append("set dataset.source.path")
    if tfds:
        ways.append("give TensorFlow Datasets network access")
    return ", ".join(ways[:-1]) + ", or " + ways[-1]
