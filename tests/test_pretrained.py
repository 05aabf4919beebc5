"""Pretrained weights of Keras Applications and torchvision mapped onto the YAML models (mayo_lite.weights).

Numerical: each source network gets random weights (random batch-norm statistics and biases too, so that every
mapping rule matters), its weights go through the importer into this project's model, and both networks run on the
same random input; the outputs must agree within 1e-4. Nothing is downloaded: Keras Applications are built with
weights=None, and the torchvision networks are re-implemented here with plain torch.nn in torchvision's module
naming (torchvision itself is not needed). The torch references run in float64, so the differences are this
project's float32 arithmetic alone.
"""

import math
import urllib.error

import numpy as np
import pytest

import keras

from mayo_lite.config import Config
from mayo_lite.errors import CheckpointError
from mayo_lite.net import build_model
from mayo_lite.weights import read_pretrained
from mayo_lite.weights import torchvision as pretrained
from mayo_lite.weights.architectures import TORCHVISION
from mayo_lite.weights.keras_applications import from_keras_application
from mayo_lite.weights.checkpoint import read

import torch  # a test-only reference (requirements.txt); torchvision is not needed
from torch import nn
TOLERANCE = 1e-4

# resnet50.yaml as ResNet v1 (Keras' ResNet50): the stride of stages 2-4 on the first 1×1 convolution.
RESNET50_V1 = [(f"model.layers.{block}.layers.{key}", value) for block in ("b21", "b31", "b41")
               for key, value in (("conv1.stride", 2), ("conv2.stride", 1), ("conv2.padding", "same"))]


def build(name, size, num_classes=1000, overrides=(), masked=False):
    cfg = Config()
    cfg.load(f"models/{name}.yaml")
    cfg.set("dataset", {"name": "imagenet", "task": {"num_classes": num_classes,
                                                     "shape": {"height": size, "width": size, "channels": 3}}})
    for key, value in overrides:
        cfg.set(key, value)
    return build_model(cfg.get("model"), (size, size, 3), masked=masked)


def assign(model, values):
    """Session.load's assignment: by name, `model/<variable.path>`; every value must find its variable."""
    variables = {f"model/{variable.path}": variable for variable in model.variables}
    assert set(values) <= set(variables), sorted(set(values) - set(variables))[:5]
    for name, value in values.items():
        variables[name].assign(value)


def forward(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


def randomize_keras(application, seed, gain=2.0):
    """Kernels of variance gain / fan-in; biases, batch-norm scales, offsets and statistics away from their
    defaults. A deep residual network needs gain < 2 to keep its outputs near 1 (they double in variance at every
    block otherwise, and 1e-4 would be below float32's resolution)."""
    rng = np.random.default_rng(seed)
    for layer in application.layers:
        for variable in layer.weights:
            role, shape = variable.path.rsplit("/", 1)[-1], tuple(variable.shape)
            if role == "kernel":
                fan_in = math.prod(shape[:2]) if isinstance(layer, keras.layers.DepthwiseConv2D) else math.prod(
                    shape[:-1])
                value = rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(gain / fan_in))
            elif role in ("gamma", "moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            else:  # bias, beta, moving_mean
                value = 0.1 * rng.standard_normal(shape)
            variable.assign(value.astype(np.float32))


def images(size, seed=0):
    return np.random.default_rng(seed).standard_normal((1, size, size, 3)).astype(np.float32)


# -- Keras Applications ----------------------------------------------------------------------------------------


def test_keras_vgg16_maps_exactly():
    # The ImageNet weights need 224×224 (fc6 reads a 7×7×512 map); with random weights 64×64 (2×2×512) checks the
    # same mapping in a fraction of the time (both frameworks flatten NHWC alike, so nothing is permuted).
    application = keras.applications.VGG16(weights=None, classifier_activation=None, input_shape=(64, 64, 3))
    randomize_keras(application, 1)
    model = build("vgg16", 64)
    values = from_keras_application(application, "vgg16", model)
    assert len(values) == 32  # 16 weighted layers, kernel and bias
    assign(model, values)
    x = images(64)
    difference = np.max(np.abs(forward(application, x) - forward(model, x)))
    print(f"max abs difference {difference:.3g}")
    assert difference < TOLERANCE, difference


def test_keras_mobilenet_maps_exactly():
    # ReLU6, batch-norm epsilon 1e-3 and Keras' (0, 1) padding before stride-2 depthwise convolutions all agree
    # with mobilenet.yaml; any input size works (average pool), 128 keeps it quick.
    application = keras.applications.MobileNet(weights=None, classifier_activation=None, input_shape=(128, 128, 3))
    randomize_keras(application, 2)
    model = build("mobilenet", 128)
    values = from_keras_application(application, "mobilenet", model)
    assign(model, values)
    x = images(128, 1)
    difference = np.max(np.abs(forward(application, x) - forward(model, x)))
    print(f"max abs difference {difference:.3g}")
    assert difference < TOLERANCE, difference


@pytest.fixture(scope="module")
def keras_resnet50():
    application = keras.applications.ResNet50(weights=None, classifier_activation=None, input_shape=(64, 64, 3))
    randomize_keras(application, 3, gain=0.5)
    return application


def test_keras_resnet50_maps_exactly_onto_the_v1_layout(keras_resnet50):
    # Convolution biases fold into the batch norms' moving means; Keras' epsilon 1.001e-5 into the variances.
    model = build("resnet50", 64, overrides=RESNET50_V1)
    values = from_keras_application(keras_resnet50, "resnet50", model)
    assert "model/b21.conv1/bias" not in values
    assign(model, values)
    x = images(64, 2)
    difference = np.max(np.abs(forward(keras_resnet50, x) - forward(model, x)))
    print(f"max abs difference {difference:.3g}")
    assert difference < TOLERANCE, difference


def test_keras_resnet50_is_refused_for_the_v15_layout(keras_resnet50):
    model = build("resnet50", 64)
    with pytest.raises(CheckpointError, match=r"b21\.conv1 has stride 1 where conv3_block1_1_conv has 2.*torchvision"):
        from_keras_application(keras_resnet50, "resnet50", model)
    # read_pretrained refuses before building (and downloading) anything.
    with pytest.raises(CheckpointError, match=r"^keras:resnet50: .*stride.*torchvision:/path/resnet50"):
        read_pretrained("keras:resnet50", model)


def test_keras_weights_missing_offline_are_one_clear_error(monkeypatch, tmp_path):
    # An empty Keras home and no network, whatever this machine has (Keras' private cache location and download).
    from keras.src.backend import config
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))
    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    with pytest.raises(CheckpointError) as error:
        read_pretrained("keras:mobilenet", build("mobilenet", 128))
    message = str(error.value)
    assert message.startswith("keras:mobilenet: the ImageNet weights are not in ")
    assert "could not be downloaded" in message and "mobilenet_1_0_224_tf.h5" in message and "\n" not in message


def test_unknown_keras_model_and_other_selectors():
    model = build("resnet18", 32)
    with pytest.raises(CheckpointError, match=r"^keras:inception_v3: unknown .*'inception_v3'.*keras:vgg16"):
        read_pretrained("keras:inception_v3", model)
    with pytest.raises(CheckpointError, match=r"^keras:vgg16: .*has no layer conv1_1.*models/vgg16\.yaml"):
        read_pretrained("keras:vgg16", model)
    for selector in ("latest", "checkpoints/x.npz", 3, None):
        assert read_pretrained(selector, model) is None


# -- torchvision, re-implemented in torch.nn with its module names ---------------------------------------------


if torch is not None:
    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5: the stride here
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + identity)

    class ResNet(nn.Module):
        def __init__(self, block, layers, num_classes=1000):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._make_layer(block, 64, layers[0])
            self.layer2 = self._make_layer(block, 128, layers[1], 2)
            self.layer3 = self._make_layer(block, 256, layers[2], 2)
            self.layer4 = self._make_layer(block, 512, layers[3], 2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512 * block.expansion, num_classes)

        def _make_layer(self, block, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                           nn.BatchNorm2d(planes * block.expansion))
            layers = [block(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * block.expansion
            layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class VGG(nn.Module):
        def __init__(self, batch_norm, hidden=4096, num_classes=1000):
            super().__init__()
            layers, channels = [], 3
            for value in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
                if value == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                    continue
                layers.append(nn.Conv2d(channels, value, 3, padding=1))
                layers += [nn.BatchNorm2d(value), nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(inplace=True)]
                channels = value
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(hidden, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def randomize_torch(network, seed, gain=2.0):
    """Weights of variance gain / fan-in; biases, batch-norm scales, offsets and running statistics away from their
    defaults (see randomize_keras for the gain)."""
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, scale):
        return torch.randn(shape, generator=generator) * scale
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.copy_(normal(module.weight.shape, math.sqrt(gain / module.weight[0].numel())))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.1))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                module.bias.copy_(normal(module.bias.shape, 0.1))
                module.running_mean.copy_(normal(module.running_mean.shape, 0.1))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    return network.eval()


def torch_forward(network, x):
    """The float64 reference on NHWC images."""
    with torch.no_grad():
        return network.double()(torch.from_numpy(x.transpose(0, 3, 1, 2)).double()).numpy()


def save(network, path):
    torch.save(network.state_dict(), path)
    return path


def test_torchvision_vgg16_bn_maps_exactly(tmp_path):
    # 224×224, where pool5 is 7×7 and torchvision's adaptive average pool changes nothing; the classifier is
    # narrower than 4096 to keep the test light, the (C, H, W) -> (H, W, C) permutation of fc6 is the same.
    network = randomize_torch(VGG(batch_norm=True, hidden=256), 4, gain=1.0)
    path = save(network, tmp_path / "vgg16_bn.pth")
    model = build("vgg16_bn", 224, overrides=[("model.layers.fc6.num_outputs", 256),
                                              ("model.layers.fc7.num_outputs", 256)])
    values, description = read_pretrained(f"torchvision:{path}", model)
    assert description.startswith("torchvision VGG-16-BN state dict")
    assert "model/conv1_1/bias" not in values  # the convolution biases went into the batch norms
    assign(model, values)
    x = images(224, 3)
    difference = np.max(np.abs(torch_forward(network, x) - forward(model, x)))
    print(f"max abs difference {difference:.3g}")
    assert difference < TOLERANCE, difference


@pytest.mark.parametrize("num_classes", [1000, 1001])
def test_torchvision_resnet18_maps_exactly(tmp_path, num_classes):
    network = randomize_torch(ResNet(BasicBlock, [2, 2, 2, 2]), 5, gain=0.5)
    path = save(network, tmp_path / "resnet18.pth")
    model = build("resnet18", 64, num_classes, masked=num_classes == 1001)  # with pruning masks: left alone
    values, _ = read_pretrained(f"torchvision:{path}", model)
    assert not any(name.endswith("/mask") for name in values)
    assign(model, values)
    x = images(64, 4)
    reference, ours = torch_forward(network, x), forward(model, x)
    if num_classes == 1001:
        # The background class: outputs 1..1000 are the source's, output 0 has no weights and a low bias.
        bias = network.fc.bias.detach().numpy()
        np.testing.assert_array_equal(values["model/logits/kernel"][:, 0], 0.0)
        assert values["model/logits/bias"][0] == pytest.approx(bias.min() - 10.0)
        assert np.argmax(ours) == np.argmax(reference) + 1
        ours = ours[:, 1:]
    difference = np.max(np.abs(reference - ours))
    print(f"max abs difference {difference:.3g}")
    assert difference < TOLERANCE, difference


def test_torchvision_resnet50_maps_exactly_with_the_architecture_named(tmp_path):
    network = randomize_torch(ResNet(Bottleneck, [3, 4, 6, 3]), 6, gain=0.5)
    path = save(network, tmp_path / "weights.pth")
    model = build("resnet50", 64)
    values, description = read_pretrained(f"torchvision:resnet50:{path}", model)
    assert description.startswith("torchvision ResNet-50")
    assign(model, values)
    x = images(64, 5)
    difference = np.max(np.abs(torch_forward(network, x) - forward(model, x)))
    print(f"max abs difference {difference:.3g}")
    assert difference < TOLERANCE, difference


# -- errors ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_state():
    """A torchvision ResNet-18 state dict (as numpy-backed tensors, copied per test)."""
    return randomize_torch(ResNet(BasicBlock, [2, 2, 2, 2]), 7).state_dict()


@pytest.fixture(scope="module")
def resnet18_model():
    return build("resnet18", 32)


def test_a_state_dict_of_another_architecture_is_refused(tmp_path, resnet18_state, resnet18_model):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18_state, path)
    with pytest.raises(CheckpointError, match=r"torchvision ResNet-18 weights do not fit model 'resnet50': "
                                              r"layer1\.0\.conv1\.weight \(64, 64, 3, 3\) does not fit "
                                              r"b11\.conv1/kernel \(1, 1, 64, 64\)"):
        read_pretrained(f"torchvision:{path}", build("resnet50", 32))
    with pytest.raises(CheckpointError, match=r"not a torchvision resnet50 state dict: it lacks "
                                              r"layer1\.0\.bn3\.bias, .* and 161 more$"):
        read_pretrained(f"torchvision:resnet50:{path}", resnet18_model)
    other = {f"encoder.{key}": value for key, value in resnet18_state.items()}
    torch.save(other, path)
    with pytest.raises(CheckpointError, match=r"not a torchvision vgg16, vgg16_bn, resnet18, resnet50 state dict "
                                              r"\(closest: \w+\): it lacks .* has unexpected encoder\.bn1\.bias"):
        read_pretrained(f"torchvision:{path}", resnet18_model)


def test_a_missing_or_misshapen_tensor_is_named(tmp_path, resnet18_state, resnet18_model):
    path = tmp_path / "resnet18.pth"
    state = {key: value for key, value in resnet18_state.items() if key != "layer4.1.bn2.running_var"}
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"not a torchvision .*\(closest: resnet18\): it lacks "
                                              r"layer4\.1\.bn2\.running_var$"):
        read_pretrained(f"torchvision:{path}", resnet18_model)
    state = dict(resnet18_state, **{"layer3.1.conv2.weight": torch.zeros(256, 256, 1, 1)})
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"layer3\.1\.conv2\.weight \(256, 256, 1, 1\) does not fit "
                                              r"b32\.conv2/kernel \(3, 3, 256, 256\)"):
        read_pretrained(f"torchvision:{path}", resnet18_model)
    # A classifier for another number of classes is a shape mismatch too.
    with pytest.raises(CheckpointError, match=r"fc\.weight \(1000, 512\) does not fit logits/kernel \(512, 10\)"):
        torch.save(resnet18_state, path)
        read_pretrained(f"torchvision:{path}", build("resnet18", 32, num_classes=10))


def test_a_missing_file_or_architecture_is_named(tmp_path, resnet18_model):
    missing = tmp_path / "nothing.pth"
    with pytest.raises(CheckpointError, match=rf"^torchvision:{missing}: no such file {missing}$"):
        read_pretrained(f"torchvision:{missing}", resnet18_model)
    with pytest.raises(CheckpointError, match=r"unknown torchvision architecture 'resnet101'.*vgg16_bn"):
        read_pretrained(f"torchvision:resnet101:{missing}", resnet18_model)


def test_without_torch_the_error_says_what_to_install(tmp_path, monkeypatch, resnet18_model):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(CheckpointError, match=r"needs the `torch` package \(pip install torch\)"):
        read_pretrained(f"torchvision:{path}", resnet18_model)


def test_the_tables_cover_every_tensor_of_the_torch_networks():
    # Every state-dict tensor but num_batches_tracked is in a table, and nothing else is.
    networks = {"resnet18": ResNet(BasicBlock, [2, 2, 2, 2]), "resnet50": ResNet(Bottleneck, [3, 4, 6, 3]),
                "vgg16": VGG(batch_norm=False, hidden=8), "vgg16_bn": VGG(batch_norm=True, hidden=8)}
    for name, network in networks.items():
        keys = {key for key in network.state_dict() if not key.endswith("num_batches_tracked")}
        assert pretrained.expected_keys(TORCHVISION[name]) == keys, name


def test_the_runner_loads_a_state_dict_named_by_system_checkpoint_load(tmp_path, monkeypatch, capsys):
    """Through `my`: the selector loads the weights, prunes them like any checkpoint, and the pruned run continues."""
    from mayo_lite.cli import main
    network = randomize_torch(ResNet(BasicBlock, [2, 2, 2, 2]), 5, gain=0.5)
    path = save(network, tmp_path / "resnet18.pth")
    monkeypatch.chdir(tmp_path)
    dataset = ["dataset.name=imagenet", "dataset.source={type: synthetic}",
               "dataset.task={num_classes: 1000, background_class: {use: false}, shape: {height: 64, width: 64, "
               "channels: 3}, preprocess: {train: null, validate: null, final_cpu: null, final_gpu: null}}",
               "dataset.num_examples_per_epoch={train: 8, validate: 4}", "system.batch_size_per_gpu=4"]
    assert main(["models/resnet18.yaml", *dataset, f"system.checkpoint.load=torchvision:{path}", "eval",
                 "prune.percent=0.3", "prune"]) == 0
    err = capsys.readouterr().err
    assert f"loaded torchvision ResNet-18 state dict {path}" in err
    assert f"continuing from torchvision:{path}" in err  # the pruning session starts from the same weights
    stored, _, _ = read(tmp_path / "checkpoints" / "resnet18" / "imagenet" / "pruned.npz")
    kernel, mask = stored["model/b21.conv1/kernel"], stored["model/b21.conv1/mask"]
    torch_kernel = network.layer2[0].conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    np.testing.assert_allclose(kernel, torch_kernel * mask, atol=1e-6)
