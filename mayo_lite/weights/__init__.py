"""The weights room: checkpoints of runs (`checkpoint`, name-matched `.npz`) and pretrained ImageNet weights of other
frameworks mapped onto this project's models built from YAML (`keras_applications`, `torchvision`).

`system.checkpoint.load` names them with a selector:

    keras:vgg16                              keras.applications.VGG16       onto configs/models/vgg16.yaml
    keras:resnet50                           keras.applications.ResNet50    onto a v1 variant of resnet50.yaml (below)
    keras:mobilenet                          keras.applications.MobileNet   onto configs/models/mobilenet.yaml
    torchvision:/path/file.pth               a torchvision state dict; the architecture (vgg16, vgg16_bn, resnet18,
                                             resnet50) is recognised from its tensor names
    torchvision:resnet18:/path/file.pth      the same, the architecture named (checked against the tensor names)
    tf1:/path/model.ckpt-100                 a TF1 checkpoint of Mayo's (model.ckpt-100.index + .data-*), its
                                             variables matched by name (`tf1`); also without `tf1:` (a path to its
                                             prefix or files); a directory: the latest its `checkpoint` file names

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

from mayo_lite.weights.keras_applications import read_keras
from mayo_lite.weights.tf1 import SELECTOR as TF1, names_tf1, open_checkpoint, read_tf1
from mayo_lite.weights.torchvision import read_torchvision

# `system.checkpoint.load` selectors of pretrained weights.
PRETRAINED_PREFIXES = ("keras:", "torchvision:", TF1)


def pretrained_selector(selector):
    """`selector` as `read_pretrained` takes it when it names weights of another framework, else None. A TF1
    checkpoint, named with or without `tf1:`, is checked here, before any work: `tf1:` and its checked prefix."""
    if isinstance(selector, str) and selector.startswith(TF1) or names_tf1(selector):
        return f"{TF1}{open_checkpoint(selector)[0]}"
    if isinstance(selector, str) and selector.startswith(PRETRAINED_PREFIXES):
        return selector
    return None


def read_pretrained(selector, model):
    """The weights `selector` names, mapped onto `model`: (values by variable name, description), or None when
    `selector` is not a `keras:`, `torchvision:` or `tf1:` selector. Raises CheckpointError when they cannot be
    read or do not fit."""
    if not isinstance(selector, str):
        return None
    if selector.startswith("keras:"):
        return read_keras(selector, model)
    if selector.startswith("torchvision:"):
        return read_torchvision(selector, model)
    if selector.startswith(TF1):
        return read_tf1(selector, model)
    return None
