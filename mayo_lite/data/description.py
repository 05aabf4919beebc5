"""Reading the `dataset` section of a config: key look-ups that fail with the key path, and the task's shape.

The config room hands the data room a plain, fully resolved dict; these helpers are the only place that walks it.
"""

from mayo_lite.errors import ConfigError

# `test` is the source's held-out split: the same images as `validate` unless `validate_from_train` carves the
# validation split out of the training images.
SPLITS = ("train", "validate", "test")

# Every key of the `dataset` section the data room reads, and what it means (docs/reference.md is generated from
# this table; `source` keys depend on `source.type`).
KEYS = {
    "name": "the dataset's name (checkpoint and plot directories are named after it)",
    "source.type": "idx, tfds, synthetic or tfrecord",
    "source.path": "idx: the directory of the IDX files (null: <search path>/<name with - for _>)",
    "source.tfds": "idx and tfds: the TensorFlow Datasets builder (idx falls back to it)",
    "source.data_dir": "tfds: the TensorFlow Datasets directory (null: ~/tensorflow_datasets)",
    "source.manual_dir": "tfds: where the builder's manually downloaded archives are",
    "source.download": "tfds: whether to download when the data is not prepared",
    "source.splits": "tfds: {train: SPLIT, validate: SPLIT}, the builder's split names",
    "source.seed": "synthetic: the seed of the random images and labels",
    "path.train, path.validate": "tfrecord: file globs of the shards, searched along system.search_path.dataset",
    "task.num_classes": "number of classes the logits have (with the background class, if used)",
    "task.class_names": "optional names of the classes, for figures",
    "task.background_class.use": "true when class 0 is a background class (labels shift up by one)",
    "task.shape.height, .width, .channels": "the images' shape after preprocessing, the model's input",
    "task.moment.mean, .std": "per-channel statistics of the images in [0, 1], for normalize_channels",
    "task.preprocess.train, .validate, .final_cpu, .final_gpu": "lists of preprocessing steps, in this order",
    "num_examples_per_epoch.train, .validate": "examples in the source's training and held-out splits",
    "validate_from_train": "null, or N: the last N training images are the validation split (training keeps the "
                           "rest); the held-out split stays the test split, for the final figures only",
}

_MISSING = object()


def lookup(dataset, path, default=_MISSING):
    """The value at `path` (dotted, below `dataset`); `default` when absent, a ConfigError naming it otherwise."""
    value = dataset
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            if default is not _MISSING:
                return default
            raise ConfigError(f"dataset.{path} is missing from the dataset description")
        value = value[key]
    return value


def bad_value(path, expected, value):
    """The ConfigError for a bad value at `dataset.<path>`, worded as the config's typed readers word theirs (the
    session adds the file that set the key)."""
    return ConfigError(f"dataset.{path}: expected {expected}, got {value!r}")


def dataset_name(dataset):
    name = lookup(dataset, "name")
    if not isinstance(name, str) or not name:
        raise bad_value("name", "a non-empty string", name)
    return name


def check_split(split):
    if split not in SPLITS:
        raise ConfigError(f"Unknown dataset split {split!r}; expected one of: {', '.join(SPLITS)}")


def validate_from_train(dataset):
    """The number of training images `dataset.validate_from_train` sets aside for validation (0 when null)."""
    value = lookup(dataset, "validate_from_train", None)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise bad_value("validate_from_train", "null or a positive integer", value)
    return value


def positive_int(dataset, path):
    value = lookup(dataset, path)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise bad_value(path, "a positive integer", value)
    return value


SHAPE_KEYS = ("height", "width", "channels")


def task_shape(dataset):
    """`dataset.task.shape` as a (height, width, channels) tuple of positive integers."""
    return tuple(positive_int(dataset, f"task.shape.{key}") for key in SHAPE_KEYS)


def network_shape(dataset):
    """The shape the network is built for, and where it comes from.

    As in Mayo, `dataset.task.preprocess.shape` (which Mayo's model files set) is the network's input, to which
    every image is converted and resized after the split's own steps; each of its keys it lacks comes from
    `dataset.task.shape` (the images' own shape, which may give only `channels`). Without it the network takes
    `dataset.task.shape`, and images must come out of the preprocessing at that shape.
    """
    wanted = lookup(dataset, "task.preprocess.shape", None)
    if wanted is None:
        return task_shape(dataset), "dataset.task.shape"
    if not isinstance(wanted, dict):
        raise bad_value("task.preprocess.shape", "a mapping of height, width, channels", wanted)
    shape = []
    for key in SHAPE_KEYS:
        path = f"task.preprocess.shape.{key}" if key in wanted else f"task.shape.{key}"
        shape.append(positive_int(dataset, path))
    return tuple(shape), "dataset.task.preprocess.shape"


def background(dataset, key):
    """`task.background_class.<key>` (`has` or `use`) as 0 or 1."""
    section = lookup(dataset, "task.background_class", None) or {}
    value = section.get(key, False) if isinstance(section, dict) else False
    if not isinstance(value, bool):
        raise bad_value(f"task.background_class.{key}", "true or false", value)
    return int(value)


def label_offset(dataset):
    """Mayo's rule: `use − has` of `task.background_class`. `has`: the stored labels count a background class 0
    (slim's ImageNet records, 1..1000); `use`: the network has a background output. Stored labels shift by it."""
    return background(dataset, "use") - background(dataset, "has")


def num_classes(dataset):
    """The network's number of outputs: `task.num_classes` (the stored labels' range) plus `label_offset`."""
    return positive_int(dataset, "task.num_classes") + label_offset(dataset)
