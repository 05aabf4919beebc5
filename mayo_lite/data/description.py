"""Reading the `dataset` section of a config: key look-ups that fail with the key path, and the task's shape.

The config room hands the data room a plain, fully resolved dict; these helpers are the only place that walks it.
"""

from mayo_lite.errors import ConfigError

SPLITS = ("train", "validate")

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


def positive_int(dataset, path):
    value = lookup(dataset, path)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise bad_value(path, "a positive integer", value)
    return value


def task_shape(dataset):
    """`dataset.task.shape` as a (height, width, channels) tuple of positive integers."""
    return tuple(positive_int(dataset, f"task.shape.{key}") for key in ("height", "width", "channels"))


def num_classes(dataset):
    return positive_int(dataset, "task.num_classes")


def label_offset(dataset):
    """1 when class 0 is a background class (Mayo's and slim's ImageNet), so labels shift up by one; else 0."""
    background = lookup(dataset, "task.background_class", None) or {}
    return 1 if background.get("use", False) else 0
