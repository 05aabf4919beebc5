"""The `tfrecord` source: Mayo/slim-style ImageNet TFRecord shards (`imagenet/train-00000-of-01024`, ...).

Each record is a `tf.train.Example` as slim's `build_imagenet_data.py` writes it: `image/encoded` (JPEG bytes),
`image/class/label` (1..1000; 0 is slim's background class) and the object boxes `image/object/bbox/{xmin, ymin,
xmax, ymax}` (often empty). The shards of `dataset.path.<split>` are read interleaved and parsed in parallel into
(encoded image, label, boxes); the pipeline (`pipeline.py`) shuffles them still compressed and decodes them in its
own parallel map, so its shuffle buffer holds JPEG bytes rather than decoded images. Labels come out as stored;
the pipeline shifts them by Mayo's `task.background_class` rule (`use − has`: slim's ImageNet records have the
background class, Mayo's CIFAR and MNIST records do not).
"""

import functools
import logging
import os

import tensorflow as tf
from google.protobuf.message import DecodeError

from mayo_lite.data.description import bad_value, dataset_name, lookup
from mayo_lite.data.examples import SourceExamples
from mayo_lite.errors import DataError

logger = logging.getLogger(__name__)

# The features every record must have, with the `tf.train.Feature` list kind each is stored as.
REQUIRED_FEATURES = {
    "image/encoded": (tf.io.FixedLenFeature([], tf.string), "bytes_list"),
    "image/class/label": (tf.io.FixedLenFeature([], tf.int64), "int64_list"),
}

# In the order `tf.image.sample_distorted_bounding_box` takes a box: ymin, xmin, ymax, xmax, in [0, 1].
BOX_FEATURES = tuple(f"image/object/bbox/{side}" for side in ("ymin", "xmin", "ymax", "xmax"))

# Shards read at the same time; slim's ImageNet has 1024 training and 128 validation shards of about 140 MB.
PARALLEL_SHARDS = 16

# Read-ahead per shard, in bytes: a few records of about 110 KB each.
SHARD_BUFFER_BYTES = 8 * 1024**2


def candidate_patterns(dataset, split, search_path):
    """The globs tried, in order: `dataset.path.<split>` as is when absolute, else under each search-path entry."""
    pattern = lookup(dataset, f"path.{split}")
    if not isinstance(pattern, str) or not pattern:
        raise bad_value(f"path.{split}", "a file glob such as 'imagenet/train-*'", pattern)
    pattern = os.path.expanduser(pattern)
    if os.path.isabs(pattern) or "://" in pattern:
        return [pattern]
    return [os.path.join(entry, pattern) for entry in search_path]


def _find_shards(dataset, split, search_path):
    """The first candidate pattern that matches files, and its files in sorted order."""
    patterns = candidate_patterns(dataset, split, search_path)
    for pattern in patterns:
        files = sorted(tf.io.gfile.glob(pattern))
        if files:
            return pattern, files
    raise DataError(
        f"{dataset_name(dataset)}: no TFRecord files for the {split} split match {', '.join(patterns)}; "
        f"convert the ILSVRC2012 archives from image-net.org into slim-style shards with build_imagenet_data.py "
        f"of tensorflow/models (research/slim/datasets/download_and_convert_imagenet.sh) and put them there, "
        f"set dataset.path.{split} or system.search_path.dataset, or read TensorFlow Datasets' imagenet2012 "
        f"instead (configs/datasets/imagenet.yaml shows how)"
    )


def _check_record(path, record):
    """A DataError naming `path` when `record` is not a `tf.train.Example` with the required features."""
    try:
        features = tf.train.Example.FromString(record).features.feature
    except DecodeError:
        raise DataError(f"{path}: its first record is not a tf.train.Example") from None
    for name, (_, kind) in REQUIRED_FEATURES.items():
        if name not in features:
            raise DataError(f"{path}: its first record lacks {name}, a feature slim's ImageNet format requires")
        found = features[name].WhichOneof("kind")
        if found != kind:
            raise DataError(f"{path}: feature {name} is a {found}, expected a {kind} (slim's ImageNet format)")


def _first_record(path):
    try:
        return next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as error:
        reason = error.message.strip().splitlines()[0] if error.message.strip() else type(error).__name__
        raise DataError(f"{path}: not a readable TFRecord file ({reason})") from None


@functools.lru_cache(maxsize=4)
def _check_unchanged_shards(shards):
    """Checks the first record of every shard, all shards read in parallel; a failure is retried shard by shard
    to name the file. The session builds a new training pipeline every epoch, so results are kept per file set
    (path, size and modification time)."""
    paths = [path for path, _, _ in shards]
    firsts = tf.data.Dataset.from_tensor_slices(paths).interleave(
        lambda path: tf.data.TFRecordDataset(path).take(1).map(lambda record: (path, record)),
        cycle_length=min(len(paths), PARALLEL_SHARDS),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    try:
        for path, record in firsts.as_numpy_iterator():
            _check_record(path.decode(), record)
    except tf.errors.OpError:
        for path in paths:
            record = _first_record(path)
            if record is not None:
                _check_record(path, record.numpy())


def check_shards(files):
    """A DataError naming the shard and the feature when a shard's first record lacks a required feature.

    Only first records are checked; a later record without one stops the epoch with TensorFlow's error naming the
    feature.
    """
    shards = []
    for path in files:
        status = tf.io.gfile.stat(path)
        shards.append((path, status.length, status.mtime_nsec))
    _check_unchanged_shards(tuple(shards))


def parse_record(record):
    """(encoded image, label as stored, boxes [N, 4] ymin, xmin, ymax, xmax in [0, 1])."""
    specs = {name: spec for name, (spec, _) in REQUIRED_FEATURES.items()}
    specs.update({name: tf.io.VarLenFeature(tf.float32) for name in BOX_FEATURES})
    features = tf.io.parse_single_example(record, specs)
    boxes = tf.stack([tf.sparse.to_dense(features[name]) for name in BOX_FEATURES], axis=1)
    # As stored (slim's ImageNet counts the real classes from 1, class 0 being the background); the pipeline
    # shifts them by Mayo's `background_class` rule, `use - has`.
    label = tf.cast(features["image/class/label"], tf.int32)
    return features["image/encoded"], label, tf.clip_by_value(boxes, 0.0, 1.0)


def read_tfrecord_source(dataset, split, search_path, training=False, seed=None):
    """The `tfrecord` source reader (see the module docstring).

    Training reads the shards in an order shuffled with `seed` (afresh on each iteration; unseeded, not repeatable);
    otherwise in sorted order, so validation is the same on every pass.
    """
    pattern, files = _find_shards(dataset, split, search_path)
    check_shards(files)
    # Order is kept unless it cannot be repeated anyway (unseeded training), where not waiting is faster.
    deterministic = not training or seed is not None
    shards = tf.data.Dataset.list_files(pattern, shuffle=training, seed=seed)
    records = shards.interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=SHARD_BUFFER_BYTES),
        cycle_length=min(len(files), PARALLEL_SHARDS),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    examples = records.map(parse_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    origin = f"{len(files)} TFRecord shard{'s' if len(files) > 1 else ''} matching {pattern}"
    return SourceExamples(examples, in_memory=False, origin=origin)
