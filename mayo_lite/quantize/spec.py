"""Mayo's overrider specs (`{type: mayo.override.FixedPointQuantizer, width: 8, point: 2, _priority: 100}`) to
quantizers. The class may be named in full or by its short name; `_priority` (Mayo's ordering) is read by the
caller; a bad spec is a `SpecError` whose `key` is the dotted key under the spec that is wrong."""

from mayo_lite.errors import with_suggestions
from mayo_lite.quantize import QUANTIZERS
from mayo_lite.errors import ArgumentError

PREFIX = "mayo.override."
COMMON = ("should_update", "enable", "_priority")
NESTED = ("quantizer", "mean_quantizer")  # arguments that are quantizer specs themselves


class SpecError(ValueError):
    def __init__(self, key, message):
        super().__init__(message)
        self.key = key


def quantizer_class(kind):
    name = kind[len(PREFIX):] if isinstance(kind, str) and kind.startswith(PREFIX) else kind
    return QUANTIZERS.get(name) if isinstance(name, str) else None


def from_spec(spec, name=None, observe=False, key=""):
    """The quantizer a Mayo overrider spec describes (`observe`: it quantizes an activation)."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise SpecError(key, f"expected a quantizer mapping with `type`, got {spec!r}")
    cls = quantizer_class(spec["type"])
    if cls is None:
        raise SpecError(_join(key, "type"), f"unknown quantizer {spec['type']!r}; known: "
                        f"{', '.join(PREFIX + name for name in QUANTIZERS)}")
    accepted = [*cls.ARGUMENTS, *COMMON]
    unknown = sorted(str(k) for k in spec if k != "type" and k not in accepted)
    if unknown:
        raise SpecError(_join(key, unknown[0]), f"unknown key {', '.join(with_suggestions(unknown, accepted))} for "
                        f"{cls.__name__} (accepted: {', '.join(accepted)})")
    arguments = {k: value for k, value in spec.items() if k not in ("type", "_priority")}
    for argument in NESTED:
        if argument in arguments and arguments[argument] not in (None, False):
            arguments[argument] = from_spec(arguments[argument], key=_join(key, argument))
    if isinstance(arguments.get("quantizers"), dict):
        arguments["quantizers"] = {k: from_spec(value, key=_join(key, f"quantizers.{k}"))
                                   for k, value in arguments["quantizers"].items()}
    try:
        return cls(**arguments, observe=observe, name=name)
    except ArgumentError as error:
        raise SpecError(_join(key, error.argument), f"expected {error.expected}, got {error.value!r}") from None


def _join(key, suffix):
    return f"{key}.{suffix}" if key else suffix
