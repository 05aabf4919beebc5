"""What the masked layers that static pruning writes into share (`MaskedConv2D`, `MaskedDepthwiseConv2D`,
`MaskedDense`, one module each; docs/design/pruning-algorithm.md): drop-in `Conv2D`, `DepthwiseConv2D` and `Dense`
layers whose effective kernel is `kernel · mask`. `mayo_lite.prune` computes the masks; `GatedConv2D(use_mask=True)`
takes the same `MaskConstraint`, so kernel pruning and FBS compose.

They also take quantizers (`kernel_quantizer`, `bias_quantizer`: any callable Keras layer, such as those of
`mayo_lite.quantize`): the layer then computes with `quantize(kernel · mask)` and `quantize(bias)`, pruning first
as Mayo's priorities order a pruner before a quantizer. A quantizer maps 0 to 0, so a pruned weight stays zero.

In regrow mode (dynamic network surgery, `mayo_lite.prune.surgery`) the forward pass is the same, but the gradient
reaches every weight and pruned weights are not zeroed, so that a later mask update can splice them back.
"""

import keras
from keras import ops

from mayo_lite.errors import ArgumentError
from mayo_lite.layers.arguments import Arguments


class MaskConstraint(keras.constraints.Constraint):
    """Multiplies a kernel by its layer's mask, after another constraint if one is given.

    Keras optimizers apply `variable.constraint` after every update, so a pruned weight is exactly zero again
    after each step whatever the optimizer did to it: momentum, Adam's moments and weight decay can all move a
    weight whose gradient is zero. (The reference zeroes the gradients of zero weights before each SGD step,
    which is the same thing for plain SGD only.)

    It holds the layer's `mask` variable, so it belongs to one built layer and is never part of a config: the
    layer creates it in `build`, and the layer's `get_config` keeps reporting the user's own `kernel_constraint`.

    Args:
        mask: the mask variable (or tensor) of the kernel's shape; 1 keeps a weight, 0 prunes it.
        constraint: the layer's own kernel constraint, applied first, or None.
        regrow: the layer's regrow switch (a scalar variable) or None; while it is 1 pruned weights are left as
            they are, so that dynamic network surgery can splice them back.
    """

    def __init__(self, mask, constraint=None, regrow=None):
        self.mask = mask
        self.constraint = keras.constraints.get(constraint)
        self.regrow = regrow

    def __call__(self, w):
        if self.constraint is not None:
            w = self.constraint(w)
        if self.regrow is None:
            return w * ops.cast(self.mask, w.dtype)
        return w * _kept(self.mask, self.regrow, w.dtype)


def _kept(mask, switch, dtype):
    """1 where a weight is kept or regrow mode is on (`switch` 1), else 0: `mask + switch · (1 − mask)`."""
    mask = ops.cast(mask, dtype)
    return mask + ops.cast(switch, dtype) * (1 - mask)


def kernel_variable(layer):
    """The variable behind a layer's kernel: `Conv2D` and `Dense` keep it as `_kernel` (their `kernel` property may
    add LoRA terms), `DepthwiseConv2D` as `kernel`."""
    variable = getattr(layer, "_kernel", None)
    return layer.kernel if variable is None else variable


def constrain_to_mask(layer):
    """Gives a built layer's kernel variable a `MaskConstraint` on its `mask`, after its own constraint."""
    # `build` passes `kernel_constraint` to add_weight; Keras 3 variables accept a new constraint at any time
    # (`Variable.constraint` has a setter), and the mask only exists after the base class's build.
    variable = kernel_variable(layer)
    variable.constraint = MaskConstraint(layer.mask, getattr(layer, "kernel_constraint", None)
                                         or getattr(layer, "depthwise_constraint", None),
                                         getattr(layer, "_regrow_switch", None))


def as_quantizer(value, argument):
    if value is None or isinstance(value, keras.layers.Layer):
        return value
    if isinstance(value, dict):  # from a config
        return keras.saving.deserialize_keras_object(value)
    raise ArgumentError(argument, "a quantizer layer (mayo_lite.quantize) or None", value)


def add_mask(layer):
    layer.mask = layer.add_weight(name="mask", shape=kernel_variable(layer).shape, initializer="ones",
                                  trainable=False)
    if layer.regrow:
        _add_regrow_switch(layer, 1.0)
    constrain_to_mask(layer)
    build_quantizer(layer.kernel_quantizer, kernel_variable(layer))
    build_quantizer(layer.bias_quantizer, getattr(layer, "bias", None))


def build_quantizer(quantizer, variable):
    """Builds a layer's quantizer for `variable` when the layer is built, so that its state exists before the first
    call and a checkpoint loaded then finds it."""
    if quantizer is not None and variable is not None and not quantizer.built:
        quantizer.build(tuple(variable.shape))


def _add_regrow_switch(layer, value):
    # A variable, not a Python flag, so that a training step traced before a switch keeps following it. It is
    # training state rather than model state: set past Keras' tracking, it is in no weight list or checkpoint, and
    # a model in regrow mode saves and loads exactly as one that is not (`regrow` in its config says the mode).
    object.__setattr__(layer, "_regrow_switch", keras.Variable(value, dtype="float32", trainable=False,
                                                               name="regrow"))


class Masked:
    """What every masked layer shares: the mask is state a checkpoint must keep, while the Keras base classes save
    only their kernel and bias; and regrow mode, for dynamic network surgery."""

    def __init__(self, *args, regrow=False, kernel_quantizer=None, bias_quantizer=None, **kwargs):
        if not isinstance(regrow, bool):
            raise Arguments(kwargs.get("name")).invalid("regrow", "True or False", regrow)
        super().__init__(*args, **kwargs)
        self._regrow = regrow
        object.__setattr__(self, "_regrow_switch", None)
        self.kernel_quantizer = as_quantizer(kernel_quantizer, "kernel_quantizer")
        self.bias_quantizer = as_quantizer(bias_quantizer, "bias_quantizer")

    @property
    def regrow(self):
        """Whether the layer is in regrow mode: the forward pass uses `kernel · mask`, but the gradient reaches
        every weight (straight-through) and the kernel's constraint leaves pruned weights alone. Setting it to
        False folds the mask into the kernel (pruned weights become exactly 0) and restores the normal constraint."""
        return self._regrow

    @regrow.setter
    def regrow(self, value):
        if not isinstance(value, bool):
            raise Arguments(self.name).invalid("regrow", "True or False", value)
        if self.built and (value or self._regrow_switch is not None):
            if self._regrow_switch is None:
                _add_regrow_switch(self, 1.0)
                constrain_to_mask(self)
            if not value:
                kernel = kernel_variable(self)
                kernel.assign(kernel * ops.cast(self.mask, kernel.dtype))
            self._regrow_switch.assign(1.0 if value else 0.0)
        self._regrow = value

    def masked_kernel(self, kernel):
        """`kernel · mask`, quantized if the layer has a kernel quantizer; in regrow mode with the gradient of
        `kernel` (Guo et al.'s straight-through)."""
        if self._regrow_switch is None:
            kernel = kernel * self.mask
        else:
            passed = kernel * _kept(self.mask, self._regrow_switch, kernel.dtype)
            kernel = passed + ops.stop_gradient(kernel * ops.cast(self.mask, kernel.dtype) - passed)
        return kernel if self.kernel_quantizer is None else self.kernel_quantizer(kernel)

    def effective_bias(self):
        """The bias the layer adds: quantized if it has a bias quantizer."""
        return self.bias if self.bias_quantizer is None else self.bias_quantizer(self.bias)

    def biased_and_activated(self, outputs):
        """`activation(outputs + bias)`, the (effective) bias along the channel axis."""
        if self.bias is not None:
            axis = 1 if getattr(self, "data_format", "channels_last") == "channels_first" else -1
            shape = [1] * len(outputs.shape)
            shape[axis] = outputs.shape[axis]
            outputs = outputs + ops.reshape(self.effective_bias(), shape)
        return outputs if self.activation is None else self.activation(outputs)

    def get_config(self):
        config = super().get_config()
        if self._regrow:  # only then: out of regrow mode the config is exactly the base class's
            config["regrow"] = True
        for key in ("kernel_quantizer", "bias_quantizer"):  # likewise
            if getattr(self, key) is not None:
                config[key] = keras.saving.serialize_keras_object(getattr(self, key))
        return config

    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)
