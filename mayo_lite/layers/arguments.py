"""Keras-style errors for bad constructor arguments of this project's layers: which argument, what was expected,
what was received."""

import math

class GateArgumentError(ValueError):
    """A bad constructor argument of a gated layer; `argument`, `expected` and `value` say which and why, so a
    caller (the YAML model builder) can name the argument in its own terms."""

    def __init__(self, where, argument, expected, value):
        super().__init__(f"{where}Invalid value received for argument `{argument}`. Expected {expected}. "
                         f"Received: {argument}={value!r}")
        self.argument = argument
        self.expected = expected
        self.value = value


class Arguments:
    """Raises Keras-style errors for bad constructor arguments, prefixed with the layer's name when it has one."""

    def __init__(self, name):
        self.where = f"Layer '{name}': " if name else ""

    def invalid(self, argument, expected, value):
        return GateArgumentError(self.where, argument, expected, value)

    def choice(self, argument, value, choices):
        if value not in choices:
            raise self.invalid(argument, "one of " + ", ".join(repr(c) for c in choices), value)
        return value

    def number(self, argument, value, low, high, low_open=False, expected=None):
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
                or value > high or value < low or (low_open and value == low)):
            interval = f"{'(' if low_open else '['}{low}, {high}]"
            raise self.invalid(argument, expected or f"a float in {interval}", value)
        return float(value)

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
