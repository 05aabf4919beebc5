"""An `InferenceProgram`'s steps written as a native program (`native_runtime.Program`): the same folded weights
and wiring, handed to the runtime that runs them with NumPy's BLAS and Numba kernels instead of TensorFlow.

The native runtime covers the layers of the shipped chain and residual models — gated convolutions with the
paper's online threshold, convolutions, dense layers, pooling, means, reshapes, ReLU, additions, flatten —; any
other layer or gate setting raises `UnsupportedModel` with its name, and the program stays on TensorFlow.
"""

import keras
import numpy as np

from mayo_lite.layers import ReduceMean, Squeeze
from mayo_lite.sparse import native_runtime as runtime
from mayo_lite.sparse.folding import UnsupportedModel
from mayo_lite.sparse.gated_step import GatedStep
from mayo_lite.sparse.steps import (ActivationStep, AddStep, ChannelwiseStep, ConvolutionStep, DenseStep,
                                    LayerStep, ZeroPaddingStep)

ACTIVATIONS = {"relu": "relu", "linear": "linear"}


def _activation(step, activation, allowed=ACTIVATIONS):
    name = getattr(activation, "__name__", None)
    if name not in allowed:
        raise UnsupportedModel(f"layer {step.layer_name}: the native runtime has no {name} activation")
    return allowed[name]


def _array(variable):
    return np.ascontiguousarray(variable.numpy(), np.float32)


def _convolution_geometry(step):
    layer = step.layer
    if tuple(layer.dilation_rate) != (1, 1):
        raise UnsupportedModel(f"layer {step.layer_name}: dilated convolutions are not in the native runtime")
    return {"kernel_size": list(layer.kernel_size), "strides": list(layer.strides), "padding": layer.padding}


def _gated(step):
    layer = step.layer
    if layer.policy != "parametric" or layer.parametric_beta or layer.pool != "avg":
        raise UnsupportedModel(f"layer {step.layer_name}: the native runtime runs the parametric policy with an "
                               "avg pool and a constant beta")
    if step.selects and step.threshold is not None:
        raise UnsupportedModel(f"layer {step.layer_name}: a moving threshold (the native runtime keeps a fixed "
                               "count per image)")
    if len(step.predictors["gate"]) != 1:
        raise UnsupportedModel(f"layer {step.layer_name}: a two-layer predictor (factor > 0)")
    if not step.keeps_zero:
        raise UnsupportedModel(f"layer {step.layer_name}: an activation that does not keep zero at zero")
    kernel = _array(step.kernel)
    if step.selects:  # stored output channel first: (out, kh, kw, in)
        kernel = np.transpose(kernel, (1, 2, 3, 0))
    filters = kernel.shape[-1]
    (gate_kernel, gate_bias), = step.predictors["gate"]
    arrays = {"kernel": _runtime_kernel(kernel), "bias": _array(step.bias), "gate_kernel": _array(gate_kernel),
              "gate_bias": _array(gate_bias)}
    if step.beta is not None:
        arrays["beta"] = _array(step.beta)
    activation = _activation(step, layer.activation)
    spec = {"kind": runtime.CONVOLUTION, "activation": activation, "gated": True, "gate_activation": activation,
            "count": int(step.count) if step.selects else filters, "add_beta_first": bool(layer.add_beta_first),
            **_convolution_geometry(step)}
    return spec, arrays


def _runtime_kernel(kernel):
    """A Conv2D kernel (kh, kw, in, out) as the runtime reads it: (kh·kw, in, out)."""
    height, width, inputs, outputs = kernel.shape
    return np.ascontiguousarray(kernel.reshape(height * width, inputs, outputs))


def _convolution(step):
    arrays = {"kernel": _runtime_kernel(_array(step.kernel)), "bias": _array(step.bias)}
    return {"kind": runtime.CONVOLUTION, "activation": _activation(step, step.layer.activation),
            **_convolution_geometry(step)}, arrays


def _dense(step):
    allowed = {**ACTIVATIONS, "softmax": "softmax"}
    return ({"kind": runtime.DENSE, "activation": _activation(step, step.layer.activation, allowed)},
            {"kernel": _array(step.kernel), "bias": _array(step.bias)})


def _activation_layer(step):
    layer = step.layer
    if isinstance(layer, keras.layers.ReLU):
        if layer.max_value is not None or layer.negative_slope or layer.threshold:
            raise UnsupportedModel(f"layer {step.layer_name}: a clipped or leaky ReLU")
        return {"kind": runtime.RELU}, {}
    kind = _activation(step, layer.activation, {"relu": runtime.RELU, "linear": runtime.IDENTITY,
                                                "softmax": runtime.SOFTMAX})
    return {"kind": kind}, {}


def _channelwise(step):
    layer = step.layer
    if isinstance(layer, (keras.layers.Dropout, keras.layers.Identity)):
        return {"kind": runtime.IDENTITY}, {}
    if isinstance(layer, keras.layers.MaxPooling2D):
        return {"kind": runtime.MAX_POOL, "pool_size": list(layer.pool_size), "strides": list(layer.strides),
                "padding": layer.padding}, {}
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return {"kind": runtime.MEAN, "keepdims": bool(layer.keepdims)}, {}
    if isinstance(layer, ReduceMean) and {axis % 4 for axis in layer.axis} == {1, 2}:
        return {"kind": runtime.MEAN, "keepdims": layer.keepdims}, {}
    if isinstance(layer, Squeeze):
        return {"kind": runtime.RESHAPE, "spatial": [int(size) for size in layer.output.shape[1:-1]]}, {}
    raise UnsupportedModel(f"layer {step.layer_name}: the native runtime has no {type(layer).__name__}")


def _other(step):
    if isinstance(step.layer, keras.layers.Flatten):
        return {"kind": runtime.FLATTEN}, {}
    raise UnsupportedModel(f"layer {step.layer_name}: the native runtime has no {type(step.layer).__name__}")


def _padding(step):
    layer = step.layer
    if layer.data_format != "channels_last":
        raise UnsupportedModel(f"layer {step.layer_name}: padding of a channels-first map")
    return {"kind": runtime.PAD, "padding": [list(pair) for pair in layer.padding]}, {}


# Exact step classes (subclasses such as ZeroPaddingStep are not the same operation).
WRITERS = {GatedStep: _gated, ConvolutionStep: _convolution, DenseStep: _dense, ActivationStep: _activation_layer,
           ChannelwiseStep: _channelwise, AddStep: lambda step: ({"kind": runtime.ADD}, {}), LayerStep: _other,
           ZeroPaddingStep: _padding}


def native_program(program):
    """The native runtime's `Program` of an `InferenceProgram`, or UnsupportedModel naming the first layer it
    cannot run."""
    slots = {program._input_id: 0}
    operations, arrays = [], {}
    for index, (step, (inputs, output)) in enumerate(zip(program.steps, program._wiring)):
        writer = WRITERS.get(type(step))
        if writer is None:
            raise UnsupportedModel(f"layer {step.layer_name}: the native runtime has no "
                                   f"{type(step.layer).__name__}")
        spec, weights = writer(step)
        operations.append({"name": step.layer_name, "inputs": [slots[tensor] for tensor in inputs], **spec})
        arrays[step.layer_name] = weights
        slots[output] = index + 1
    if slots.get(program._output_id) != len(operations):
        raise UnsupportedModel("the model's output is not its last layer's")
    _fuse_activations(operations)
    return runtime.Program(operations, arrays, program.input_shape)


def _fuse_activations(operations):
    """A ReLU layer that alone reads a linear convolution or dense layer becomes that layer's activation (applied in
    the same pass as its bias), and an identity: what Keras writes as Conv2D, BatchNormalization, Activation."""
    readers = {}
    for spec in operations:
        for slot in spec["inputs"]:
            readers[slot] = readers.get(slot, 0) + 1
    for spec in operations:
        if spec["kind"] != runtime.RELU or len(spec["inputs"]) != 1:
            continue
        (slot,) = spec["inputs"]
        source = operations[slot - 1] if slot > 0 else None
        if (source is not None and readers[slot] == 1 and source["kind"] in (runtime.CONVOLUTION, runtime.DENSE)
                and source["activation"] == "linear"):
            source["activation"], spec["kind"] = "relu", runtime.IDENTITY
