"""Mayo's overriders: pruners read as this project's `prune:` section, quantizers as the layers' `quantize:` key.

Mayo prunes and quantizes by overriding a layer's variables: `weights_overrider: {type:
mayo.override.DynamicNetworkSurgeryPruner, alpha: 2}` on the layer (its legacy form), or `overrider: {weights: {dns:
{type: ...}}, activation: {...}}` (what the `_overrider:` files of models/override/ put on every layer). Here pruning
is one `prune:` section: `translate` takes the pruners off a model's layer specs and says which `prune:` settings
they amount to. Quantizers stay on their layer as `quantize: {weights|biases|activation|depthwise_weights: {spec,
where}}`, which the model builder turns into `mayo_lite.quantize` objects. Mayo applies a variable's overriders in
decreasing `_priority`; a pruner is applied first here, so a quantizer ranked above a pruner is refused, as are
gradient overriders and chains of quantizers. Plain data in and out, as in the rest of this room.
"""

import copy
import math
import numbers
from dataclasses import dataclass, field

from mayo_lite.errors import ConfigError, did_you_mean, with_suggestions

REFUSED = "not one of Mayo's overriders this project reads"
# Mayo's quantizers (`mayo.override.<name>`), the classes of mayo_lite.quantize (a test checks they agree; this room
# does not import Keras). Their arguments are checked where they are built.
QUANTIZERS = ("FloatingPointQuantizer", "ShiftQuantizer", "FixedPointQuantizer", "CourbariauxQuantizer",
              "DGQuantizer", "DGTrainableQuantizer", "LogQuantizer", "MixedQuantizer", "Recentralizer",
              "IncrementalQuantizer", "TernaryQuantizer", "ChannelTernaryQuantizer")
TARGETS = ("weights", "biases", "activation", "depthwise_weights")  # the variables a quantizer may override
# Mayo's pruners (`mayo.override.<name>`) -> (the variable they override, their parameters and defaults; None:
# required). Mayo's own default alpha is -2 (the initial value of its `alpha` parameter).
PRUNERS = {
    "DynamicNetworkSurgeryPruner": ("weights", {"alpha": -2.0, "on_factor": 1.1, "off_factor": 0.9}),
    "MeanStdPruner": ("weights", {"alpha": -2.0}),
    "NetworkSlimmer": ("activation", {"density": None, "weight": 0.01, "global_threshold": True,
                                      "incremental": False}),
}
_COMMON = ("should_update", "enable", "_priority")  # every Mayo overrider takes them
# The layer types whose kernel the runner masks (a depthwise-separable convolution's pointwise one).
_MASKED = ("convolution", "depthwise_separable_convolution")
_WEIGHTED = (*_MASKED, "depthwise_convolution", "fully_connected", "gated_convolution")


@dataclass
class Translation:
    """`model`: the model spec without overriders; `prune`: the `prune:` settings they amount to (None: there were
    none); `summary`: one line saying what was translated ("" when nothing was)."""

    model: object
    prune: dict = None
    summary: str = ""
    notes: list = field(default_factory=list)


def is_overrider_key(key):
    return key == "overrider" or (isinstance(key, str) and key.endswith("_overrider"))


def translate(model, where=lambda path: path):
    """Reads Mayo's overriders off the resolved `model` section. `where(path)` names a key path in errors (a
    config's `where`). Raises a ConfigError for an overrider that is not a pruner this project has, or pruners it
    cannot combine."""
    if not isinstance(model, dict) or not isinstance(model.get("layers"), dict):
        return Translation(model)
    model = copy.deepcopy(model)
    found, quantized = [], []
    _collect(model["layers"], "model.layers", "", found, quantized, where)
    _attach_quantizers(quantized, found, where)
    if not found:
        translation = Translation(model)
        _summarise_quantizers(translation, quantized)
        return translation
    kinds = {pruner.technique for pruner in found}
    if len(kinds) > 1:
        raise ConfigError(f"{where('model.layers')}: Mayo's overriders ask for {' and '.join(sorted(kinds))} at once; "
                          "translated into the `prune:` section, a model takes one pruning technique")
    translation = Translation(model)
    TECHNIQUES[kinds.pop()](found, translation, where)
    _summarise_quantizers(translation, quantized)
    return translation


@dataclass
class _Pruner:
    layer: str  # the Keras layer's name (`block.conv1` inside a module)
    spec: dict  # the layer's spec
    kind: str  # Mayo's class name
    technique: str  # a key of TECHNIQUES
    settings: tuple
    updates: bool
    path: str
    priority: object = 0


def _collect(layers, path, prefix, found, quantized, where):
    for name, spec in layers.items():
        if not isinstance(spec, dict):
            continue
        here = f"{path}.{name}"
        if spec.get("type") == "module" and isinstance(spec.get("layers"), dict):
            _collect(spec["layers"], f"{here}.layers", f"{prefix}{name}.", found, quantized, where)
        for key in [key for key in spec if is_overrider_key(key)]:
            value = spec.pop(key)
            if str(name).startswith("_"):  # a template (`_conv: &conv`); the layers that use it carry their own
                continue
            if key == "overrider":
                targets = value.items() if isinstance(value, dict) and "type" not in value else [("weights", value)]
            else:
                targets = [(key[:-len("_overrider")], value)]
            for target, overriders in targets:
                at = f"{here}.{key}" + (f".{target}" if key == "overrider" else "")
                if target == "gradient" and overriders:
                    raise ConfigError(f"{where(at)}: Mayo's gradient overriders (quantized gradients and errors) are "
                                      "not supported; take `gradient:` out of the overrider")
                found += _pruners(overriders, target, at, prefix + name, spec, where, quantized)


def _pruners(value, target, path, layer, spec, where, quantized):
    """The enabled pruners in one overridden variable's value: None, one overrider, or named (or listed) ones, which
    Mayo chains by `_priority`; the quantizers among them go to `quantized`."""
    if value is None or value == {}:
        return []
    if isinstance(value, list):
        return [pruner for index, item in enumerate(value)
                for pruner in _pruners(item, target, f"{path}.{index}", layer, spec, where, quantized)]
    if isinstance(value, dict) and "type" not in value:
        return [pruner for name, item in value.items()
                for pruner in _pruners(item, target, f"{path}.{name}", layer, spec, where, quantized)]
    if not isinstance(value, dict):
        raise ConfigError(f"{where(path)}: {REFUSED} (expected an overrider mapping with `type`, got {value!r})")
    kind = value["type"]
    if not isinstance(kind, str):
        raise ConfigError(f"{where(path)}.type: expected the name of one of Mayo's overriders, got {kind!r}")
    name = kind.rsplit(".", 1)[-1] if kind.startswith("mayo.override.") else kind
    if name in QUANTIZERS:
        if target not in TARGETS:
            raise ConfigError(f"{where(path)}: a quantizer overrides one of {', '.join(TARGETS)}, not `{target}`")
        if value.get("enable", True) is not False:
            quantized.append(_Quantizer(layer, spec, target, value, path))
        return []
    if name not in PRUNERS:
        known = ", ".join(f"mayo.override.{n}" for n in (*PRUNERS, *QUANTIZERS))
        hint = did_you_mean(name, (*PRUNERS, *QUANTIZERS), prefix="mayo.override.")
        raise ConfigError(f"{where(path)}.type: {REFUSED}: {kind!r}; {hint or 'known: ' + known}")
    variable, defaults = PRUNERS[name]
    if target != variable:
        raise ConfigError(f"{where(path)}: {REFUSED} (Mayo's {name} overrides `{variable}`, not `{target}`)")
    accepted = [*defaults, *_COMMON]
    unknown = sorted(str(key) for key in set(value) - set(accepted) - {"type"})
    if unknown:
        raise ConfigError(f"{where(path)}: unknown key {', '.join(with_suggestions(unknown, accepted))} for Mayo's "
                          f"{name} (accepted: {', '.join(accepted)})")
    missing = [key for key, default in defaults.items() if default is None and key not in value]
    if missing:
        raise ConfigError(f"{where(path)}: Mayo's {name} needs {', '.join(missing)}")
    if value.get("enable", True) is False:
        return []
    settings = {key: value.get(key, default) for key, default in defaults.items()}
    for key, check in _CHECKS.items():
        if key in settings and not check[0](settings[key]):
            raise ConfigError(f"{where(path + '.' + key)}: expected {check[1]}, got {settings[key]!r}")
    technique, settings = _SETTINGS[name](settings)
    return [_Pruner(layer, spec, name, technique, settings, value.get("should_update", True) is not False, path,
                     value.get("_priority", 0))]


@dataclass
class _Quantizer:
    layer: str
    spec: dict  # the layer's spec
    target: str
    value: dict  # the quantizer's spec
    path: str

    @property
    def priority(self):
        priority = self.value.get("_priority", 0)
        return priority if _number(priority) else 0


def _attach_quantizers(quantized, found, where):
    """Puts each quantizer on its layer's spec as `quantize: {target: {spec, where}}`, after checking that each
    variable has one and that no pruner of the same variable ranks below it."""
    for quantizer in quantized:
        table = quantizer.spec.setdefault("quantize", {})
        if quantizer.target in table:
            raise ConfigError(f"{where(quantizer.path)}: a second quantizer on {quantizer.layer}'s "
                              f"{quantizer.target}; chains of quantizers on one variable are not supported")
        for pruner in found:
            below = pruner.spec is quantizer.spec and pruner.path.split(".overrider.")[-1].startswith(quantizer.target)
            if below and quantizer.priority > _number_or_zero(pruner.priority):
                raise ConfigError(f"{where(quantizer.path)}._priority: {quantizer.priority} ranks the quantizer "
                                  f"before the pruner at {where(pruner.path)}; pruning comes first here (give the "
                                  "pruner the higher _priority)")
        table[quantizer.target] = {"spec": quantizer.value, "where": where(quantizer.path)}


def _number_or_zero(value):
    return value if _number(value) else 0


def _summarise_quantizers(translation, quantized):
    if not quantized:
        return
    kinds = {}
    for quantizer in quantized:
        if quantizer.target != "activation" and quantizer.spec.get("type") not in _WEIGHTED:
            continue  # Mayo's `_overrider:` files put weight quantizers on layers without weights: unused there
        kind = str(quantizer.value["type"]).rsplit(".", 1)[-1]
        kinds.setdefault(f"{kind} on {quantizer.target}", []).append(quantizer.layer)
    line = "; ".join(f"{kind} ({', '.join(dict.fromkeys(layers))})" for kind, layers in kinds.items())
    translation.summary = "; ".join(filter(None, [translation.summary, f"Mayo's quantizers: {line}"]))


def _number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# parameter -> (test, what is expected)
_CHECKS = {
    "alpha": (_number, "a finite number"),
    "on_factor": (lambda v: _number(v) and v > 0, "a positive number"),
    "off_factor": (lambda v: _number(v) and v > 0, "a positive number"),
    "density": (lambda v: _number(v) and 0 < v <= 1, "a fraction in (0, 1]"),
    "weight": (lambda v: _number(v) and v >= 0, "a non-negative number"),
    "global_threshold": (lambda v: isinstance(v, bool), "true or false"),
    "incremental": (lambda v: v is False, "false (incremental slimming is not supported)"),
}
# Mayo's pruner -> (technique, its settings): a mean-std pruner is surgery whose two factors are 1, since
# `(mask or |w| > t) and |w| > t` is Mayo's MeanStdPruner mask `|w| > t`.
_SETTINGS = {
    "DynamicNetworkSurgeryPruner": lambda s: ("surgery", (s["alpha"], s["on_factor"], s["off_factor"])),
    "MeanStdPruner": lambda s: ("surgery", (s["alpha"], 1.0, 1.0)),
    "NetworkSlimmer": lambda s: ("slimming", (s["density"], s["weight"], s["global_threshold"])),
}


def _agreed(found, names, where):
    """The one setting tuple every pruner has; a ConfigError naming two that differ."""
    first = found[0]
    for pruner in found[1:]:
        if pruner.settings != first.settings:
            differing = [f"{key} {a!r} and {b!r}" for key, a, b in zip(names, first.settings, pruner.settings)
                         if a != b]
            raise ConfigError(f"{where(pruner.path)}: {'; '.join(differing)} at {first.layer} and {pruner.layer}; "
                              "the `prune:` section takes one setting for every layer")
    return first.settings


def _updated(found, translation):
    skipped = [pruner.layer for pruner in found if not pruner.updates]
    if skipped:
        translation.notes.append(f"{', '.join(skipped)} kept as loaded (should_update: false)")
    return [pruner for pruner in found if pruner.updates]


def _surgery(found, translation, where):
    allowed = []
    for pruner in found:
        kind = pruner.spec.get("type")
        if kind == "gated_convolution":
            raise ConfigError(f"{where(pruner.path)}: dynamic network surgery cannot regrow the weights of a "
                              "gated_convolution (its mask is static); take the overrider off this layer")
        if kind in _MASKED:
            allowed.append(pruner)
    left = [pruner.layer for pruner in found if pruner not in allowed]
    if left:
        translation.notes.append(f"{', '.join(left)} not pruned (the runner masks convolutions only)")
    alpha, on_factor, off_factor = _agreed(allowed or found, ("alpha", "on_factor", "off_factor"), where)
    if off_factor > on_factor:
        raise ConfigError(f"{where(found[0].path)}: off_factor ({off_factor}) above on_factor ({on_factor}); a "
                          "weight is pruned below off_factor·threshold and spliced back above on_factor·threshold")
    updated = _updated(allowed, translation)
    translation.prune = {}
    if updated:
        translation.prune = {"layers": [pruner.layer for pruner in updated], "schedule": {
            "type": "surgery", "alpha": alpha, "on_factor": on_factor, "off_factor": off_factor}}
    kinds = sorted({pruner.kind for pruner in found})
    _summarise(translation, kinds, updated)


def _slimming(found, translation, where):
    for pruner in found:
        params = pruner.spec.get("normalizer_params") or {}
        if pruner.spec.get("type") not in _MASKED or not pruner.spec.get("normalizer_fn"):
            raise ConfigError(f"{where(pruner.path)}: network slimming ranks channels by the scale of the batch "
                              "norm after the layer, and this layer has none (a convolution with normalizer_fn)")
        if isinstance(params, dict) and params.get("scale") is False:
            raise ConfigError(f"{where(pruner.path)}: network slimming ranks channels by the batch norm's scale "
                              "(gamma), and normalizer_params.scale is false here")
    density, weight, global_threshold = _agreed(found, ("density", "weight", "global_threshold"), where)
    updated = _updated(found, translation)
    translation.prune = {"granularity": "channel", "percent": 1.0 - density,
                         "scope": "global" if global_threshold else "layer",
                         "layers": [pruner.layer for pruner in updated]}
    model = translation.model
    if model.get("batch_norm_scale_l1") is None:
        model["batch_norm_scale_l1"] = weight
        translation.notes.append(f"model.batch_norm_scale_l1 {weight} (an L1 penalty on every batch norm's scale)")
    elif model["batch_norm_scale_l1"] != weight:
        translation.notes.append(f"model.batch_norm_scale_l1 kept at {model['batch_norm_scale_l1']}, not {weight}")
    _summarise(translation, ["NetworkSlimmer"], updated)


def _flow(value):
    """`value` as YAML's flow style writes it, for the log line."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_flow, value)) + "]"
    return str(value)


def _summarise(translation, kinds, updated):
    layers = ", ".join(pruner.layer for pruner in updated) or "no layer"
    translation.summary = (f"Mayo's {' and '.join(kinds)} on {layers} read as prune: {_flow(translation.prune)}"
                           + "".join(f"; {note}" for note in translation.notes))


TECHNIQUES = {"surgery": _surgery, "slimming": _slimming}
