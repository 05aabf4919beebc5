"""Pretrained ImageNet weights of other frameworks, mapped onto this project's models built from YAML.

`system.checkpoint.load` names them with a selector:

    keras:vgg16                              keras.applications.VGG16       onto configs/models/vgg16.yaml
    keras:resnet50                           keras.applications.ResNet50    onto a v1 variant of resnet50.yaml (below)
    keras:mobilenet                          keras.applications.MobileNet   onto configs/models/mobilenet.yaml
    torchvision:/path/file.pth               a torchvision state dict; the architecture (vgg16, vgg16_bn, resnet18,
                                             resnet50) is recognised from its tensor names
    torchvision:resnet18:/path/file.pth      the same, the architecture named (checked against the tensor names)

Keras Applications weights come from the Keras cache (`~/.keras/models/`, or `$KERAS_HOME/models/`), which Keras
fills by downloading where the machine has internet. A `.pth` file is read with `torch.load(weights_only=True)`;
only `torch` is needed, not torchvision. A state dict wrapped as {"state_dict": ...} or {"model": ...}, or with
DataParallel's `module.` prefix, is unwrapped.

`read_pretrained(selector, model)` returns `(values, description)`: `values` maps this project's variable names
(`"model/" + variable.path`, as `Session.variables()` names them) to float32 arrays in Keras layout, for every
weight the source provides; pruning masks (`X/mask`) and other state are not touched. Each source architecture has
a TABLE (`KERAS`, `TORCHVISION`) of `Entry(source, target, kind, ...)`: the source layer (Keras layer name, or
torch module prefix such as `layer2.0.downsample.0`) and this project's layer (`b21.downsample`). Conversions:

* torch convolution weight (out, in, kh, kw) -> Keras kernel (kh, kw, in, out); Linear (out, in) -> Dense (in, out).
* torchvision VGG's first fully connected layer reads a flattened (C, H, W) map, Keras' Flatten gives (H, W, C):
  its columns are permuted (`dense_nchw`; H = W = sqrt(in / C), 7 for torchvision's 224×224 layout).
* BatchNorm: weight/bias -> gamma/beta, running_mean/var -> moving_mean/variance; `num_batches_tracked` ignored.
  Where the source's epsilon differs from the model's (Keras' ResNet50 uses 1.001e-5, resnet50.yaml 1e-5) the
  variance absorbs it: moving_variance += eps_source - eps_model, which is exact.
* A source convolution WITH a bias followed by a batch norm maps onto our convolution WITHOUT one (a slim
  normalizer removes it): BN(conv(x) + b) = BN'(conv(x)) with moving_mean' = moving_mean - b, also exact.
* Background class: when the model's classifier has exactly one output more than the source's (1001 against 1000,
  slim's ImageNet with `dataset.task.background_class.use: true`), the 1000 source classes become outputs 1..1000
  and output 0 gets zero weights and the bias min(source biases) - 10. So outputs 1..1000 are the source's logits
  exactly, and output 0 is a finite constant that starts training from a sane value (unlike -1e4, whose gradient
  would be ~0 and whose softmax term would dominate the loss scale) yet, 10 below the smallest class bias, is
  almost never the argmax (only where every class logit falls 10 below its own bias floor).

Checked before anything is returned, each failure one line naming the culprits: every target layer exists in the
model, every convolution's stride agrees with the source's, every shape fits, and every convolution, dense and batch
norm weight of the model gets a value (the classifier included: a model for another number of classes refuses
ImageNet weights).

Keras' ResNet50 is ResNet v1 (stride 2 on the first 1×1 convolution of stages 2-4); resnet50.yaml is torchvision's
v1.5 (stride on the 3×3). Their weights have the same shapes but compute different functions, so `keras:resnet50`
into resnet50.yaml is refused (load torchvision weights instead). The v1 layout is resnet50.yaml with, for each of
b21, b31 and b41: `layers.conv1.stride=2`, `layers.conv2.stride=1`, `layers.conv2.padding=same`; keras:resnet50
maps onto that exactly (for even feature map sizes, as at 224×224).

Inputs: the weights expect their own preprocessing, which the data pipeline must reproduce (not folded here:
explicit zero padding would make it inexact). keras:vgg16 and keras:resnet50: BGR, 0-255, minus the ImageNet mean
(keras.applications.*.preprocess_input, "caffe"); keras:mobilenet: RGB scaled to [-1, 1]; torchvision: RGB in
[0, 1], minus mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225).
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from mayo_lite.errors import CheckpointError
from mayo_lite.net import dense_sources

PREFIX = "model/"
_SHOWN = 4  # culprits named in one error line

# kind -> the source weights of one layer: torch state-dict suffixes / Keras variable names, by role.
_CONVOLUTIONS = ("conv", "depthwise")
_TORCH_NAMES = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                "moving_mean": "running_mean", "moving_variance": "running_var"}
_BN_ROLES = ("gamma", "beta", "moving_mean", "moving_variance")


@dataclass(frozen=True)
class Entry:
    """One source layer and the layer of this project's model it becomes.

    kind: conv, depthwise, dense, dense_nchw (a torch Linear after a (C, H, W) flatten) or bn.
    bias: whether the source layer has a bias (convolutions and dense layers).
    stride: the source convolution's stride, checked against the model's.
    channels: dense_nchw only, C of the flattened map.
    classifier: the last layer, which may gain the background class.
    """

    source: str
    target: str
    kind: str
    bias: bool = False
    stride: int = 1
    channels: int = 0
    classifier: bool = False

    @property
    def roles(self):
        if self.kind == "bn":
            return _BN_ROLES
        return ("kernel", "bias") if self.bias else ("kernel",)


@dataclass(frozen=True)
class Architecture:
    name: str
    title: str          # description of the weights
    config: str         # this project's model for them
    entries: tuple
    application: str = ""   # keras.applications constructor
    weights_file: str = ""  # its file in the Keras cache
    epsilon: float = 1e-5   # the source's batch-norm epsilon where the source does not carry it (torch)
    hint: str = ""          # what to do when the layouts differ


def _vgg_convolutions():
    """(block, index in block) of VGG-16's 13 convolutions, named conv{block}_{index} here."""
    return [(block, index) for block, count in enumerate((2, 2, 3, 3, 3), 1) for index in range(1, count + 1)]


def _keras_vgg16():
    entries = [Entry(f"block{b}_conv{i}", f"conv{b}_{i}", "conv", bias=True) for b, i in _vgg_convolutions()]
    return tuple(entries + [Entry("fc1", "fc6", "dense", bias=True), Entry("fc2", "fc7", "dense", bias=True),
                            Entry("predictions", "logits", "dense", bias=True, classifier=True)])


_RESNET50_BLOCKS = (3, 4, 6, 3)


def _keras_resnet50():
    """keras.applications.ResNet50 (v1: stride on the first 1×1; convolutions with biases)."""
    entries = [Entry("conv1_conv", "conv1", "conv", bias=True, stride=2), Entry("conv1_bn", "conv1.bn", "bn")]
    for stage, count in enumerate(_RESNET50_BLOCKS, 1):
        for block in range(1, count + 1):
            source, target = f"conv{stage + 1}_block{block}", f"b{stage}{block}"
            stride = 2 if stage > 1 and block == 1 else 1
            names = [(1, "conv1", stride), (2, "conv2", 1), (3, "conv3", 1)] + (
                [(0, "downsample", stride)] if block == 1 else [])
            for number, name, conv_stride in names:
                entries += [Entry(f"{source}_{number}_conv", f"{target}.{name}", "conv", bias=True,
                                  stride=conv_stride),
                            Entry(f"{source}_{number}_bn", f"{target}.{name}.bn", "bn")]
    return tuple(entries + [Entry("predictions", "logits", "dense", bias=True, classifier=True)])


_MOBILENET_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)


def _keras_mobilenet():
    entries = [Entry("conv1", "conv0", "conv", stride=2), Entry("conv1_bn", "conv0.bn", "bn")]
    for block, stride in enumerate(_MOBILENET_STRIDES, 1):
        entries += [Entry(f"conv_dw_{block}", f"conv{block}.depthwise", "depthwise", stride=stride),
                    Entry(f"conv_dw_{block}_bn", f"conv{block}.depthwise.bn", "bn"),
                    Entry(f"conv_pw_{block}", f"conv{block}.pointwise", "conv"),
                    Entry(f"conv_pw_{block}_bn", f"conv{block}.pointwise.bn", "bn")]
    return tuple(entries + [Entry("conv_preds", "fc", "conv", bias=True, classifier=True)])


def _torchvision_vgg(batch_norm):
    """torchvision vgg16 / vgg16_bn: `features` numbers conv[, bn], relu per convolution and a pool per block."""
    entries, index, block_of = [], 0, None
    for block, number in _vgg_convolutions():
        if block_of is not None and block != block_of:
            index += 1  # the max pool closing the previous block
        block_of = block
        entries.append(Entry(f"features.{index}", f"conv{block}_{number}", "conv", bias=True))
        if batch_norm:
            entries.append(Entry(f"features.{index + 1}", f"conv{block}_{number}.bn", "bn"))
        index += 3 if batch_norm else 2
    return tuple(entries + [Entry("classifier.0", "fc6", "dense_nchw", bias=True, channels=512),
                            Entry("classifier.3", "fc7", "dense", bias=True),
                            Entry("classifier.6", "logits", "dense", bias=True, classifier=True)])


def _torchvision_resnet(blocks, bottleneck):
    """torchvision ResNet (v1.5): layer{s}.{i} is block b{s}{i+1}; the stride is on the 3×3 convolution."""
    entries = [Entry("conv1", "conv1", "conv", stride=2), Entry("bn1", "conv1.bn", "bn")]
    convolutions = 3 if bottleneck else 2
    strided = 2 if bottleneck else 1  # the 3×3 convolution that carries a stage's stride
    for stage, count in enumerate(blocks, 1):
        stride = 1 if stage == 1 else 2
        for block in range(count):
            source, target = f"layer{stage}.{block}", f"b{stage}{block + 1}"
            for number in range(1, convolutions + 1):
                conv_stride = stride if block == 0 and number == strided else 1
                entries += [Entry(f"{source}.conv{number}", f"{target}.conv{number}", "conv", stride=conv_stride),
                            Entry(f"{source}.bn{number}", f"{target}.conv{number}.bn", "bn")]
            if block == 0 and (bottleneck or stage > 1):
                entries += [Entry(f"{source}.downsample.0", f"{target}.downsample", "conv", stride=stride),
                            Entry(f"{source}.downsample.1", f"{target}.downsample.bn", "bn")]
    return tuple(entries + [Entry("fc", "logits", "dense", bias=True, classifier=True)])


_V1_HINT = ("resnet50.yaml is torchvision's v1.5 (stride on the 3×3 convolution), Keras' ResNet50 is v1 (stride on "
            "the first 1×1): load torchvision ResNet-50 weights (torchvision:/path/resnet50-*.pth), or build the v1 "
            "layout with model.layers.{b21,b31,b41}.layers.conv1.stride=2, .conv2.stride=1, .conv2.padding=same")

KERAS = {architecture.name: architecture for architecture in (
    Architecture("vgg16", "Keras Applications VGG16 (ImageNet)", "models/vgg16.yaml", _keras_vgg16(),
                 application="VGG16", weights_file="vgg16_weights_tf_dim_ordering_tf_kernels.h5"),
    Architecture("resnet50", "Keras Applications ResNet50 v1 (ImageNet)",
                 "models/resnet50.yaml with v1 blocks (see mayo_lite.session.pretrained)", _keras_resnet50(),
                 application="ResNet50", weights_file="resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                 hint=_V1_HINT),
    Architecture("mobilenet", "Keras Applications MobileNet 1.0 (ImageNet)", "models/mobilenet.yaml",
                 _keras_mobilenet(), application="MobileNet", weights_file="mobilenet_1_0_224_tf.h5"),
)}

TORCHVISION = {architecture.name: architecture for architecture in (
    Architecture("vgg16", "torchvision VGG-16", "models/vgg16.yaml", _torchvision_vgg(False)),
    Architecture("vgg16_bn", "torchvision VGG-16-BN", "models/vgg16_bn.yaml", _torchvision_vgg(True)),
    Architecture("resnet18", "torchvision ResNet-18", "models/resnet18.yaml",
                 _torchvision_resnet((2, 2, 2, 2), bottleneck=False)),
    Architecture("resnet50", "torchvision ResNet-50", "models/resnet50.yaml",
                 _torchvision_resnet(_RESNET50_BLOCKS, bottleneck=True)),
)}


def read_pretrained(selector, model):
    """The weights `selector` names, mapped onto `model`: (values by variable name, description), or None when
    `selector` is not a `keras:` or `torchvision:` selector. Raises CheckpointError when they cannot be read or
    do not fit."""
    if not isinstance(selector, str):
        return None
    if selector.startswith("keras:"):
        return _read_keras(selector, model)
    if selector.startswith("torchvision:"):
        return _read_torchvision(selector, model)
    return None


# -- shared: the model's side ----------------------------------------------------------------------------------


def _first_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _listed(items):
    items = list(items)
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


class _Model:
    """What the mapping needs to know of this project's model: its variables' shapes and its layers."""

    def __init__(self, model):
        self.model = model
        self.layers = {layer.name: layer for layer in model.layers}
        self.shapes = {variable.path: tuple(variable.shape) for variable in model.variables}
        # A gated model has no `X.bn`: its gate layer X takes the dense batch norm's variables (Session.load).
        self.aliases = {source: target for target, source in dense_sources(model).items()}
        for source, target in self.aliases.items():
            self.shapes.setdefault(source, self.shapes[target])

    def has_layer(self, name):
        return name in self.layers or any(alias.startswith(f"{name}/") for alias in self.aliases)

    def epsilon(self, bn_name):
        layer = self.layers.get(bn_name) or self.layers.get(bn_name.removesuffix(".bn"))
        return float(getattr(layer, "epsilon", 1e-3))

    def required(self):
        """The variables every import must fill: weights of convolutions, dense layers and batch norms."""
        names = []
        for layer in self.model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                roles = _BN_ROLES
            elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
                roles = ("kernel", "bias")
            else:
                continue
            names += [variable.path for variable in layer.variables if variable.path.rsplit("/", 1)[-1] in roles]
        return names


def _check_layout(where, architecture, model, strides=True):
    """Every target layer exists; with `strides`, every convolution has the source's stride."""
    absent = [entry.target for entry in architecture.entries if not model.has_layer(entry.target)]
    if absent:
        raise CheckpointError(
            f"{where}: {architecture.title} weights do not fit model {model.model.name!r}: it has no layer "
            f"{_listed(absent)} (these weights are for {architecture.config})")
    differ = []
    for entry in architecture.entries if strides else ():
        found = getattr(model.layers.get(entry.target), "strides", None)
        if entry.kind in _CONVOLUTIONS and found is not None and tuple(found) != (entry.stride, entry.stride):
            differ.append(f"{entry.target} has stride {tuple(found)[0]} where {entry.source} has {entry.stride}")
    if differ:
        hint = f"; {architecture.hint}" if architecture.hint else ""
        raise CheckpointError(f"{where}: {architecture.title} weights do not fit model {model.model.name!r}: "
                              f"{_listed(differ)}{hint}")


def _fit(where, architecture, sources, model):
    """Maps source layers onto the model.

    sources: {entry.source: ({role: array in Keras layout}, {role: (source tensor name, source shape)}, epsilon)},
    one item per entry. Returns {"model/<variable path>": float32 array}.
    """
    values, origin, folds = {}, {}, []
    for entry in architecture.entries:
        arrays, names, epsilon = sources[entry.source]
        if entry.kind == "bn":
            arrays = dict(arrays)
            correction = epsilon - model.epsilon(entry.target)
            if correction:
                arrays["moving_variance"] = np.maximum(
                    arrays["moving_variance"].astype(np.float64) + correction, 0.0)
        for role, array in arrays.items():
            name = f"{entry.target}/{role}"
            if role == "bias" and name not in model.shapes:
                folds.append((entry, array))  # this project's convolution has no bias: its batch norm takes it
                continue
            values[name], origin[name] = array, names[role]
        if entry.kind != "bn" and f"{entry.target}/bias" in model.shapes and "bias" not in arrays:
            values[f"{entry.target}/bias"] = np.zeros(model.shapes[f"{entry.target}/bias"], np.float32)
            origin[f"{entry.target}/bias"] = ("(zeros: the source has no bias)", ())
        if entry.classifier:
            _add_background(values, entry.target, model)
    nowhere, wrong = [], []
    for entry, bias in folds:
        mean, (source_name, source_shape) = f"{entry.target}.bn/moving_mean", sources[entry.source][1]["bias"]
        if mean not in values:
            nowhere.append(f"{source_name} {source_shape}")
        elif values[mean].shape != bias.shape:
            wrong.append(f"{source_name} {source_shape} does not fit {mean} {model.shapes[mean]}")
        else:
            values[mean] = values[mean].astype(np.float64) - bias
    if nowhere:
        raise CheckpointError(f"{where}: {architecture.title} has biases that model {model.model.name!r} has no "
                              f"place for (no bias and no batch norm after the convolution): {_listed(nowhere)}")
    absent = [f"{origin[name][0]} ({name})" for name in values if name not in model.shapes]
    if absent:
        raise CheckpointError(f"{where}: model {model.model.name!r} has no variable for {_listed(absent)} "
                              f"(these weights are for {architecture.config})")
    wrong += [f"{origin[name][0]} {origin[name][1]} does not fit {name} {model.shapes[name]}"
              for name, value in values.items() if value.shape != model.shapes[name]]
    if wrong:
        raise CheckpointError(f"{where}: {architecture.title} weights do not fit model {model.model.name!r}: "
                              f"{_listed(wrong)}")
    unfilled = [name for name in model.required() if name not in values]
    if unfilled:
        raise CheckpointError(f"{where}: {architecture.title} weights leave {len(unfilled)} variable(s) of model "
                              f"{model.model.name!r} without a value: {_listed(unfilled)} (these weights are for "
                              f"{architecture.config})")
    return {PREFIX + name: np.ascontiguousarray(value, dtype=np.float32) for name, value in values.items()}


def _add_background(values, target, model):
    """1000 source classes onto a model with 1001 outputs: outputs 1..1000, and output 0 a constant below them."""
    kernel, bias = f"{target}/kernel", f"{target}/bias"
    if kernel not in values or bias not in values or kernel not in model.shapes or bias not in model.shapes:
        return
    if model.shapes[kernel][-1] != values[kernel].shape[-1] + 1 or model.shapes[bias] != (values[bias].size + 1,):
        return
    weights, biases = values[kernel], values[bias]
    zeros = np.zeros(weights.shape[:-1] + (1,), weights.dtype)
    values[kernel] = np.concatenate([zeros, weights], axis=-1)
    values[bias] = np.concatenate([[float(np.min(biases)) - 10.0], biases]).astype(biases.dtype)


# -- Keras Applications ----------------------------------------------------------------------------------------


def _keras_cache():
    try:
        from keras.src.backend.config import keras_home
        home = keras_home()
    except ImportError:
        home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(os.path.expanduser(home)) / "models"


def _keras_architecture(selector):
    name = selector[len("keras:"):].strip().lower()
    if name not in KERAS:
        raise CheckpointError(f"{selector}: unknown Keras Applications model {name!r} (known: "
                              f"{', '.join(f'keras:{known}' for known in KERAS)})")
    return KERAS[name]


def _read_keras(selector, model):
    architecture = _keras_architecture(selector)
    _check_layout(selector, architecture, _Model(model))  # before a download of up to 550 MB
    application = _application(selector, architecture)
    return _from_keras_application(application, architecture.name, model, where=selector), architecture.title


def _application(selector, architecture):
    """keras.applications.<X>(weights="imagenet"): from the cache, or downloaded by Keras."""
    cache = _keras_cache()
    cached = cache / architecture.weights_file
    shown = str(cache).replace(os.path.expanduser("~"), "~", 1)
    try:
        return getattr(keras.applications, architecture.application)(weights="imagenet", classifier_activation=None)
    except Exception as error:  # Keras raises a bare Exception when a download fails
        if cached.is_file():
            raise CheckpointError(f"{selector}: could not read the ImageNet weights {cached} "
                                  f"({_first_line(error)}); delete the file to download it again") from None
        raise CheckpointError(
            f"{selector}: the ImageNet weights are not in {shown} and could not be downloaded "
            f"({_first_line(error)}); copy {architecture.weights_file} into {shown} from a machine with internet "
            f"(python -c 'import keras; keras.applications.{architecture.application}()')") from None


def _from_keras_application(application, arch, model, where=None):
    """Maps an already built Keras Applications model (`arch`: vgg16, resnet50 or mobilenet) onto `model`."""
    where = where or f"keras:{arch}"
    architecture = _keras_architecture(f"keras:{arch}")
    target = _Model(model)
    _check_layout(where, architecture, target, strides=False)
    layers = {layer.name: layer for layer in application.layers}
    sources, problems = {}, []
    for entry in architecture.entries:
        layer = layers.get(entry.source)
        if layer is None:
            problems.append(f"no layer {entry.source}")
            continue
        found = {variable.path.rsplit("/", 1)[-1]: variable for variable in layer.weights}
        if set(found) != set(entry.roles):
            problems.append(f"{entry.source} has {sorted(found)}, expected {list(entry.roles)}")
            continue
        strides = getattr(layer, "strides", None)
        if entry.kind in _CONVOLUTIONS and tuple(strides) != (entry.stride, entry.stride):
            problems.append(f"{entry.source} has stride {tuple(strides)}, expected {entry.stride}")
            continue
        arrays = {role: np.asarray(found[role].numpy()) for role in entry.roles}
        names = {role: (f"{entry.source}/{role}", tuple(array.shape)) for role, array in arrays.items()}
        sources[entry.source] = (arrays, names, float(getattr(layer, "epsilon", 0.0)))
    if problems:
        raise CheckpointError(f"{where}: not the Keras Applications model the table expects "
                              f"({architecture.application}): {_listed(problems)}")
    values = _fit(where, architecture, sources, target)
    _check_layout(where, architecture, target)
    return values


# -- torchvision state dicts -----------------------------------------------------------------------------------


def _parse_torchvision(selector):
    """torchvision:[ARCH:]PATH -> (architecture or None, path)."""
    rest = selector[len("torchvision:"):]
    name, separator, path = rest.partition(":")
    if separator and name.strip().lower() in TORCHVISION:
        return TORCHVISION[name.strip().lower()], path
    if separator and name and "/" not in name and "." not in name and not Path(rest).expanduser().exists():
        raise CheckpointError(f"{selector}: unknown torchvision architecture {name!r} (known: "
                              f"{', '.join(TORCHVISION)}); the selector is torchvision:[ARCH:]PATH")
    return None, rest


def _expected_keys(architecture):
    return {f"{entry.source}.{_TORCH_NAMES[role]}" for entry in architecture.entries for role in entry.roles}


def _state_dict(selector, path):
    if not path.strip():
        raise CheckpointError(f"{selector}: no file named; the selector is torchvision:[ARCH:]PATH")
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{selector}: no such file {path}")
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{selector}: reading a PyTorch state dict needs the `torch` package "
                              "(pip install torch)") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike
        raise CheckpointError(f"{selector}: not a readable PyTorch state dict ({_first_line(error)})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{selector}: expected a state dict (tensors by name), got {type(state).__name__}")
    if all(str(key).startswith("module.") for key in state):
        state = {str(key)[len("module."):]: value for key, value in state.items()}
    arrays = {}
    for key, value in state.items():
        if str(key).endswith("num_batches_tracked"):
            continue
        if not torch.is_tensor(value):
            raise CheckpointError(f"{selector}: {key} is a {type(value).__name__}, not a tensor")
        arrays[str(key)] = value.detach().to("cpu", torch.float32).numpy()
    return arrays


def _recognise(selector, arrays, named):
    """The architecture whose tensor names the state dict has: exactly, or the named one (or closest) in error."""
    keys = set(arrays)
    candidates = [named] if named else list(TORCHVISION.values())
    for architecture in candidates:
        if _expected_keys(architecture) == keys:
            return architecture
    closest = named or max(candidates, key=lambda a: len(_expected_keys(a) & keys) / len(_expected_keys(a) | keys))
    expected = _expected_keys(closest)
    missing = sorted(expected - keys, key=_natural)
    unexpected = sorted(keys - expected, key=_natural)
    parts = ([f"lacks {_listed(missing)}"] if missing else []) + (
        [f"has unexpected {_listed(unexpected)}"] if unexpected else [])
    what = (f"not a torchvision {named.name} state dict" if named else
            f"not a torchvision {', '.join(TORCHVISION)} state dict (closest: {closest.name})")
    raise CheckpointError(f"{selector}: {what}: it {' and '.join(parts)}")


def _natural(key):
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in key.split(".")]


def _torch_layout(entry, role, array, where):
    """A torch tensor of one layer in Keras layout."""
    if role != "kernel":
        return array
    if entry.kind in _CONVOLUTIONS:
        if array.ndim != 4:
            raise CheckpointError(f"{where}: {entry.source}.weight has shape {tuple(array.shape)}, expected a "
                                  "convolution weight (out, in, kh, kw)")
        return array.transpose(2, 3, 1, 0)
    if array.ndim != 2:
        raise CheckpointError(f"{where}: {entry.source}.weight has shape {tuple(array.shape)}, expected a "
                              "Linear weight (out, in)")
    if entry.kind == "dense_nchw":
        outputs, inputs = array.shape
        side = math.isqrt(inputs // entry.channels) if inputs % entry.channels == 0 else 0
        if side * side * entry.channels != inputs:
            raise CheckpointError(f"{where}: {entry.source}.weight has shape {tuple(array.shape)}, expected "
                                  f"(out, {entry.channels}·H·W) after a square {entry.channels}-channel map")
        # torch flattens (C, H, W), Keras (H, W, C).
        array = array.reshape(outputs, entry.channels, side, side).transpose(0, 2, 3, 1).reshape(outputs, inputs)
    return array.T


def _read_torchvision(selector, model):
    named, path = _parse_torchvision(selector)
    arrays = _state_dict(selector, path)
    architecture = _recognise(selector, arrays, named)
    target = _Model(model)
    _check_layout(selector, architecture, target, strides=False)
    sources = {}
    for entry in architecture.entries:
        layer, names = {}, {}
        for role in entry.roles:
            key = f"{entry.source}.{_TORCH_NAMES[role]}"
            layer[role] = _torch_layout(entry, role, arrays[key], selector)
            names[role] = (key, tuple(arrays[key].shape))
        sources[entry.source] = (layer, names, architecture.epsilon)
    values = _fit(selector, architecture, sources, target)
    _check_layout(selector, architecture, target)  # strides: the names and shapes agree, does the layout?
    return values, f"{architecture.title} state dict {Path(path).expanduser()}"
