"""Layer types of Mayo's files that other frameworks do not have: the Hadamard transform and convolution of its
Hadamard models, and the input gating of its `models/gate/input/` (added to `layer_types.LAYER_TYPES`)."""

import keras

from mayo_lite.errors import ConfigError
from mayo_lite.layers import Hadamard, LocalGating
from mayo_lite.net.specs import CONV_KEYS, pair


def _hadamard(builder):
    # Mayo's `block` chooses how the transform is computed, not what it computes (its fast and slow transforms
    # agree); its files' `use_scales` and `num_outputs` are read by nothing in Mayo (the transform keeps its
    # input's channels): all accepted and unused.
    variable_scales = builder.get("variable_scales", False)
    if not isinstance(variable_scales, bool):
        raise ConfigError(f"{builder.where}.variable_scales: expected true or false, got {variable_scales!r}")
    builder.finish(builder.keep(Hadamard(variable_scales=variable_scales, name=builder.name)))


def _local_gating(builder):
    policy = builder.get("policy")
    kind = policy.get("type") if isinstance(policy, dict) else None
    if kind != "threshold_based":
        # Mayo's files use only this policy; its learned one (a 1×1 convolution, a regularizer, a sign) was removed
        # from Mayo with the layer.
        raise ConfigError(f"{builder.where}.policy: expected {{type: threshold_based, alpha: A}}, as Mayo's "
                          f"input-gated models give it, got {policy!r}")
    unknown = sorted(str(key) for key in policy if key not in ("type", "alpha"))
    if unknown:
        raise ConfigError(f"{builder.where}.policy: unknown key {', '.join(unknown)} (accepted: type, alpha)")
    alpha = policy.get("alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
        raise ConfigError(f"{builder.where}.policy.alpha: expected a number >= 0, got {alpha!r}")
    builder.keep(LocalGating(alpha, name=builder.name))


def _hadamard_convolution(builder):
    """Mayo's `hadamard_convolution`: a depthwise convolution (as many outputs as inputs) or a grouped one (one group
    per input channel, num_outputs a multiple of the inputs), then the Hadamard transform mixes the channels; the
    normalizer and activation (ReLU by default) come after the transform. Channel counts must be powers of 2."""
    padding, explicit = builder.padding("same")
    if explicit:
        builder.keep(keras.layers.ZeroPadding2D(explicit, name=f"{builder.name}.pad"))
    outputs = builder.get("num_outputs")

    def spatial(input_shape):
        channels = input_shape[-1]
        wanted = channels if outputs is None else outputs
        if wanted % channels or any(2 ** (n.bit_length() - 1) != n for n in (channels, wanted)):
            raise ConfigError(f"{builder.where}: a Hadamard convolution needs power-of-2 channel counts, outputs a "
                              f"multiple of the inputs; got {channels} inputs, num_outputs {wanted}")
        common = dict(strides=pair(builder.get("stride", 1), "stride", builder.where), padding=padding,
                      dilation_rate=pair(builder.get("rate", 1), "rate", builder.where),
                      trainable=builder.trainable(), name=f"{builder.name}.conv", **builder.bias_arguments())
        kernel = pair(builder.get("kernel_size"), "kernel_size", builder.where)
        initializer = builder.initializer("weights_initializer", "glorot_uniform")
        regularizer = builder.regularizer("weights_regularizer")
        if wanted == channels:
            return keras.layers.DepthwiseConv2D(kernel, depthwise_initializer=initializer,
                                                depthwise_regularizer=regularizer, **common)
        return keras.layers.Conv2D(wanted, kernel, groups=channels, kernel_initializer=initializer,
                                   kernel_regularizer=regularizer, **common)
    builder.keep_for_input(spatial)
    builder.finish(builder.keep(Hadamard(name=builder.name)))


MAYO_LAYER_TYPES = {
    "hadamard": (_hadamard, {"variable_scales", "use_scales", "block", "num_outputs", "normalizer_fn",
                             "normalizer_params", "activation_fn"}),
    "hadamard_convolution": (_hadamard_convolution, CONV_KEYS | {"num_outputs", "block"}),
    "local_gating": (_local_gating, {"policy"}),
}
