"""The native sparse runtime: a prepared program of a gated (FBS) or dense model run on one image with NumPy's BLAS for
the convolutions (as image patches times the gathered kernel) and small kernels compiled by Numba for everything
around them (gate, ranking, gathers, patches, bias, gate scale and activation).

Why not TensorFlow: a compiled TensorFlow program pays a fixed cost per call that is larger than a small model's
convolutions, XLA's CPU convolutions run at about half the speed of NumPy's BLAS on the same shapes, and TensorFlow
Lite only reaches its fast kernels for constant weights (a convolution with gathered weights falls back to a kernel
five times slower). Here the gathered kernel goes straight to BLAS, and between layers only the active channels
travel, with their indices.

This module and its kernels (`native_kernels.py`) depend on NumPy and Numba only, never on the rest of mayo-lite:
`export-model` copies both beside a program's arrays (`program.npz`) so the exported sparse model runs where
mayo-lite is not installed:

    import numpy as np, native_runtime
    program = native_runtime.load("cifarnet_gate_sparse_native")
    logits = program(image)                       # image: float32 (1, H, W, C)
"""

import json
import os

import numpy as np

try:
    from . import native_kernels as kernels
except ImportError:  # copied beside an exported program, outside the package
    import native_kernels as kernels

# Operation kinds of a program (the `kind` of each entry of its `operations`).
CONVOLUTION, DENSE, MEAN, MAX_POOL, RELU, IDENTITY, RESHAPE, ADD, FLATTEN, SOFTMAX, PAD = (
    "convolution", "dense", "mean", "max_pool", "relu", "identity", "reshape", "add", "flatten", "softmax", "pad")


def _cache_values():
    """Float32 values in half of this machine's per-core L2 cache (Linux reports it; 1 MiB where it does not)."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as file:
            text = file.read().strip()
        size = int(text.rstrip("KMG")) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    except (OSError, ValueError):
        size = 2 << 20
    return max(size // 8, 1 << 14)


# The most values of image patches made at once. A larger map is done in blocks of rows: written once and
# multiplied while still in cache, instead of going out to memory and back.
PATCH_BLOCK = _cache_values()


def output_size(size, kernel, stride, padding):
    """(output size, padding before) of one spatial axis, TensorFlow's rule."""
    if padding == "valid":
        return (size - kernel) // stride + 1, 0
    out = -(-size // stride)
    return out, max((out - 1) * stride + kernel - size, 0) // 2


class Feature:
    """The values of a layer's output for one image — (height, width, channels) for a map, (channels,) for a vector
    — and, when they are compact, the indices of their channels in the full map (`channels`, None: every channel);
    absent channels are zero."""

    __slots__ = ("values", "channels", "width", "means")

    def __init__(self, values, channels, width, means=None):
        self.values, self.channels, self.width = values, channels, width
        self.means = means  # each channel's spatial mean, when the layer that made it had it at hand

    def full(self):
        if self.channels is None:
            return self.values
        full = np.zeros((*self.values.shape[:-1], self.width), np.float32)
        full[..., self.channels] = self.values
        return full


class Convolution:
    """A convolution, gated or not, with its batch norm folded in: kernel (taps, in, out) and bias; computed as the
    image patches times the kernel. A gated one keeps `count` output channels per image, chosen by its predictor
    (gate kernel and bias); `mode` says how: `gather` computes only the kept channels from the present inputs with
    the gathered kernel, `every` computes every output channel from the present inputs and keeps the chosen ones
    (a kernel gathered by rows only: faster where a map is so small that the kernel is read for few positions)."""

    def __init__(self, spec, arrays):
        self.name = spec["name"]
        self.kernel = arrays["kernel"]
        self.taps, self.inputs, self.filters = self.kernel.shape
        self.bias = arrays["bias"]
        self.size = tuple(spec["kernel_size"])
        self.strides = tuple(spec["strides"])
        self.padding = spec["padding"]
        self.relu = spec["activation"] == "relu"
        self.gated = spec.get("gated", False)
        self.mode = spec.get("mode", "gather")
        self.everything_in = np.arange(self.inputs)
        self.rows = self.kernel.reshape(-1, self.filters)  # the kernel as BLAS reads it for a full input
        self.ones = np.ones(self.filters, np.float32)
        if self.gated:
            self.count = spec["count"]
            self.gate_kernel, self.gate_bias = arrays["gate_kernel"], arrays["gate_bias"]
            self.gate_relu = spec["gate_activation"] == "relu"
            self.beta = arrays["beta"] if "beta" in arrays else np.zeros(self.filters, np.float32)
            self.beta_first = spec.get("add_beta_first", False)

    def geometry(self, values):
        """(output height, output width, padding above, padding left) on a map."""
        (out_height, top), (out_width, left) = (
            output_size(values.shape[i], self.size[i], self.strides[i], self.padding) for i in (0, 1))
        return out_height, out_width, top, left

    def patches(self, values, first_row=0, last_row=None):
        """The image patches of output rows `first_row` to `last_row` (all by default) of a map."""
        height, width, channels = values.shape
        out_height, out_width, top, left = self.geometry(values)
        last_row = out_height if last_row is None else last_row
        if self.taps == 1 and self.strides == (1, 1):
            return values.reshape(height * width, channels)[first_row * out_width:last_row * out_width]
        patches = np.empty(((last_row - first_row) * out_width, self.taps * channels), np.float32)
        kernels.patches(values, patches, self.size[0], self.size[1], self.strides[0], self.strides[1], top, left,
                        first_row, last_row, out_width)
        return patches

    def blocks(self, values, out_height, out_width):
        """[(first output row, last output row)]: the whole map, or blocks of rows whose patches fit in a core's
        cache (`PATCH_BLOCK` values)."""
        row = out_width * self.taps * values.shape[-1]
        rows = max(1, PATCH_BLOCK // row)
        return [(first, min(first + rows, out_height)) for first in range(0, out_height, rows)]

    def select(self, feature):
        """(kept output channels, scale, offset) for this image."""
        means = feature.means
        if means is None:
            means = kernels.column_means(feature.values.reshape(-1, feature.values.shape[-1]))
        present = self.everything_in if feature.channels is None else feature.channels
        return kernels.gate(means, present, self.gate_kernel, self.gate_bias, self.gate_relu, self.count,
                            self.bias, self.beta, self.beta_first)

    def weights(self, present, kept):
        """The kernel as BLAS multiplies it: (taps × present inputs, kept outputs)."""
        if present is None:
            if kept is None:
                return self.rows
            present = self.everything_in  # a column gather in NumPy is many times slower than this one
        if kept is None:
            gathered = np.empty((self.taps * present.shape[0], self.filters), np.float32)
            kernels.gather_inputs(self.kernel, present, gathered)
        else:
            gathered = np.empty((self.taps * present.shape[0], kept.shape[0]), np.float32)
            kernels.gather_kernel(self.kernel, present, kept, gathered)
        return gathered

    def __call__(self, feature, clock=None):
        """The layer's output feature. `clock`, when given, is called after each stage with its name (`gate`,
        `patches`, `gather`, `multiply`, `scale`): how a profiler times them."""
        if self.gated:
            kept, scale, offset = self.select(feature)
            if self.count == self.filters:
                kept = None
        else:
            kept, scale, offset = None, self.ones, self.bias
        if clock:
            clock("gate")
        out_height, out_width, _, _ = self.geometry(feature.values)
        every = self.gated and self.mode == "every" and kept is not None
        blocks = self.blocks(feature.values, out_height, out_width)
        patches = self.patches(feature.values, 0, blocks[0][1])
        if clock:
            clock("patches")
        weights = self.weights(feature.channels, None if every else kept)
        if clock:
            clock("gather")
        if len(blocks) == 1:
            outputs = patches @ weights
        else:  # a large map: patches and product a block of rows at a time, so the patches stay in cache
            outputs = np.empty((out_height * out_width, weights.shape[1]), np.float32)
            for first, last in blocks:
                if first:
                    patches = self.patches(feature.values, first, last)
                np.matmul(patches, weights, out=outputs[first * out_width:last * out_width])
        if every:
            outputs = np.ascontiguousarray(outputs[:, kept])
        if clock:
            clock("multiply")
        means = np.empty(outputs.shape[1], np.float32)
        kernels.scale_offset(outputs, scale, offset, self.relu, means)
        if clock:
            clock("scale")
        return Feature(outputs.reshape(out_height, out_width, -1), kept, self.filters, means)


class Dense:
    """A fully connected layer (batch norm folded in) on a vector, reading only the kernel rows of present inputs."""

    def __init__(self, spec, arrays):
        self.name = spec["name"]
        self.kernel, self.bias = arrays["kernel"], arrays["bias"]
        self.activation = spec["activation"]

    def __call__(self, feature):
        values = feature.values.reshape(-1)
        kernel = self.kernel if feature.channels is None else self.kernel[feature.channels]
        outputs = values @ kernel + self.bias
        if self.activation == "relu":
            np.maximum(outputs, 0.0, out=outputs)
        elif self.activation == "softmax":
            outputs = _softmax(outputs)
        return Feature(outputs.astype(np.float32), None, outputs.shape[-1])


def _softmax(values):
    exponent = np.exp(values - values.max())
    return exponent / exponent.sum()


class Simple:
    """The operations that need no weights: spatial mean, max pooling, ReLU, identity, reshape, addition, flatten,
    softmax, zero padding."""

    def __init__(self, spec, arrays):
        self.name, self.kind = spec["name"], spec["kind"]
        self.spec = spec

    def __call__(self, *features):
        kind, first = self.kind, features[0]
        if kind == IDENTITY:
            return first
        if kind == RELU:
            return Feature(np.maximum(first.values, 0.0), first.channels, first.width)
        if kind == MEAN:
            values = first.values.reshape(-1, first.values.shape[-1]).mean(axis=0, dtype=np.float32)
            return Feature(values.reshape(1, 1, -1) if self.spec["keepdims"] else values, first.channels,
                           first.width)
        if kind == RESHAPE:  # spatial axes only: the channels (and their means) stay
            return Feature(first.values.reshape(*self.spec["spatial"], first.values.shape[-1]), first.channels,
                           first.width, first.means)
        if kind == MAX_POOL:
            return self._max_pool(first)
        if kind == PAD:  # zeros around the map: an absent channel stays zero
            (top, bottom), (left, right) = self.spec["padding"]
            return Feature(np.pad(first.values, ((top, bottom), (left, right), (0, 0))), first.channels,
                           first.width)
        if kind == ADD:
            return self._add(features)
        if kind == FLATTEN:
            return Feature(first.full().reshape(-1), None, None)
        if kind == SOFTMAX:
            return Feature(_softmax(first.full()), None, first.width)
        raise ValueError(f"unknown operation {kind}")

    @staticmethod
    def _add(features):
        """The sum of the features, into a copy of a full one where there is one (compact ones scattered in)."""
        full = [feature for feature in features if feature.channels is None]
        total = full[0].values.copy() if full else np.zeros((*features[0].values.shape[:-1], features[0].width),
                                                             np.float32)
        for feature in features:
            if full and feature is full[0]:
                continue
            if feature.channels is None:
                total += feature.values
            else:
                kernels.scatter_add(total.reshape(-1, total.shape[-1]),
                                    feature.values.reshape(-1, feature.values.shape[-1]), feature.channels)
        return Feature(total, None, features[0].width)

    def _max_pool(self, feature):
        spec, values = self.spec, feature.values
        sizes = [output_size(values.shape[i], spec["pool_size"][i], spec["strides"][i], spec["padding"])
                 for i in (0, 1)]
        out = np.empty((sizes[0][0], sizes[1][0], values.shape[-1]), np.float32)
        kernels.max_pool(values, out, spec["pool_size"][0], spec["pool_size"][1], spec["strides"][0],
                         spec["strides"][1], sizes[0][1], sizes[1][1])
        return Feature(out, feature.channels, feature.width)


OPERATIONS = {CONVOLUTION: Convolution, DENSE: Dense}


class Program:
    """A prepared model on one image. `operations`: a list of specs (dicts with `name`, `kind`, `inputs`: indices of
    earlier results, 0 being the image, and the kind's settings); `arrays`: each operation's arrays by name
    (convolution kernels laid out (taps, in, out))."""

    def __init__(self, operations, arrays, input_shape):
        self.specs = operations
        self.input_shape = tuple(input_shape)
        self.operations = [OPERATIONS.get(spec["kind"], Simple)(spec, arrays.get(spec["name"], {}))
                           for spec in operations]
        self.wiring = [tuple(spec["inputs"]) for spec in operations]

    def __call__(self, image):
        image = np.asarray(image, np.float32)
        if image.shape != (1, *self.input_shape):
            raise ValueError(f"the program takes one image of shape {(1, *self.input_shape)}; got {image.shape}")
        results = [Feature(image[0], None, self.input_shape[-1])]
        for operation, inputs in zip(self.operations, self.wiring):
            results.append(operation(*[results[i] for i in inputs]))
        return results[-1].full()[None]

    def save(self, directory):
        """Writes `program.json` (the operations) and `program.npz` (their arrays) under `directory`."""
        os.makedirs(directory, exist_ok=True)
        arrays = {f"{operation.name}/{key}": value for operation in self.operations
                  for key, value in _arrays_of(operation).items()}
        np.savez(os.path.join(directory, "program.npz"), **arrays)
        with open(os.path.join(directory, "program.json"), "w") as file:
            json.dump({"input_shape": list(self.input_shape), "operations": self.specs}, file, indent=1)


def _arrays_of(operation):
    if isinstance(operation, Convolution):
        arrays = {"kernel": operation.kernel, "bias": operation.bias}
        if operation.gated:
            arrays.update(gate_kernel=operation.gate_kernel, gate_bias=operation.gate_bias, beta=operation.beta)
        return arrays
    if isinstance(operation, Dense):
        return {"kernel": operation.kernel, "bias": operation.bias}
    return {}


def load(directory):
    """The program that `Program.save` wrote under `directory`."""
    with open(os.path.join(directory, "program.json")) as file:
        description = json.load(file)
    arrays = {}
    with np.load(os.path.join(directory, "program.npz")) as stored:
        for key in stored.files:
            name, array = key.rsplit("/", 1)
            arrays.setdefault(name, {})[array] = stored[key]
    return Program(description["operations"], arrays, description["input_shape"])
