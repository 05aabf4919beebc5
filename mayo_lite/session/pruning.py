"""The `prune:` section of a config, read and checked, for one-shot pruning (the `prune` action) and gradual
pruning during `train`.

The algorithms are `mayo_lite.prune`'s; this module reads and checks the section, so that a bad setting is a
configuration error naming its key before anything is evaluated, pruned or written.
"""

from mayo_lite.config.mayo_overriders import translate
from mayo_lite.errors import ArgumentError, ConfigError
from mayo_lite.layers import GatedConv2D
from mayo_lite.prune import (GRANULARITIES, KERNEL_SALIENCIES, SCOPES, GradualPruning,
                             prunable_layers)
from mayo_lite.prune.schedule import ScheduleError, parse_schedule

# The section's defaults (the reference's `--percent 0.3`, kernel granularity, max saliency, one global threshold).
# They live here and not in defaults.yaml: a `prune` section in the config is what gives the model masks.
# `recalibrate` (beyond the reference, off by default): re-estimate the batch norms' moving statistics on that many
# training batches after pruning, since the pruned convolutions' outputs no longer have the statistics they had.
DEFAULTS = {"percent": 0.3, "granularity": "kernel", "saliency": "max", "scope": "global", "layers": None,
            "name": "pruned", "schedule": None, "recalibrate": 0}
# What each key means (docs/reference.md is generated from it).
MEANINGS = {
    "percent": "fraction of the selected weights `prune` removes, in [0, 1)",
    "granularity": "what is scored and removed together: weight, kernel (each K×K slice), filter (an output "
                   "channel's weights) or channel (by the following batch norm's scale)",
    "saliency": "how a kernel is scored: max (largest |w|, the reference), l1 or l2",
    "scope": "global (one threshold over all selected layers, the reference) or layer (the same percent in each)",
    "layers": "null for every convolution, or layer names and fnmatch patterns",
    "name": "the checkpoint `prune` saves",
    "schedule": "gradual pruning during `train`: {type: constant, percent}, {type: polynomial, final, end, ...} "
                "or dynamic network surgery, {type: surgery, alpha, ...}",
    "recalibrate": "training batches to re-estimate batch-norm statistics on after pruning (0: none)",
}


def requested(cfg):
    """The `prune` section as the config gives it, over what Mayo's pruning overriders on the model's layers amount
    to (`mayo_lite.config.mayo_overriders`); None when there is neither."""
    given = cfg.get("prune", None)
    implied = translate(cfg.get("model", None), cfg.where).prune
    if implied is None or not isinstance(given, (dict, type(None))):
        return given
    given = given or {}
    merged = {**implied, **given}
    if isinstance(implied.get("schedule"), dict) and isinstance(given.get("schedule"), dict):
        merged["schedule"] = {**implied["schedule"], **given["schedule"]}  # `prune.schedule.end=3` tunes it
    return merged


def settings(cfg):
    """The checked `prune` section, with defaults filled in."""
    section = requested(cfg)
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"{cfg.where('prune')}: expected a mapping (percent, granularity, saliency, scope, "
                          f"layers, name, schedule), got {section!r}")
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"{cfg.where('prune')}: unknown key {', '.join(unknown)} (accepted: "
                          f"{', '.join(DEFAULTS)})")
    values = {**DEFAULTS, **section}
    percent = values["percent"]
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent < 1:
        raise ConfigError(f"{cfg.where('prune.percent')}: expected a fraction in [0, 1), got {percent!r}")
    for key, table in (("granularity", GRANULARITIES), ("saliency", KERNEL_SALIENCIES), ("scope", SCOPES)):
        if values[key] not in table:
            raise ConfigError(f"{cfg.where(f'prune.{key}')}: expected one of {', '.join(table)}, "
                              f"got {values[key]!r}")
    recalibrate = values["recalibrate"]
    if isinstance(recalibrate, bool) or not isinstance(recalibrate, int) or recalibrate < 0:
        raise ConfigError(f"{cfg.where('prune.recalibrate')}: expected a number of batches (0: none), got "
                          f"{recalibrate!r}")
    if not isinstance(values["name"], str) or not values["name"] or "/" in values["name"]:
        raise ConfigError(f"{cfg.where('prune.name')}: expected a checkpoint name, got {values['name']!r}")
    return values


def prune_arguments(values, selected):
    arguments = {key: values[key] for key in ("percent", "granularity", "saliency", "scope")}
    arguments["layers"] = [layer.name for layer in selected]
    return arguments


def check_layers(cfg, model, values, surgery=False):
    """The layers the section selects; a configuration error when there are none or a pattern matches none.

    Channel pruning ranks channels by the scale of the batch norm after the convolution, so with `layers` unset it
    takes the convolutions that have one, and a named convolution without one is an error. Likewise `surgery`
    (dynamic network surgery) takes no gated convolution: their masks cannot regrow.
    """
    try:
        selected = prunable_layers(model, values["layers"])
    except ArgumentError as error:
        raise ConfigError(f"{cfg.where('prune.layers')}: {error}") from None
    if surgery:
        gated = [layer.name for layer in selected if isinstance(layer, GatedConv2D)]
        if values["layers"] is not None and gated:
            raise ConfigError(f"{cfg.where('prune.layers')}: dynamic network surgery cannot regrow the weights of "
                              f"a gated convolution, and {', '.join(gated)} are gated")
        selected = [layer for layer in selected if not isinstance(layer, GatedConv2D)]
    elif values["granularity"] == "channel":
        names = {layer.name for layer in model.layers}
        without = [layer.name for layer in selected if f"{layer.name}.bn" not in names]
        if values["layers"] is not None and without:
            raise ConfigError(f"{cfg.where('prune.layers')}: channel pruning needs a batch norm after each layer; "
                              f"{', '.join(without)} have none")
        selected = [layer for layer in selected if layer.name not in without]
    if not selected:
        raise ConfigError(f"prune: model {model.name!r} has no convolution to prune"
                          + (" with a batch norm (channel granularity)" if values["granularity"] == "channel" else ""))
    return selected


def schedule(cfg, model):
    """The `prune.schedule` of gradual pruning, checked, or None."""
    resolved = check_schedule(cfg)
    if resolved is None:
        return None
    values = settings(cfg)
    arguments = prune_arguments(values, check_layers(cfg, model, values, surgery=resolved.surgery))
    del arguments["percent"]
    return GradualPruning(resolved, **arguments)


def check_schedule(cfg):
    """The `prune.schedule` as a `PruneSchedule`, checked without the model, or None."""
    values = settings(cfg)
    spec = values["schedule"]
    if spec is None:
        return None
    try:
        return parse_schedule(spec)
    except ScheduleError as error:
        key = "prune.schedule" + (f".{error.key}" if error.key else "")
        raise ConfigError(f"{cfg.where(key)}: {error.reason}") from None
