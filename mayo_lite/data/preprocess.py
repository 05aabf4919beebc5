"""The preprocessing steps a dataset description names (`dataset.task.preprocess`), one function per step type.

Each step takes one image [height, width, channels] float32 (in [0, 1] when it enters the first step), a
`StepContext` and the step's YAML arguments as keyword arguments, and returns the new image. Randomness is
stateless and comes from `context.seed`, which the pipeline derives from its own seed, so a seeded pipeline
augments identically on every run. Mayo's step names, argument names and defaults are kept.
"""

import inspect
from typing import NamedTuple

import tensorflow as tf

from mayo_lite.errors import ConfigError, argument_message

# slim's inception preprocessing (`distort_color`, `distorted_bounding_box_crop`), which Mayo copied.
BRIGHTNESS_MAX_DELTA = 32.0 / 255.0
SATURATION_RANGE = (0.5, 1.5)
HUE_MAX_DELTA = 0.2
CONTRAST_RANGE = (0.5, 1.5)

RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")


class StepContext(NamedTuple):
    """What a step may use besides its arguments.

    Attributes:
        shape: `dataset.task.shape` as (height, width, channels), the default size of crops and resizes.
        mean: `dataset.task.moment.mean` (a list per channel, a number, or None).
        std: `dataset.task.moment.std` (likewise).
        seed: an int64 [2] stateless seed, distinct for every image and every step.
        boxes: the image's object boxes [N, 4] (ymin, xmin, ymax, xmax in [0, 1]) where the source has them
            (slim's ImageNet TFRecords), else None.
    """

    shape: tuple
    mean: object
    std: object
    seed: tf.Tensor
    boxes: object = None


def _invalid(step, name, value, expected):
    return ConfigError(argument_message(name, expected, value, f"step `{step}`"))


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(step, name, value):
    if not _is_number(value):
        raise _invalid(step, name, value, "a number")
    return float(value)


def _size(step, name, value, default):
    """A positive integer argument; None means the task's `default`."""
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _invalid(step, name, value, "a positive integer")
    return value


def _range(step, name, value, lowest, highest):
    """A [low, high] pair with lowest < low <= high <= highest."""
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(_is_number(v) for v in value)
        or not lowest < value[0] <= value[1] <= highest
    ):
        raise _invalid(step, name, value, f"a pair [low, high] with {lowest} < low <= high <= {highest}")
    return (float(value[0]), float(value[1]))


def _check_fits(step, image, height, width, top=0, left=0):
    """A window outside a statically known image is a config error now rather than a failure mid-epoch."""
    image_height, image_width = image.shape[0], image.shape[1]
    if (image_height is not None and top + height > image_height) or (
        image_width is not None and left + width > image_width
    ):
        at = f" at ({top}, {left})" if top or left else ""
        raise ConfigError(
            f"step `{step}` cannot take a {height}x{width} window{at} from a {image_height}x{image_width} image"
        )


def _channel_constant(step, key, value, channels, positive=False):
    """`dataset.task.moment.<key>` as a [1, 1, channels] constant."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if (
        value is None
        or not all(_is_number(v) for v in values)
        or len(values) not in (1, channels)
        or (positive and not all(v > 0 for v in values))
    ):
        raise ConfigError(
            f"step `{step}` needs dataset.task.moment.{key}: a {'positive ' if positive else ''}number or a list "
            f"of {channels} numbers; received: {value!r}"
        )
    if len(values) == 1:
        values = values * channels
    return tf.constant(values, dtype=tf.float32, shape=[1, 1, channels])


def random_flip(image, context):
    """Flips the image left-right with probability one half."""
    return tf.image.stateless_random_flip_left_right(image, context.seed)


def random_crop(image, context, height=None, width=None):
    """A random `height` x `width` window (default: the task's size)."""
    height = _size("random_crop", "height", height, context.shape[0])
    width = _size("random_crop", "width", width, context.shape[1])
    _check_fits("random_crop", image, height, width)
    return tf.image.stateless_random_crop(image, [height, width, image.shape[-1]], context.seed)


def central_crop(image, context, fraction=0.875):
    """The central `fraction` of each side."""
    if not _is_number(fraction) or not 0 < fraction <= 1:
        raise _invalid("central_crop", "fraction", fraction, "a number in (0, 1]")
    return tf.image.central_crop(image, central_fraction=float(fraction))


def crop(image, context, top, left, height=None, width=None):
    """The fixed window whose top-left corner is (`top`, `left`) (default size: the task's)."""
    for name, value in (("top", top), ("left", left)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _invalid("crop", name, value, "a non-negative integer")
    height = _size("crop", "height", height, context.shape[0])
    width = _size("crop", "width", width, context.shape[1])
    _check_fits("crop", image, height, width, top, left)
    return tf.image.crop_to_bounding_box(image, top, left, height, width)


def crop_or_pad(image, context, height=None, width=None):
    """Crops centrally or pads with zeros evenly to `height` x `width` (default: the task's size)."""
    height = _size("crop_or_pad", "height", height, context.shape[0])
    width = _size("crop_or_pad", "width", width, context.shape[1])
    return tf.image.resize_with_crop_or_pad(image, height, width)


def resize(image, context, height=None, width=None, method="bilinear", fill=False):
    """Resizes to `height` x `width` (default: the task's size) with `method`; `fill` (Mayo's) first crops the
    centre to the target's aspect ratio, so nothing is stretched, else the aspect ratio is ignored."""
    height = _size("resize", "height", height, context.shape[0])
    width = _size("resize", "width", width, context.shape[1])
    if method not in RESIZE_METHODS:
        raise _invalid("resize", "method", method, f"one of {', '.join(RESIZE_METHODS)}")
    if not isinstance(fill, bool):
        raise _invalid("resize", "fill", fill, "true or false")
    if fill:
        image = _crop_to_aspect(image, width / height)
    return tf.image.resize(image, [height, width], method=method)


def _crop_to_aspect(image, aspect):
    """The largest central window of `image` with width / height = `aspect` (Mayo's `fill`)."""
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    width = tf.minimum(tf.round(size[0] * aspect), size[1])
    height = tf.minimum(tf.round(width / aspect), size[0])
    return tf.image.resize_with_crop_or_pad(image, tf.cast(height, tf.int32), tf.cast(width, tf.int32))


def fit_to_shape(image, shape):
    """What Mayo does after a split's steps when the model sets `dataset.task.preprocess.shape`: grey to colour by
    repeating the channel, colour to grey by luminance, then a `fill` resize when the size differs."""
    height, width, channels = shape
    present = image.shape[-1]
    if present != channels:
        if present == 3 and channels == 1:
            image = tf.image.rgb_to_grayscale(image)
        elif present == 1:
            image = tf.concat([image] * channels, axis=-1)
        else:
            raise ConfigError(f"dataset.task.preprocess.shape: cannot turn images of {present} channels into "
                              f"{channels} channels")
    if tuple(image.shape[:2]) != (height, width):
        image = tf.image.resize(_crop_to_aspect(image, width / height), [height, width], method="bilinear")
    return tf.ensure_shape(image, [height, width, channels])


def normalize_channels(image, context):
    """(image - mean) / std per channel, with `dataset.task.moment`."""
    channels = image.shape[-1]
    mean = _channel_constant("normalize_channels", "mean", context.mean, channels)
    std = _channel_constant("normalize_channels", "std", context.std, channels, positive=True)
    return (image - mean) / std


def subtract_channel_means(image, context, means=None):
    """image - mean per channel: `means` (Mayo's argument) or `dataset.task.moment.mean`."""
    return image - _channel_constant("subtract_channel_means", "mean", context.mean if means is None else means,
                                     image.shape[-1])


def permute_channels(image, context, order):
    """The channels in `order` (Mayo's step: `[2, 1, 0]` turns RGB into BGR)."""
    channels = image.shape[-1]
    if (not isinstance(order, list) or sorted(order) != list(range(channels))
            or any(isinstance(index, bool) for index in order)):
        raise _invalid("permute_channels", "order", order, f"a permutation of 0..{channels - 1}")
    return tf.gather(image, order, axis=-1)


def linear_map(image, context, scale=1, shift=0):
    """image * scale + shift."""
    return image * _number("linear_map", "scale", scale) + _number("linear_map", "shift", shift)


def reverse_channels(image, context):
    """RGB to BGR (and back): the channel order of Caffe-trained weights, such as Keras Applications' VGG16."""
    return image[..., ::-1]


def standardize_image(image, context):
    """Zero mean and unit variance over the whole image (`tf.image.per_image_standardization`)."""
    return tf.image.per_image_standardization(image)


def distort_color(image, context):
    """Random brightness, saturation, hue and contrast in slim's first ordering, clipped to [0, 1].

    Grayscale images get brightness and contrast only, as in Mayo.
    """
    channels = image.shape[-1]
    if channels not in (1, 3):
        raise ConfigError(f"step `distort_color` needs images with 1 or 3 channels, not {channels}")
    seeds = tf.random.experimental.stateless_split(context.seed, 4)
    image = tf.image.stateless_random_brightness(image, BRIGHTNESS_MAX_DELTA, seeds[0])
    if channels == 3:
        image = tf.image.stateless_random_saturation(image, *SATURATION_RANGE, seeds[1])
        image = tf.image.stateless_random_hue(image, HUE_MAX_DELTA, seeds[2])
    image = tf.image.stateless_random_contrast(image, *CONTRAST_RANGE, seeds[3])
    return tf.clip_by_value(image, 0.0, 1.0)


def distort_bbox(
    image, context, area_range=(0.05, 1.0), aspect_ratio_range=(0.75, 1.33), min_object_covered=0.1, max_attempts=100
):
    """A random window of the image as slim's `distorted_bounding_box_crop`, resized to the task's size.

    The window covers at least `min_object_covered` of one of the image's object boxes; without boxes (most
    sources, and ImageNet records that have none) the whole image is the object box.
    """
    area_range = _range("distort_bbox", "area_range", area_range, 0, 1)
    aspect_ratio_range = _range("distort_bbox", "aspect_ratio_range", aspect_ratio_range, 0, float("inf"))
    if not _is_number(min_object_covered) or not 0 <= min_object_covered <= 1:
        raise _invalid("distort_bbox", "min_object_covered", min_object_covered, "a number in [0, 1]")
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts <= 0:
        raise _invalid("distort_bbox", "max_attempts", max_attempts, "a positive integer")
    boxes = tf.zeros([0, 4], tf.float32) if context.boxes is None else context.boxes
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.reshape(tf.cast(boxes, tf.float32), [1, -1, 4]),
        seed=context.seed,
        min_object_covered=float(min_object_covered),
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True,
    )
    # The window's size is only known when the graph runs; its channels are the image's.
    window = tf.ensure_shape(tf.slice(image, begin, size), [None, None, image.shape[-1]])
    return tf.image.resize(window, context.shape[:2], method="bilinear")


PREPROCESS_STEPS = {
    "random_flip": random_flip,
    "random_crop": random_crop,
    "central_crop": central_crop,
    "crop": crop,
    "crop_or_pad": crop_or_pad,
    "resize": resize,
    "normalize_channels": normalize_channels,
    "subtract_channel_means": subtract_channel_means,
    "linear_map": linear_map,
    "standardize_image": standardize_image,
    "reverse_channels": reverse_channels,
    "permute_channels": permute_channels,
    "distort_color": distort_color,
    "distort_bbox": distort_bbox,
}


class Step(NamedTuple):
    """One step of a preprocessing list, checked against its function's signature."""

    location: str  # `dataset.task.preprocess.train[1]`, for error messages
    type: str
    function: object
    arguments: dict


def compile_steps(specs, location):
    """Checks the step list at `location` (a list of `{type: ..., **arguments}`, one mapping, or null)."""
    if specs is None:
        return []
    if isinstance(specs, dict):
        specs = [specs]
    if not isinstance(specs, list):
        raise ConfigError(f"{location}: expected a list of preprocessing steps or null; received: {specs!r}")
    steps = []
    for index, spec in enumerate(specs):
        where = f"{location}[{index}]"
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(f"{where}: a preprocessing step is a mapping with a `type` key; received: {spec!r}")
        arguments = {key: value for key, value in spec.items() if key != "type"}
        kind = spec["type"]
        if kind not in PREPROCESS_STEPS:
            raise ConfigError(
                f"{where}: unknown preprocessing step {kind!r}; known steps: {', '.join(sorted(PREPROCESS_STEPS))}"
            )
        function = PREPROCESS_STEPS[kind]
        parameters = list(inspect.signature(function).parameters.values())[2:]  # after (image, context)
        names = [parameter.name for parameter in parameters]
        for name in arguments:
            if name not in names:
                known = ", ".join(names) if names else "none"
                raise ConfigError(f"{where}: step `{kind}` has no argument `{name}`; its arguments: {known}")
        for parameter in parameters:
            if parameter.default is inspect.Parameter.empty and parameter.name not in arguments:
                raise ConfigError(f"{where}: step `{kind}` needs the argument `{parameter.name}`")
        steps.append(Step(where, kind, function, arguments))
    return steps


def apply_steps(image, steps, shape, moment, seed, boxes=None, first=0):
    """Runs `steps` on one image; `seed` is an int64 scalar unique to this image (the pipeline draws it), `boxes`
    its object boxes if the source gives them; `first` numbers the steps' random streams after earlier ones."""
    moment = moment or {}
    for index, step in enumerate(steps, start=first):
        step_seed = tf.stack([seed, tf.constant(index, tf.int64)])
        context = StepContext(shape, moment.get("mean"), moment.get("std"), step_seed, boxes)
        try:
            image = step.function(image, context, **step.arguments)
        except ConfigError as error:
            raise ConfigError(f"{step.location}: {error}") from None
        except ValueError as error:  # TensorFlow's static shape checks, e.g. a crop larger than the image
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"{step.location}: step `{step.type}` cannot apply here: {reason}") from None
    return image
