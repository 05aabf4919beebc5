"""The source architectures pretrained weights come from, layer by layer: which source layer (a Keras layer name, or a
torch module prefix) fills which layer of this project's YAML models, and how (`Entry`), per architecture
(`KERAS`, `TORCHVISION`)."""

from dataclasses import dataclass

PREFIX = "model/"
SHOWN = 4  # culprits named in one error line

# kind -> the source weights of one layer: torch state-dict suffixes / Keras variable names, by role.
CONVOLUTIONS = ("conv", "depthwise")
TORCH_NAMES = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                "moving_mean": "running_mean", "moving_variance": "running_var"}
BN_ROLES = ("gamma", "beta", "moving_mean", "moving_variance")


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
            return BN_ROLES
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
                 "models/resnet50.yaml with v1 blocks (see mayo_lite.weights)", _keras_resnet50(),
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
