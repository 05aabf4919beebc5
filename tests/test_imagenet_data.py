"""ImageNet input: slim-style TFRecord shards (the `tfrecord` source), TensorFlow Datasets' imagenet2012 with a manual
directory, and every preprocessing step on decoded JPEGs of varied sizes, through `make_dataset` and
configs/datasets/imagenet.yaml loaded as the session loads it."""

import re
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mayo_lite.config import BUNDLED_CONFIGS, Config
from mayo_lite.data import make_dataset
from mayo_lite.data.description import num_classes
from mayo_lite.errors import DataError

IMAGENET_YAML = BUNDLED_CONFIGS / "datasets" / "imagenet.yaml"
BOX_SIDES = ("ymin", "xmin", "ymax", "xmax")


def feature(kind, values):
    lists = {"bytes": tf.train.BytesList, "int64": tf.train.Int64List, "float": tf.train.FloatList}
    return tf.train.Feature(**{f"{kind}_list": lists[kind](value=values)})


def slim_record(image, label, boxes, without=()):
    """One `tf.train.Example` as slim's build_imagenet_data.py writes it, less the features in `without`."""
    features = {
        "image/encoded": feature("bytes", [tf.io.encode_jpeg(image).numpy()]),
        "image/class/label": feature("int64", [label]),
        "image/format": feature("bytes", [b"JPEG"]),
    }
    for index, side in enumerate(BOX_SIDES):
        features[f"image/object/bbox/{side}"] = feature("float", [box[index] for box in boxes])
    for name in without:
        del features[name]
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_shards(directory, prefix, num_shards=3, per_shard=4, seed=0, without=()):
    """Shards `<prefix>-0000i-of-0000n` of random JPEGs between 30 and 90 pixels a side; every other example has
    one object box. Returns the labels (1..1000) in shard order."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    labels = []
    for shard in range(num_shards):
        with tf.io.TFRecordWriter(str(directory / f"{prefix}-{shard:05d}-of-{num_shards:05d}")) as writer:
            for index in range(per_shard):
                height, width = generator.integers(30, 90, 2)
                image = generator.integers(0, 256, (height, width, 3), dtype=np.uint8)
                label = int(generator.integers(1, 1001))
                boxes = [[0.1, 0.2, 0.7, 0.9]] if index % 2 == 0 else []
                writer.write(slim_record(image, label, boxes, without))
                labels.append(label)
    return labels


def imagenet_config(directory=None, yaml_files=()):
    """The `dataset` section of imagenet.yaml as the session resolves it, its paths pointed at `directory`."""
    config = Config()
    config.load(IMAGENET_YAML)
    for path in yaml_files:
        config.load(path)
    if directory is not None:
        config.set("dataset.path.train", str(directory / "train-*"))
        config.set("dataset.path.validate", str(directory / "validation-*"))
    return config.get("dataset")


def epoch(batches):
    images, labels = zip(*((images.numpy(), labels.numpy()) for images, labels in batches))
    return np.concatenate(images), np.concatenate(labels)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    directory = tmp_path_factory.mktemp("data") / "imagenet"
    train = write_shards(directory, "train", num_shards=4, per_shard=3, seed=1)
    validate = write_shards(directory, "validation", num_shards=2, per_shard=3, seed=2)
    return directory, train, validate


# --- TFRecord shards ----------------------------------------------------------------------------------------------


def test_tfrecord_shards_give_the_declared_shapes_range_and_every_label(shards):
    directory, train_labels, validate_labels = shards
    dataset = imagenet_config(directory)
    assert dataset["source"]["type"] == "tfrecord" and dataset["task"]["num_classes"] == 1001
    for split, training, expected in (("train", True, train_labels), ("validate", False, validate_labels)):
        batches = make_dataset(dataset, split, 4, training, seed=3, shuffle_buffer=8)
        assert batches.element_spec[0].shape.as_list() == [None, 224, 224, 3]
        images, labels = epoch(batches)
        assert images.shape == (len(expected), 224, 224, 3) and images.dtype == np.float32
        # linear_map 2x - 1 after steps that stay in [0, 1]
        assert -1 <= images.min() < -0.5 and 0.5 < images.max() <= 1
        # With slim's background class the labels stay as stored, 1..1000.
        assert labels.dtype == np.int32 and sorted(labels) == sorted(expected)
    full = make_dataset(dataset, "validate", 4, False, drop_remainder=True)
    assert [len(labels) for _, labels in full] == [4]


def test_labels_without_the_background_class_count_from_zero(shards):
    directory, _, validate_labels = shards
    with_background = epoch(make_dataset(imagenet_config(directory), "validate", 6, False))[1]
    dataset = imagenet_config(directory)
    dataset["task"].update(background_class={"has": True, "use": False})  # Mayo's imagenet.yaml: {has: true}
    without_background = epoch(make_dataset(dataset, "validate", 6, False))[1]
    np.testing.assert_array_equal(without_background, with_background - 1)
    assert num_classes(dataset) == 1000
    assert sorted(with_background) == sorted(validate_labels)


def test_shard_order_follows_the_seed_and_validation_order_is_fixed(shards):
    directory, _, _ = shards
    dataset = imagenet_config(directory)

    def labels(split, training, seed):  # a one-example shuffle buffer leaves the shard order to show
        return epoch(make_dataset(dataset, split, 12, training, seed=seed, shuffle_buffer=1))[1].tolist()

    assert labels("train", True, 1) == labels("train", True, 1)
    assert labels("train", True, 1) != labels("train", True, 2)
    assert labels("validate", False, 1) == labels("validate", False, 2)


def test_search_path_finds_the_relative_glob(shards):
    directory, _, validate_labels = shards
    search_path = (str(directory.parent / "elsewhere"), str(directory.parent))
    batches = make_dataset(imagenet_config(), "validate", 6, False, search_path=search_path)
    assert sorted(epoch(batches)[1]) == sorted(validate_labels)


def test_object_boxes_reach_distort_bbox(tmp_path):
    """A white object box on black: windows that must cover 90% of it but at most 30% of the image are mostly box
    where the record has the box, and fall back to the whole image where it has none."""
    image = np.zeros((100, 120, 3), np.uint8)
    image[40:60, 48:72] = 255
    with tf.io.TFRecordWriter(str(tmp_path / "train-00000-of-00001")) as writer:
        for label in range(1, 9):
            boxed = label % 2 == 1
            writer.write(slim_record(image, label, [[0.4, 0.4, 0.6, 0.6]] if boxed else []))
    dataset = imagenet_config(tmp_path)
    dataset["task"]["preprocess"].update(
        train=[{"type": "distort_bbox", "area_range": [0.05, 0.3], "min_object_covered": 0.9}], final_cpu=None
    )
    images, labels = epoch(make_dataset(dataset, "train", 8, True, seed=0))
    white = images.mean(axis=(1, 2, 3))
    assert (white[labels % 2 == 1] > 0.12).all()  # at least 0.04 / 0.3 of a window that covers the box
    np.testing.assert_allclose(white[labels % 2 == 0], 0.04, atol=0.02)  # the whole image: 20x24 of 100x120


@pytest.mark.parametrize("missing", ["image/class/label", "image/encoded"])
def test_shard_missing_a_required_feature_is_one_data_error(tmp_path, missing):
    write_shards(tmp_path, "train", num_shards=2, per_shard=1)
    write_shards(tmp_path, "validation", num_shards=1, per_shard=2, without=(missing,))
    dataset = imagenet_config(tmp_path)
    make_dataset(dataset, "train", 2, True)
    with pytest.raises(DataError) as error:
        make_dataset(dataset, "validate", 2, False)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path}/validation-00000-of-00001: ") and missing in message


def test_unreadable_shard_is_a_data_error(tmp_path):
    write_shards(tmp_path, "validation", num_shards=1, per_shard=1)
    (tmp_path / "validation-00001-of-00002").write_bytes(b"not a TFRecord file at all")
    with pytest.raises(DataError, match=r"validation-00001-of-00002: not a readable TFRecord file"):
        make_dataset(imagenet_config(tmp_path), "validate", 2, False)


def test_no_matching_files_says_where_it_looked_and_how_to_get_them(tmp_path):
    search_path = (str(tmp_path / "a"), str(tmp_path / "b"))
    with pytest.raises(DataError) as error:
        make_dataset(imagenet_config(), "train", 2, True, search_path=search_path)
    message = str(error.value)
    assert "\n" not in message
    assert f"match {tmp_path}/a/imagenet/train-*, {tmp_path}/b/imagenet/train-*" in message
    assert "build_imagenet_data.py" in message and "imagenet2012" in message


# --- TensorFlow Datasets' imagenet2012 ----------------------------------------------------------------------------


def documented_tfds_override(tmp_path):
    """The override that imagenet.yaml's comments give for TensorFlow Datasets, as a YAML file."""
    text = IMAGENET_YAML.read_text()
    block = re.search(r"^#   dataset:\n(?:#     .*\n)+", text, re.MULTILINE).group(0)
    path = tmp_path / "tfds_override.yaml"
    path.write_text("".join(line[2:] + "\n" for line in block.splitlines()))
    return path


def test_tfds_imagenet2012_with_a_manual_directory(tmp_path):
    dataset = imagenet_config(yaml_files=[documented_tfds_override(tmp_path)])
    assert dataset["source"]["tfds"] == "imagenet2012" and dataset["task"]["num_classes"] == 1000
    dataset["source"]["manual_dir"] = str(tmp_path / "archives")
    prepared = []
    with tfds.testing.mock_data(num_examples=4):
        with mock.patch.object(
            tfds.core.DatasetBuilder, "download_and_prepare", lambda self, **kwargs: prepared.append(kwargs)
        ):
            for split, training in (("train", True), ("validate", False)):
                images, labels = epoch(make_dataset(dataset, split, 2, training, seed=0))
                assert images.shape == (4, 224, 224, 3) and -1 <= images.min() and images.max() <= 1
                assert labels.dtype == np.int32 and 0 <= labels.min() and labels.max() < 1000
    assert [kwargs["download_config"].manual_dir for kwargs in prepared] == [str(tmp_path / "archives")] * 2


def test_tfds_imagenet2012_without_archives_is_one_data_error(tmp_path):
    dataset = imagenet_config(yaml_files=[documented_tfds_override(tmp_path)])
    dataset["source"].update(manual_dir=str(tmp_path / "archives"), data_dir=str(tmp_path / "tfds"))
    with pytest.raises(DataError) as error:
        make_dataset(dataset, "train", 2, True)
    message = str(error.value)
    assert "\n" not in message
    assert f"could not load 'imagenet2012' from {tmp_path}/tfds (Manual directory {tmp_path}/archives" in message
    assert "ILSVRC2012_img_train.tar" in message


# --- every preprocessing step on decoded JPEGs of varied sizes ----------------------------------------------------

SHAPE = (24, 20, 3)
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def within(low, high):
    def check(images):
        assert (low - 1e-5 <= images).all() and (images <= high + 1e-5).all()

    return check


def standardized(images):
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(images.std(axis=(1, 2, 3)), 1, atol=1e-2)


# (steps around the one named, so that it alone decides the range; the check of that range)
STEP_CASES = {
    "random_flip": ([{"type": "resize"}, {"type": "random_flip"}], within(0, 1)),
    "random_crop": ([{"type": "random_crop"}], within(0, 1)),
    "central_crop": ([{"type": "central_crop", "fraction": 0.5}, {"type": "resize"}], within(0, 1)),
    "crop": ([{"type": "crop", "top": 3, "left": 5}], within(0, 1)),
    "crop_or_pad": ([{"type": "crop_or_pad"}], within(0, 1)),
    "resize": ([{"type": "resize"}], within(0, 1)),
    "normalize_channels": ([{"type": "resize"}, {"type": "normalize_channels"}], within(-MEAN / STD, (1 - MEAN) / STD)),
    "subtract_channel_means": ([{"type": "resize"}, {"type": "subtract_channel_means"}], within(-MEAN, 1 - MEAN)),
    "linear_map": ([{"type": "resize"}, {"type": "linear_map", "scale": 2.0, "shift": -1.0}], within(-1, 1)),
    "standardize_image": ([{"type": "resize"}, {"type": "standardize_image"}], standardized),
    "distort_color": ([{"type": "resize"}, {"type": "distort_color"}], within(0, 1)),
    "distort_bbox": ([{"type": "distort_bbox"}], within(0, 1)),
}


def test_the_cases_cover_every_step_of_the_design():
    assert set(STEP_CASES) == {
        "distort_bbox", "random_flip", "distort_color", "random_crop", "crop", "central_crop", "crop_or_pad",
        "resize", "normalize_channels", "subtract_channel_means", "linear_map", "standardize_image",
    }


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    directory = tmp_path_factory.mktemp("small")
    write_shards(directory, "validation", num_shards=2, per_shard=3, seed=4)
    return directory


@pytest.mark.parametrize("step", sorted(STEP_CASES))
def test_every_step_gives_the_declared_shape_and_range_on_decoded_jpegs(small_shards, step):
    steps, check = STEP_CASES[step]
    dataset = imagenet_config(small_shards)
    dataset["task"]["shape"] = dict(zip(("height", "width", "channels"), SHAPE))
    dataset["task"]["preprocess"].update(validate=steps, final_cpu=None)
    batches = make_dataset(dataset, "validate", 6, False)
    assert batches.element_spec[0].shape.as_list() == [None, *SHAPE]
    images, _ = epoch(batches)
    assert images.shape == (6, *SHAPE) and np.isfinite(images).all()
    check(images)
