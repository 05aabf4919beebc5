"""Dense to gated: which variable of a dense model's batch norm starts each variable of a gated layer when a dense
checkpoint is loaded into the gated model."""

from mayo_lite.layers import GatedConv2D

# What starts a gated layer's variables when a dense checkpoint is loaded into a gated model: the variable of the
# dense layer's batch norm (`<name>.bn`). docs/design/fbs-semantics.md: the predictor's bias starts from the dense scale and beta from the
# dense offset, so at density 1.0 the gated model computes almost what the dense one did.
_DENSE_SOURCES = {
    "parametric": {"moving_mean": "moving_mean", "moving_variance": "moving_variance", "beta": "beta",
                   "gate_bias": "gamma", "beta_bias": "beta"},
    "squeeze": {"moving_mean": "moving_mean", "moving_variance": "moving_variance", "beta": "beta",
                "gamma": "gamma"},
}
_DENSE_SOURCES["naive"] = _DENSE_SOURCES["squeeze"]


def gate_sources(policy):
    """{name of a gated layer's variable: name of the dense batch norm's variable that starts it}, for `policy`."""
    return dict(_DENSE_SOURCES[policy])


def dense_sources(model):
    """{path of a gated layer's variable: path of the dense model's variable that initialises it}."""
    sources = {}
    for layer in model.layers:
        if not isinstance(layer, GatedConv2D):
            continue
        for variable in layer.variables:
            name = variable.path.rsplit("/", 1)[-1]
            source = _DENSE_SOURCES[layer.policy].get(name)
            if source is not None:
                prefix = variable.path[:-len(f"{layer.name}/{name}")]
                sources[variable.path] = f"{prefix}{layer.name}.bn/{source}"
    return sources
