"""Keras-style errors for bad constructor arguments of this project's layers: which argument, what was expected,
what was received (`mayo_lite.errors.ArgumentError`, the package's one argument error)."""

import math

from mayo_lite.errors import ArgumentError, interval


class Arguments:
    """Raises Keras-style errors for bad constructor arguments, prefixed with the layer's name when it has one."""

    def __init__(self, name):
        self.owner = f"Layer '{name}'" if name else None

    def invalid(self, argument, expected, value):
        return ArgumentError(argument, expected, value, self.owner)

    def choice(self, argument, value, choices):
        if value not in choices:
            raise self.invalid(argument, "one of " + ", ".join(repr(c) for c in choices), value)
        return value

    def number(self, argument, value, low, high, low_open=False, expected=None):
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
                or value > high or value < low or (low_open and value == low)):
            raise self.invalid(argument, expected or f"a float in {interval(low, high, low_open)}", value)
        return float(value)

    def gate_regularizer(self, regularizer, policy, known):
        """A gated convolution's `regularizer` ({loss name in `known`: weight}), checked against its policy."""
        if regularizer is not None and not isinstance(regularizer, dict):
            raise self.invalid("regularizer", "a dict of loss weights or None", regularizer)
        regularizer = dict(regularizer or {})
        for name, weight in regularizer.items():
            self.choice("regularizer", name, known)
            self.number(f"regularizer.{name}", weight, -math.inf, math.inf, expected="a number")
        if policy == "naive" and not regularizer.get("mse", 0) > 0:
            raise self.invalid("regularizer", "a positive `mse` weight with policy='naive' (it is what trains the "
                                              "naive gate)", regularizer)
        if policy != "naive" and "mse" in regularizer:
            raise self.invalid("regularizer", "no `mse` unless policy='naive'", regularizer)
        return {name: float(weight) for name, weight in regularizer.items()}

    def gate_combinations(self, policy, scale, center, parametric_beta, add_beta_first):
        """The arguments of a gated convolution that only some policies allow together."""
        if policy == "parametric" and not scale:
            raise self.invalid("scale", "True with policy='parametric' (its gamma replaces the batch norm's scale)",
                               scale)
        if policy != "parametric":
            for name, value in (("parametric_beta", parametric_beta), ("add_beta_first", add_beta_first)):
                if value:
                    raise self.invalid(name, "False unless policy='parametric'", value)
        if parametric_beta and not center:
            raise self.invalid("parametric_beta", "False when center=False (there is no beta)", parametric_beta)

    def refuse_conv_keywords(self, kwargs):
        """Removes from `kwargs` the Conv2D keywords a gated convolution cannot honour, raising for any value other
        than the one it has anyway (rather than failing inside Conv2D with "multiple values for argument")."""
        for key, (expected, allowed) in REFUSED_CONV_KEYWORDS.items():
            if key in kwargs:
                value = kwargs.pop(key)
                if not any(value is choice or value == choice for choice in allowed):
                    raise self.invalid(key, expected, value)


# Conv2D keyword -> (what a gated convolution expects, the values it accepts: the ones it has anyway).
REFUSED_CONV_KEYWORDS = {
    "data_format": ("'channels_last' (the gate works on the last axis)", ("channels_last", None)),
    "use_bias": ("False (the gate's beta takes the bias' place)", (False,)),
    "groups": ("1", (1,)),
    "bias_initializer": ("no bias arguments (there is no bias)", ()),
    "bias_regularizer": ("no bias arguments (there is no bias)", ()),
    "bias_constraint": ("no bias arguments (there is no bias)", ()),
    "activity_regularizer": ("None (use `regularizer` for the gates)", (None,)),
}
