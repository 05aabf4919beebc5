"""The data room: sources (IDX, TensorFlow Datasets, synthetic), preprocessing steps and the tf.data pipeline."""

import copy
import gzip
import os
import pathlib
import socket

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import yaml

from mayo_lite.data import PREPROCESS_STEPS, SOURCES, make_dataset, num_examples
from mayo_lite.data.description import num_classes
from mayo_lite.data.idx_files import read_idx
from mayo_lite.data.preprocess import apply_steps, compile_steps
from mayo_lite.errors import ConfigError, DataError

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs" / "datasets"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
needs_fashion_mnist = pytest.mark.skipif(
    not os.path.isdir(FASHION_MNIST_DIR), reason="apt-get install dataset-fashion-mnist"
)


def load_config(name):
    with open(CONFIGS / f"{name}.yaml") as stream:
        return yaml.safe_load(stream)["dataset"]


def without_preprocessing(dataset):
    dataset = copy.deepcopy(dataset)
    dataset["task"]["preprocess"] = {"train": None, "validate": None, "final_cpu": None, "final_gpu": None}
    return dataset


def first_batch(dataset):
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


def write_idx(path, array, compress):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + np.array(array.shape, ">u4").tobytes()
    content = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if compress else open)(path, "wb") as stream:
        stream.write(content)


def reference_idx(path):
    """An independent decoder: big-endian header of 4 magic bytes and the dimensions, then the raw bytes."""
    with gzip.open(path, "rb") as stream:
        content = stream.read()
    ndim = content[3]
    dims = [int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(content[4 + 4 * ndim :], np.uint8).reshape(dims)


def tiny_dataset(directory, compress, count=6, name="tiny"):
    generator = np.random.default_rng(0)
    arrays = {}
    for prefix in ("train", "t10k"):
        images = generator.integers(0, 256, (count, 5, 4), dtype=np.uint8)
        labels = generator.integers(0, 3, count, dtype=np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte{suffix}"), images, compress)
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte{suffix}"), labels, compress)
        arrays[prefix] = (images, labels)
    dataset = {
        "name": name,
        "source": {"type": "idx", "path": str(directory), "tfds": None},
        "task": {"num_classes": 3, "shape": {"height": 5, "width": 4, "channels": 1}, "preprocess": None},
        "num_examples_per_epoch": {"train": count, "validate": count},
    }
    return dataset, arrays


# --- IDX files ---------------------------------------------------------------------------------------------------


@needs_fashion_mnist
def test_fashion_mnist_from_debian_idx_files():
    dataset = load_config("fashion_mnist")
    assert num_examples(dataset, "train") == 60000 and num_examples(dataset, "validate") == 10000
    for split, count in (("train", 60000), ("validate", 10000)):
        assert int(SOURCES["idx"](dataset, split, (".", "/usr/share/datasets")).dataset.cardinality()) == count
    for training in (True, False):
        for images, labels in make_dataset(dataset, "train", 64, training, seed=3).take(2):
            assert images.shape == (64, 28, 28, 1) and images.dtype == tf.float32
            assert labels.shape == (64,) and labels.dtype == tf.int32
            assert 0 <= labels.numpy().min() and labels.numpy().max() < 10
            # normalize_channels with the Fashion-MNIST moments maps [0, 1] to about [-0.81, 2.02]
            assert -0.82 < images.numpy().min() and images.numpy().max() < 2.03


def test_validate_from_train_carves_the_last_training_images_and_test_stays_the_held_out_split(tmp_path):
    dataset, arrays = tiny_dataset(tmp_path, compress=False, count=10)
    dataset["validate_from_train"] = 3
    assert [num_examples(dataset, split) for split in ("train", "validate", "test")] == [7, 3, 10]

    def images(split, training):
        batches = make_dataset(dataset, split, 4, training, seed=1)
        return np.concatenate([batch.numpy() for batch, _ in batches])[..., 0]
    train_images, labels = arrays["train"]
    expected = train_images.astype(np.float32) / 255
    np.testing.assert_allclose(images("validate", False), expected[7:], atol=1e-6)
    trained = images("train", True)  # shuffled: the same 7 first images, in another order, none of the last 3
    assert sorted(map(bytes, (trained * 255).round().astype(np.uint8))) == sorted(map(bytes, train_images[:7]))
    np.testing.assert_allclose(images("test", False), arrays["t10k"][0].astype(np.float32) / 255, atol=1e-6)
    del dataset["validate_from_train"]  # without the key, validate and test are both the held-out split
    np.testing.assert_allclose(images("validate", False), images("test", False))
    assert num_examples(dataset, "train") == 10
    for bad in (0, 10, "5000", True):
        dataset["validate_from_train"] = bad
        with pytest.raises(ConfigError, match="dataset.validate_from_train: expected"):
            num_examples(dataset, "train")


@needs_fashion_mnist
def test_first_validation_image_matches_numpy_decode():
    images = reference_idx(os.path.join(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz"))
    labels = reference_idx(os.path.join(FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz"))
    dataset = without_preprocessing(load_config("fashion_mnist"))
    batch, batch_labels = first_batch(make_dataset(dataset, "validate", 4, False))
    np.testing.assert_allclose(batch[0, :, :, 0], images[0] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(batch_labels, labels[:4])


@pytest.mark.parametrize("compress", [False, True])
def test_written_idx_files_read_back(tmp_path, compress):
    dataset, arrays = tiny_dataset(tmp_path, compress)
    for split, prefix in (("train", "train"), ("validate", "t10k")):
        images, labels = first_batch(make_dataset(dataset, split, 6, training=False, cache=True))
        np.testing.assert_allclose(images[..., 0], arrays[prefix][0] / 255.0, atol=1e-6)
        np.testing.assert_array_equal(labels, arrays[prefix][1])


def test_relative_source_path_is_searched_under_each_entry(tmp_path):
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    dataset, arrays = tiny_dataset(tmp_path / "data" / "tiny", compress=True)
    dataset["source"]["path"] = "tiny"
    search_path = (str(tmp_path), str(tmp_path / "data"))
    images, _ = first_batch(make_dataset(dataset, "train", 6, False, search_path=search_path))
    np.testing.assert_allclose(images[..., 0], arrays["train"][0] / 255.0, atol=1e-6)


def test_idx_with_bad_magic_number_or_truncated_data_is_a_data_error(tmp_path):
    dataset, _ = tiny_dataset(tmp_path, compress=False)
    images_path = tmp_path / "train-images-idx3-ubyte"
    content = images_path.read_bytes()
    images_path.write_bytes(b"\x12\x34" + content[2:])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: not an IDX file"):
        make_dataset(dataset, "train", 2, False)
    images_path.write_bytes(content[:-7])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: .*truncated"):
        make_dataset(dataset, "train", 2, False)
    gz_path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(gz_path, np.zeros(6, np.uint8), compress=True)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    gz_path.write_bytes(gz_path.read_bytes()[:-10])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        read_idx(str(gz_path))


def test_missing_idx_files_and_no_tfds_is_one_data_error(tmp_path, monkeypatch):
    def unavailable(*args, **kwargs):
        raise RuntimeError("no route to host\nsecond line of details")

    monkeypatch.setattr(tfds, "builder", unavailable)
    dataset = load_config("fashion_mnist")
    dataset["source"]["data_dir"] = str(tmp_path / "tfds")
    with pytest.raises(DataError) as error:
        make_dataset(dataset, "train", 8, True, search_path=(str(tmp_path),))
    message = str(error.value)
    assert "\n" not in message
    assert f"no IDX files in {tmp_path}/fashion-mnist" in message
    assert f"TensorFlow Datasets could not load 'fashion_mnist' from {tmp_path}/tfds (no route to host)" in message
    assert "apt-get install dataset-fashion-mnist" in message and "dataset.source.path" in message


def test_offline_tfds_fails_fast_with_reason(tmp_path, monkeypatch):
    def no_name_resolution(*args, **kwargs):
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_name_resolution)
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    dataset = load_config("mnist")
    dataset["source"]["data_dir"] = str(tmp_path)
    with pytest.raises(DataError) as error:
        make_dataset(dataset, "validate", 8, False)
    message = str(error.value)
    assert "\n" not in message
    assert f"could not load 'mnist' from {tmp_path} (no network (cannot resolve" in message
    assert "dataset.source.data_dir" in message


# --- TensorFlow Datasets (mocked: no download) --------------------------------------------------------------------


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3)), ("cifar100", (32, 32, 3))])
def test_tfds_sources_give_the_declared_shape(name, shape):
    dataset = load_config(name)
    with tfds.testing.mock_data(num_examples=10):
        for split, training in (("train", True), ("validate", False)):
            images, labels = first_batch(make_dataset(dataset, split, 4, training, seed=0))
            assert images.shape == (4, *shape) and images.dtype == np.float32
            assert labels.dtype == np.int32 and 0 <= labels.min() and labels.max() < dataset["task"]["num_classes"]


def test_idx_source_falls_back_to_tfds(tmp_path):
    dataset = load_config("fashion_mnist")
    with tfds.testing.mock_data(num_examples=5):
        images, _ = first_batch(make_dataset(dataset, "validate", 5, False, search_path=(str(tmp_path),)))
    assert images.shape == (5, 28, 28, 1)


# --- preprocessing steps ------------------------------------------------------------------------------------------


def run_step(spec, image, shape=(8, 8, 3), moment=None, seed=7):
    steps = compile_steps([spec], "dataset.task.preprocess.train")
    return apply_steps(tf.constant(image, tf.float32), steps, shape, moment, tf.constant(seed, tf.int64)).numpy()


@pytest.fixture
def image():
    return np.random.default_rng(1).random((8, 8, 3)).astype(np.float32)


def test_linear_map(image):
    mapped = run_step({"type": "linear_map", "scale": 2, "shift": -0.5}, image)
    np.testing.assert_allclose(mapped, image * 2 - 0.5, rtol=1e-6)


def test_the_keras_caffe_override_gives_bgr_0_255_minus_the_means(image):
    from mayo_lite.config import Config
    cfg = Config()
    cfg.load("datasets/imagenet.yaml")
    cfg.load("datasets/override/keras_caffe.yaml")
    steps = compile_steps(cfg.get("dataset.task.preprocess.final_cpu"), "final_cpu")
    result = apply_steps(tf.constant(image), steps, (8, 8, 3), cfg.get("dataset.task.moment"),
                         tf.constant(0, tf.int64)).numpy()
    import keras
    expected = keras.applications.vgg16.preprocess_input(image[None] * 255.0)[0]  # Keras' own, mode "caffe"
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-3)


def test_normalize_channels_and_subtract_channel_means(image):
    moment = {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 2.0]}
    mean, std = np.array(moment["mean"]), np.array(moment["std"])
    normalized = run_step({"type": "normalize_channels"}, image, moment=moment)
    np.testing.assert_allclose(normalized, (image - mean) / std, rtol=1e-5, atol=1e-6)
    centred = run_step({"type": "subtract_channel_means"}, image, moment=moment)
    np.testing.assert_allclose(centred, image - mean, atol=1e-6)


def test_crops(image):
    np.testing.assert_array_equal(run_step({"type": "central_crop", "fraction": 0.5}, image), image[2:6, 2:6])
    np.testing.assert_array_equal(run_step({"type": "crop_or_pad", "height": 4, "width": 6}, image), image[2:6, 1:7])
    padded = run_step({"type": "crop_or_pad", "height": 12, "width": 10}, image)
    expected = np.zeros((12, 10, 3), np.float32)
    expected[2:10, 1:9] = image
    np.testing.assert_array_equal(padded, expected)
    window = run_step({"type": "crop", "top": 1, "left": 2, "height": 3, "width": 5}, image)
    np.testing.assert_array_equal(window, image[1:4, 2:7])


def test_resize(image):
    resized = run_step({"type": "resize", "height": 5, "width": 11}, image)
    assert resized.shape == (5, 11, 3)
    assert image.min() - 1e-6 <= resized.min() and resized.max() <= image.max() + 1e-6
    assert run_step({"type": "resize"}, image, shape=(4, 4, 3)).shape == (4, 4, 3)


def test_standardize_image(image):
    expected = (image - image.mean()) / max(image.std(), 1 / np.sqrt(image.size))
    np.testing.assert_allclose(run_step({"type": "standardize_image"}, image), expected, rtol=1e-4, atol=1e-5)


def test_random_flip_is_identity_or_mirror(image):
    outcomes = set()
    for seed in range(12):
        flipped = run_step({"type": "random_flip"}, image, seed=seed)
        if np.array_equal(flipped, image):
            outcomes.add("identity")
        else:
            np.testing.assert_array_equal(flipped, image[:, ::-1])
            outcomes.add("mirror")
    assert outcomes == {"identity", "mirror"}


def test_random_crop_is_a_sub_window(image):
    corners = set()
    for seed in range(8):
        window = run_step({"type": "random_crop", "height": 5, "width": 6}, image, seed=seed)
        assert window.shape == (5, 6, 3)
        matches = [(i, j) for i in range(4) for j in range(3) if np.array_equal(image[i : i + 5, j : j + 6], window)]
        assert matches
        corners.add(matches[0])
    assert len(corners) > 1


def test_distortions_keep_shape_and_range(image):
    for shape, picture in (((8, 8, 3), image), ((8, 8, 1), image[..., :1])):
        colour = run_step({"type": "distort_color"}, picture, shape=shape)
        assert colour.shape == picture.shape and 0 <= colour.min() and colour.max() <= 1
    boxed = run_step({"type": "distort_bbox", "area_range": [0.3, 1.0]}, image, shape=(6, 5, 3))
    assert boxed.shape == (6, 5, 3) and image.min() - 1e-6 <= boxed.min() and boxed.max() <= image.max() + 1e-6


def test_steps_are_a_table():
    assert set(PREPROCESS_STEPS) == {
        "random_flip", "random_crop", "central_crop", "crop", "crop_or_pad", "resize", "normalize_channels",
        "subtract_channel_means", "linear_map", "standardize_image", "distort_color", "distort_bbox",
        "reverse_channels", "permute_channels",
    }
    assert set(SOURCES) == {"idx", "tfds", "synthetic", "tfrecord"}


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"type": "sharpen"}, r"train\[0\]: unknown preprocessing step 'sharpen'; known steps: central_crop, crop,"),
        ({"type": "random_crop", "heigth": 3}, r"`random_crop` has no argument `heigth`; its arguments: height, width"),
        ({"type": "crop", "top": 0}, r"step `crop` needs the argument `left`"),
        ({"type": "central_crop", "fraction": 1.5}, r"step `central_crop`: .*argument `fraction`.*Received: fraction=1.5"),
        ({"type": "resize", "method": "cubic"}, r"step `resize`: Invalid value received for argument `method`"),
        ({"type": "random_crop", "height": 9, "width": 2}, r"`random_crop` cannot take a 9x2 window from a 8x8 image"),
        ({"type": "normalize_channels"}, r"needs dataset.task.moment.mean"),
        ({"random_flip": None}, r"a mapping with a `type` key"),
    ],
)
def test_bad_steps_are_config_errors(image, spec, message):
    with pytest.raises(ConfigError, match=message):
        run_step(spec, image)


# --- the pipeline -------------------------------------------------------------------------------------------------


def test_training_shuffle_and_augmentation_follow_the_seed():
    dataset = load_config("synthetic")
    one = first_batch(make_dataset(dataset, "train", 16, True, seed=1))
    again = first_batch(make_dataset(dataset, "train", 16, True, seed=1))
    other = first_batch(make_dataset(dataset, "train", 16, True, seed=2))
    np.testing.assert_array_equal(one[0], again[0])
    np.testing.assert_array_equal(one[1], again[1])
    assert not np.array_equal(one[1], other[1])
    epochs = make_dataset(dataset, "train", 16, True, seed=1)
    assert not np.array_equal(first_batch(epochs)[1], first_batch(epochs)[1])  # reshuffled on every iteration


def test_validation_order_is_the_source_order():
    dataset = load_config("synthetic")
    source = [label for _, label in SOURCES["synthetic"](dataset, "validate", ()).dataset.as_numpy_iterator()]
    batches = make_dataset(dataset, "validate", 100, False)
    labels = np.concatenate([labels for _, labels in batches.as_numpy_iterator()])
    np.testing.assert_array_equal(labels, source)
    assert len(labels) == num_examples(dataset, "validate") == 256
    dropped = make_dataset(dataset, "validate", 100, False, drop_remainder=True)
    assert [len(labels) for _, labels in dropped] == [100, 100]


def test_background_class_shifts_labels():
    dataset = load_config("synthetic")
    plain = first_batch(make_dataset(dataset, "validate", 32, False))[1]
    dataset["task"]["background_class"] = {"use": True}  # Mayo's rule: the network gets one more output
    np.testing.assert_array_equal(first_batch(make_dataset(dataset, "validate", 32, False))[1], plain + 1)
    assert num_classes(dataset) == dataset["task"]["num_classes"] + 1


def test_step_errors_from_the_pipeline_are_one_line():
    dataset = load_config("synthetic")
    dataset["task"]["preprocess"]["train"] = [{"type": "random_flip"}, {"type": "crop", "top": 30, "left": 2}]
    with pytest.raises(ConfigError) as error:
        make_dataset(dataset, "train", 8, True)
    assert str(error.value) == (
        "dataset.task.preprocess.train[1]: step `crop` cannot take a 32x32 window at (30, 2) from a 32x32 image"
    )


def test_images_of_another_shape_than_the_task_are_a_config_error():
    dataset = load_config("synthetic")
    dataset["task"]["preprocess"]["validate"] = [{"type": "central_crop", "fraction": 0.5}]
    with pytest.raises(ConfigError, match=r"dataset.task.shape is 32x32x3 .* validate images of synthetic are 16x16x3"):
        make_dataset(dataset, "validate", 8, False)


def test_unknown_source_type_and_missing_keys_are_config_errors():
    dataset = load_config("synthetic")
    dataset["source"]["type"] = "lmdb"
    with pytest.raises(ConfigError, match="source.type 'lmdb'; known source types: idx, synthetic, tfds, tfrecord"):
        make_dataset(dataset, "train", 8, True)
    del dataset["task"]["shape"]["channels"]
    with pytest.raises(ConfigError, match="dataset.task.shape.channels is missing"):
        make_dataset(dataset, "train", 8, True)
    with pytest.raises(ConfigError, match="Unknown dataset split 'holdout'; expected one of: train, validate, test"):
        num_examples(dataset, "holdout")


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "cifar10", "cifar100", "synthetic"])
def test_every_dataset_config_builds_both_splits(name, tmp_path):
    dataset = load_config(name)
    shape = tuple(dataset["task"]["shape"][key] for key in ("height", "width", "channels"))
    with tfds.testing.mock_data(num_examples=4):
        for split, training in (("train", True), ("validate", False)):
            batches = make_dataset(dataset, split, 2, training, seed=5, search_path=(str(tmp_path),))
            assert batches.element_spec[0].shape.as_list() == [None, *shape]
            images, _ = first_batch(batches)
            assert np.isfinite(images).all()
