"""The ImageNet-scale model descriptions (configs/models/*.yaml): shapes, MACs and parameters against published figures.

Parameter counts here are Keras counts, which include batch norm's moving mean and variance; torchvision counts only
trainable tensors, so the trainable count is compared with torchvision where the layouts agree. MACs follow
mayo_lite.models.estimate (convolutions and dense layers only).
"""

import functools
import math

import numpy as np
import pytest

import keras

from mayo_lite.config import Config
from mayo_lite.models.estimate import layer_table, totals
from mayo_lite.net import build_model

IMAGENET = {
    "name": "imagenet",
    "task": {"num_classes": 1000, "background_class": {"use": False},
             "shape": {"height": 224, "width": 224, "channels": 3}},
}


def dataset(name, num_classes, size, channels=3):
    return {"name": name, "task": {"num_classes": num_classes, "background_class": {"use": False},
                                   "shape": {"height": size, "width": size, "channels": channels}}}


def build(model_file, section=None):
    """The model of a bundled YAML file, with `section` as its dataset (ImageNet 224×224×3 by default)."""
    section = section or IMAGENET
    cfg = Config()
    cfg.load(model_file)
    cfg.set("dataset", section)
    shape = section["task"]["shape"]
    return build_model(cfg.get("model"), (shape["height"], shape["width"], shape["channels"]))


def count(weights):
    return sum(math.prod(weight.shape) for weight in weights)


@functools.lru_cache(maxsize=None)
def summary(model_file):
    """Totals of a model on ImageNet, computed once per file (the models themselves are not kept)."""
    model = build(model_file)
    rows = layer_table(model)
    result = {**totals(rows), "trainable": count(model.trainable_weights), "output": tuple(model.output.shape[1:]),
              "keras_params": model.count_params()}
    keras.backend.clear_session()
    return result


@functools.lru_cache(maxsize=None)
def keras_application(name):
    """Parameters (all, trainable, convolution biases) and MACs of a Keras Applications model, no weights loaded."""
    model = getattr(keras.applications, name)(weights=None)
    rows = layer_table(model)
    conv_biases = sum(math.prod(layer.bias.shape) for layer in model.layers
                      if isinstance(layer, keras.layers.Conv2D) and layer.use_bias)
    result = {"params": model.count_params(), "trainable": count(model.trainable_weights),
              "conv_biases": conv_biases, "macs": totals(rows)["macs"]}
    keras.backend.clear_session()
    return result


# file -> (published MACs on 224×224×3, published parameters, exact MACs measured here, exact Keras parameters)
PUBLISHED = {
    "models/vgg16.yaml": (15.47e9, 138_357_544, 15_470_264_320, 138_357_544),
    "models/vgg16_bn.yaml": (15.47e9, 138_365_992, 15_470_264_320, 138_370_216),
    "models/resnet18.yaml": (1.82e9, 11_689_512, 1_814_073_344, 11_699_112),
    "models/resnet50.yaml": (4.09e9, 25_557_032, 4_089_184_256, 25_610_152),
    "models/mobilenet.yaml": (568.7e6, 4_253_864, 568_740_352, 4_253_864),
    "models/alexnet.yaml": (0.714e9, 61_100_840, 714_188_480, 61_100_840),
}


@pytest.mark.parametrize("model_file", sorted(PUBLISHED))
def test_costs_match_the_published_figures(model_file):
    published_macs, published_params, macs, params = PUBLISHED[model_file]
    result = summary(model_file)
    assert result["output"] == (1000,)
    assert result["macs"] == pytest.approx(published_macs, rel=0.01)
    assert result["params"] == pytest.approx(published_params, rel=0.01)
    assert result["params"] == result["keras_params"]
    # Exact figures (hand-checked; see the header of each file): a change here is a change of the architecture.
    assert (result["macs"], result["params"]) == (macs, params)


def test_vgg16_is_keras_applications_vgg16():
    ours, theirs = summary("models/vgg16.yaml"), keras_application("VGG16")
    assert ours["params"] == theirs["params"] == 138_357_544
    assert ours["macs"] == theirs["macs"]


def test_vgg16_bn_is_torchvision_vgg16_bn_up_to_conventions():
    ours, plain = summary("models/vgg16_bn.yaml"), summary("models/vgg16.yaml")
    bn_channels = 2 * 64 + 2 * 128 + 3 * 256 + 6 * 512
    # Batch norm adds gamma, beta and the two moving statistics per channel, and takes the convolution bias away.
    assert ours["params"] == plain["params"] + 3 * bn_channels
    assert ours["trainable"] == plain["params"] + bn_channels
    # torchvision keeps the convolution biases and counts no moving statistics.
    assert ours["trainable"] + bn_channels == 138_365_992
    assert ours["macs"] == plain["macs"]


def test_mobilenet_is_keras_applications_mobilenet():
    ours, theirs = summary("models/mobilenet.yaml"), keras_application("MobileNet")
    assert ours["params"] == theirs["params"] == 4_253_864
    assert ours["trainable"] == theirs["trainable"]
    assert ours["macs"] == theirs["macs"]


def test_resnet50_is_keras_resnet50_without_conv_biases_and_with_the_v15_stride():
    ours, theirs = summary("models/resnet50.yaml"), keras_application("ResNet50")
    # Keras' ResNet50 (v1) gives its convolutions biases that batch norm makes redundant; otherwise the same tensors.
    assert ours["params"] == theirs["params"] - theirs["conv_biases"]
    assert ours["params"] == pytest.approx(theirs["params"], rel=0.01)
    # v1.5 moves the stride from the first 1×1 to the 3×3 convolution, which costs more (3.86 G -> 4.09 G).
    assert theirs["macs"] == pytest.approx(3.86e9, rel=0.01)
    assert ours["macs"] > theirs["macs"]


@pytest.mark.parametrize("model_file, expected", [("models/resnet18.yaml", 11_689_512),
                                                   ("models/resnet50.yaml", 25_557_032)])
def test_resnet_trainable_parameters_are_torchvision_counts(model_file, expected):
    assert summary(model_file)["trainable"] == expected


def test_resnet18_follows_torchvision_padding_and_shortcuts():
    model = build("models/resnet18.yaml")
    layers = {layer.name: layer for layer in model.layers}
    assert layers["conv1.pad"].padding == ((3, 3), (3, 3))
    assert layers["conv1"].output.shape[1:] == (112, 112, 64)
    assert layers["pool1.pad"].padding == ((1, 1), (1, 1))
    assert layers["pool1"].output.shape[1:] == (56, 56, 64)
    # Stride-2 3×3 convolutions pad (1, 1) as PyTorch, not TF's `same` (0, 1); stride 1 uses `same`.
    for block, size, depth in (("b21", 28, 128), ("b31", 14, 256), ("b41", 7, 512)):
        assert layers[f"{block}.conv1.pad"].padding == ((1, 1), (1, 1))
        assert layers[f"{block}.conv1"].strides == (2, 2)
        assert layers[f"{block}.downsample"].kernel_size == (1, 1)
        assert layers[f"{block}.downsample"].strides == (2, 2)
        assert layers[f"{block}.add"].output.shape[1:] == (size, size, depth)
    assert "b22.conv1.pad" not in layers and layers["b22.conv1"].padding == "same"
    # Identity shortcuts have no projection.
    assert not any(name.startswith(("b11.downsample", "b12.downsample", "b22.downsample")) for name in layers)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 20 and not any(conv.use_bias for conv in convs)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 20
    assert all(norm.momentum == 0.9 and norm.epsilon == 1e-5 and norm.scale for norm in norms)
    assert model.output.shape[1:] == (1000,)
    outputs = model(np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32))
    assert outputs.shape == (1, 1000) and np.all(np.isfinite(outputs))


def test_resnet50_puts_the_stride_on_the_3x3_convolution():
    model = build("models/resnet50.yaml")
    layers = {layer.name: layer for layer in model.layers}
    for block in ("b21", "b31", "b41"):
        assert layers[f"{block}.conv1"].strides == (1, 1)
        assert layers[f"{block}.conv2"].strides == (2, 2) and layers[f"{block}.conv2"].kernel_size == (3, 3)
        assert layers[f"{block}.downsample"].strides == (2, 2)
    # Stage 1 starts with a stride-1 projection to 256 channels.
    assert layers["b11.downsample"].strides == (1, 1) and layers["b11.downsample"].filters == 256
    assert layers["b43.conv3"].output.shape[1:] == (7, 7, 2048)
    blocks = {name.split(".")[0] for name in layers if name.startswith("b") and "." in name}
    assert len(blocks) == 16


def test_mobilenet_has_separately_named_depthwise_and_pointwise_layers():
    model = build("models/mobilenet.yaml")
    layers = {layer.name: layer for layer in model.layers}
    widths = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    for index, width in enumerate(widths, start=1):
        assert isinstance(layers[f"conv{index}.depthwise"], keras.layers.DepthwiseConv2D)
        pointwise = layers[f"conv{index}.pointwise"]
        assert type(pointwise) is keras.layers.Conv2D and pointwise.kernel_size == (1, 1)
        assert pointwise.filters == width
    assert layers["conv13.pointwise"].output.shape[1:] == (7, 7, 1024)
    rows = {row["name"]: row for row in layer_table(model)}
    assert rows["conv1.pointwise"]["macs"] == 112 * 112 * 32 * 64
    assert rows["conv1.depthwise"]["macs"] == 112 * 112 * 9 * 32
    assert model.output.shape[1:] == (1000,)


@pytest.mark.parametrize("name, num_classes", [("cifar10", 10), ("cifar100", 100)])
@pytest.mark.parametrize("model_file", ["models/vgg16.yaml", "models/vgg16_bn.yaml"])
def test_vgg16_takes_the_cifar_head_on_cifar(model_file, name, num_classes):
    model = build(model_file, dataset(name, num_classes, 32))
    layers = {layer.name: layer for layer in model.layers}
    assert layers["pool5"].output.shape[1:] == (1, 1, 512)
    assert layers["flatten"].output.shape[1:] == (512,)
    assert layers["fc6"].units == layers["fc7"].units == 512
    assert layers["logits"].units == num_classes
    rows = totals(layer_table(model))
    assert rows["macs"] == 313_725_952 + 512 * (num_classes - 10)
    assert model(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, num_classes)


def test_vgg16_keeps_the_imagenet_head_for_other_datasets():
    model = build("models/vgg16.yaml", dataset("synthetic", 10, 32))
    assert model.get_layer("fc6").units == model.get_layer("fc7").units == 4096
