"""Variants of a resolved `model` section that compare a gated model with what it replaces: its dense counterpart,
and the static network of the width its gates keep."""

from mayo_lite.layers.thresholds import active_count


def _joins(model):
    if isinstance(model, list):
        return any(_joins(item) for item in model)
    if not isinstance(model, dict):
        return False
    if model.get("type") in ("add", "concat", "concatenate", "mul", "multiply"):
        return True
    return any(_joins(value) for value in model.values())


def _map_gated(model, convert):
    if isinstance(model, list):
        return [_map_gated(item, convert) for item in model]
    if not isinstance(model, dict):
        return model
    if model.get("type") == "gated_convolution":
        plain = {key: value for key, value in model.items() if key != "gate_params"} | {"type": "convolution"}
        return convert(plain, model.get("gate_params") or {})
    return {key: _map_gated(value, convert) for key, value in model.items()}


def without_gates(model):
    """The resolved `model` section with every `gated_convolution` turned back into the plain `convolution` it
    gates (same kernel, batch norm and activation), for comparing a gated model with its dense counterpart."""
    return _map_gated(model, lambda plain, gate: plain)


def without_quantizers(model):
    """The resolved `model` section without its layers' quantizers (the `quantize:` keys Mayo's overriders
    become): the float model a quantization-aware one computes in float."""
    if isinstance(model, list):
        return [without_quantizers(item) for item in model]
    if isinstance(model, dict):
        return {key: without_quantizers(value) for key, value in model.items() if key != "quantize"}
    return model


def static_width(model):
    """The dense counterpart with each gated convolution narrowed to the channels its gate keeps,
    `ceil(num_outputs · density)` (all of them when the gate is disabled): the static network that does the same
    number of MACs as the gated one at its nominal density. None when a `graph` joins branches (an addition needs
    all its inputs at full width, so the narrowing would not build)."""
    if _joins(model):
        return None
    def narrow(plain, gate):
        density = gate.get("density", 1.0) if gate.get("enable", True) else 1.0
        if isinstance(plain.get("num_outputs"), int) and isinstance(density, (int, float)):
            plain["num_outputs"] = active_count(plain["num_outputs"], density)
        return plain
    return _map_gated(model, narrow)


def with_widths(model, widths):
    """The resolved `model` section with the `num_outputs` of each layer named in `widths` ({layer name: count})
    set to that count: a narrowed network, or a teacher as wide as its checkpoint."""
    if isinstance(model, list):
        return [with_widths(item, widths) for item in model]
    if not isinstance(model, dict):
        return model
    return {key: ({**value, "num_outputs": widths[key]} if key in widths and isinstance(value, dict) else
                  with_widths(value, widths)) for key, value in model.items()}
