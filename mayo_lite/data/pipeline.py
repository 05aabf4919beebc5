"""The `tf.data` pipeline the session trains and evaluates on: source, cache, shuffle, preprocess, batch, prefetch.

The session hands in the resolved `dataset` section and the `system.pipeline` settings and repeats the one-epoch
dataset it gets back; the source readers (`sources.py`) and the steps (`preprocess.py`) do the rest.
"""

import inspect
import logging
import math
import numbers

import tensorflow as tf

from mayo_lite.data.description import (
    bad_value,
    check_split,
    dataset_name,
    label_offset,
    lookup,
    network_shape,
    positive_int,
    validate_from_train,
)
from mayo_lite.data.preprocess import apply_steps, compile_steps, fit_to_shape
from mayo_lite.data.sources import SOURCES
from mayo_lite.errors import ConfigError, argument_message

logger = logging.getLogger(__name__)

# `cache="auto"` keeps a split's decoded images in memory below this estimated size.
CACHE_LIMIT_BYTES = 2 * 1024**3

# The preprocessing lists that follow the split's own (`train` or `validate`), in this order.
FINAL_PHASES = ("final_cpu", "final_gpu")

# The per-image seeds of validation: fixed, so any random step there is the same on every pass.
VALIDATION_SEED = 0


def num_examples(dataset, split):
    """The number of examples in one epoch of `split`: `dataset.num_examples_per_epoch.<split>`, less the images
    `dataset.validate_from_train` moves from training to validation (`test` counts the held-out split)."""
    check_split(split)
    carved = validate_from_train(dataset)
    if split == "test":
        return positive_int(dataset, "num_examples_per_epoch.validate")
    train = positive_int(dataset, "num_examples_per_epoch.train")
    if not carved:
        return train if split == "train" else positive_int(dataset, "num_examples_per_epoch.validate")
    if carved >= train:
        raise bad_value("validate_from_train", f"fewer than the {train} training images "
                        "(dataset.num_examples_per_epoch.train)", carved)
    return train - carved if split == "train" else carved


def _source_split(dataset, split):
    """The source's split that holds `split`'s images, and how: (name, images to skip, images to take or None)."""
    carved = validate_from_train(dataset)
    if split == "test" or (split == "validate" and not carved):
        return "validate", 0, None
    if not carved:
        return "train", 0, None
    train = positive_int(dataset, "num_examples_per_epoch.train")
    return ("train", 0, train - carved) if split == "train" else ("train", train - carved, carved)


def _check_argument(name, value, valid, expected):
    if not valid:
        raise ConfigError(argument_message(name, expected, value))


def _is_positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _should_cache(cache, examples, count, shape):
    if cache != "auto":
        return cache
    if examples.in_memory:
        return False
    image_spec = examples.dataset.element_spec[0]
    image_shape = image_spec.shape if image_spec.shape.is_fully_defined() else shape
    # Encoded images count as decoded uint8 ones of the task's shape, well above their compressed size.
    value_size = 1 if image_spec.dtype == tf.string else image_spec.dtype.size
    return count * math.prod(image_shape) * value_size < CACHE_LIMIT_BYTES


def _read_source(reader, dataset, split, search_path, training, seed):
    """The reader's examples; readers that shuffle their files (`sources.py`) also get `training` and `seed`."""
    order = {"training": training, "seed": seed}
    accepted = inspect.signature(reader).parameters
    return reader(dataset, split, search_path, **{name: value for name, value in order.items() if name in accepted})


def _decode(image, channels):
    """Encoded images (JPEG, PNG, ...) as uint8 [H, W, channels]; decoded images pass unchanged."""
    if image.dtype != tf.string:
        return image
    decoded = tf.io.decode_image(image, channels=channels, expand_animations=False)
    return tf.ensure_shape(decoded, [None, None, channels])


def _format_shape(shape):
    return "x".join("?" if size is None else str(size) for size in shape)


def make_dataset(
    dataset,
    split,
    batch_size,
    training,
    seed=None,
    search_path=(".", "/usr/share/datasets"),
    shuffle_buffer=10000,
    cache="auto",
    drop_remainder=False,
):
    """One epoch of `split` as batches of (images float32 [B, H, W, C], labels int32 [B]).

    A source's examples are (image, label) or (image, label, boxes): images decoded, or encoded bytes that are
    decoded after the shuffle; boxes [N, 4] (ymin, xmin, ymax, xmax in [0, 1]) go to the `distort_bbox` step.

    Args:
        dataset: the resolved `dataset` section of the config (a plain dict).
        split: "train", "validate" or "test" (the source's held-out split; `validate` too unless
            `dataset.validate_from_train` carves the validation split from the training images).
        batch_size: examples per batch.
        training: True shuffles (again on every iteration) and applies the `train` steps; False keeps the file
            order and applies the `validate` steps. `final_cpu` and `final_gpu` follow in both.
        seed: an integer makes the shuffle and the random augmentation repeatable; None draws them afresh.
        search_path: directories where data sources look for their files.
        shuffle_buffer: examples held by the training shuffle.
        cache: "auto" keeps decoded images in memory when the split is estimated below 2 GiB and is not in memory
            already; True or False force it.
        drop_remainder: drop the last batch when it is smaller than `batch_size`.

    Images have exactly the shape `dataset.task.shape`; a source whose images end up another shape after
    preprocessing is a ConfigError.
    """
    check_split(split)
    _check_argument("batch_size", batch_size, _is_positive_int(batch_size), "a positive integer")
    _check_argument("shuffle_buffer", shuffle_buffer, _is_positive_int(shuffle_buffer), "a positive integer")
    _check_argument("cache", cache, cache == "auto" or isinstance(cache, bool), '"auto", True or False')
    is_seed = seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool))
    _check_argument("seed", seed, is_seed, "an integer or None")
    name = dataset_name(dataset)
    shape, shape_source = network_shape(dataset)
    fitted = shape_source == "dataset.task.preprocess.shape"
    count = num_examples(dataset, split)
    source_type = lookup(dataset, "source.type")
    if source_type not in SOURCES:
        raise ConfigError(
            f"Unknown dataset.source.type {source_type!r}; known source types: {', '.join(sorted(SOURCES))}"
        )
    def steps_of(phases):
        return [step for phase in phases for step in compile_steps(
            lookup(dataset, f"task.preprocess.{phase}", None), f"dataset.task.preprocess.{phase}")]
    split_steps, final_steps = steps_of(("train" if training else "validate",)), steps_of(FINAL_PHASES)
    moment = lookup(dataset, "task.moment", None)
    offset = label_offset(dataset)

    source_split, skip, take = _source_split(dataset, split)
    # A validation split carved from the training images is read in file order, so that it is the same images in
    # every run, and cut before the shuffle, so that no validation image is ever trained on.
    examples = _read_source(SOURCES[source_type], dataset, source_split, search_path,
                            training and take is None, seed)
    cardinality = int(examples.dataset.cardinality())
    expected = positive_int(dataset, f"num_examples_per_epoch.{source_split}")
    if cardinality >= 0 and cardinality != expected:
        logger.warning(
            "%s: the %s split holds %d examples but dataset.num_examples_per_epoch.%s is %d",
            name, source_split, cardinality, source_split, expected,
        )
    pipeline = examples.dataset
    if take is not None:
        pipeline = pipeline.skip(skip).take(take)
    if _should_cache(cache, examples, count, shape):
        pipeline = pipeline.cache()
    if training:
        pipeline = pipeline.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        image_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    else:
        image_seeds = tf.data.Dataset.random(seed=VALIDATION_SEED)
    pipeline = tf.data.Dataset.zip((pipeline, image_seeds))

    # Not converted by AutoGraph: the steps are a fixed Python list, and a ConfigError raised while tracing them
    # must reach the user as its one line, which AutoGraph would wrap in a multi-line "in user code" report.
    @tf.autograph.experimental.do_not_convert
    def preprocess(example, image_seed):
        image, label = example[:2]
        boxes = example[2] if len(example) > 2 else None
        image = tf.image.convert_image_dtype(_decode(image, shape[-1]), tf.float32)
        image = apply_steps(image, split_steps, shape, moment, image_seed, boxes)
        if fitted:  # Mayo: converted and resized to the network's shape before the final steps
            image = fit_to_shape(image, shape)
        image = apply_steps(image, final_steps, shape, moment, image_seed, boxes, first=len(split_steps))
        return image, tf.cast(label, tf.int32) + offset

    # Order is kept unless it cannot be repeated anyway (unseeded training), where not waiting is faster.
    deterministic = not training or seed is not None
    pipeline = pipeline.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    image_shape = tuple(pipeline.element_spec[0].shape)
    if image_shape != shape:
        raise ConfigError(
            f"{shape_source} is {_format_shape(shape)} (height x width x channels) but the {split} images of "
            f"{name} are {_format_shape(image_shape)} after preprocessing; fix {shape_source}, add a resize or crop "
            f"step to dataset.task.preprocess, or set dataset.task.preprocess.shape to have them resized to it"
        )
    # Said once the split is known to fit (a bad data file's error is the first line, not this one).
    logger.info("%s, %s split: %s%s", name, split, examples.origin,
                f" (images {skip}-{skip + take - 1} of its {source_split} split)" if take else "")
    pipeline = pipeline.batch(int(batch_size), drop_remainder=drop_remainder)
    return pipeline.prefetch(tf.data.AUTOTUNE)
