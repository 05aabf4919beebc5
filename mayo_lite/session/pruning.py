"""The `prune:` section of a config, read and checked, for one-shot pruning (the `prune` action) and gradual
pruning during `train`.

The algorithms are `mayo_lite.prune`'s; this module reads and checks the section, so that a bad setting is a
configuration error naming its key before anything is evaluated, pruned or written.
"""

import logging
import math

from mayo_lite.errors import ConfigError
from mayo_lite.prune import (GRANULARITIES, KERNEL_SALIENCIES, SCOPES, PruneArgumentError, prunable_layers,
                             prune_model)
from mayo_lite.prune.schedule import SCHEDULES, PruneSchedule

log = logging.getLogger("mayo_lite")

# The section's defaults (the reference's `--percent 0.3`, kernel granularity, max saliency, one global threshold).
# They live here and not in defaults.yaml: a `prune` section in the config is what gives the model masks.
# `recalibrate` (beyond the reference, off by default): re-estimate the batch norms' moving statistics on that many
# training batches after pruning, since the pruned convolutions' outputs no longer have the statistics they had.
DEFAULTS = {"percent": 0.3, "granularity": "kernel", "saliency": "max", "scope": "global", "layers": None,
            "name": "pruned", "schedule": None, "recalibrate": 0}


def settings(cfg):
    """The checked `prune` section, with defaults filled in."""
    section = cfg.get("prune", None)
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


def check_layers(cfg, model, values):
    """The layers the section selects; a configuration error when there are none or a pattern matches none.

    Channel pruning ranks channels by the scale of the batch norm after the convolution, so with `layers` unset it
    takes the convolutions that have one, and a named convolution without one is an error.
    """
    try:
        selected = prunable_layers(model, values["layers"])
    except PruneArgumentError as error:
        raise ConfigError(f"{cfg.where('prune.layers')}: {error}") from None
    if values["granularity"] == "channel":
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
    return _Gradual(resolved, prune_arguments(values, check_layers(cfg, model, values)))


def check_schedule(cfg):
    """The `prune.schedule` as a `PruneSchedule`, checked without the model, or None."""
    values = settings(cfg)
    spec = values["schedule"]
    if spec is None:
        return None
    where = cfg.where("prune.schedule")
    if not isinstance(spec, dict) or spec.get("type") not in SCHEDULES:
        raise ConfigError(f"{where}: expected a mapping with type {' or '.join(SCHEDULES)}, got {spec!r}")
    _, defaults = SCHEDULES[spec["type"]]
    unknown = sorted(set(spec) - set(defaults) - {"type"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(unknown)} for a {spec['type']} schedule "
                          f"(accepted: {', '.join(defaults)})")
    missing = [key for key, default in defaults.items() if default is None and key not in spec]
    if missing:
        raise ConfigError(f"{where}: a {spec['type']} schedule needs {', '.join(missing)}")
    for key in set(spec) - {"type"}:
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where}.{key}: expected a non-negative number, got {value!r}")
        if key in ("percent", "initial", "final") and not value < 1:
            raise ConfigError(f"{where}.{key}: expected a fraction in [0, 1), got {value!r}")
    if spec.get("frequency", 1) < 1 or int(spec.get("frequency", 1)) != spec.get("frequency", 1):
        raise ConfigError(f"{where}.frequency: expected a whole number of steps >= 1, got {spec['frequency']!r}")
    resolved = PruneSchedule(spec)
    if resolved.settings["end"] < resolved.settings["begin"]:
        raise ConfigError(f"{where}: end ({resolved.settings['end']}) is before begin "
                          f"({resolved.settings['begin']})")
    return resolved


class _Gradual:
    """Prunes a model to its schedule's fraction when a step is due; logs each pass."""

    def __init__(self, schedule, arguments):
        self.schedule = schedule
        self.arguments = arguments
        self.last_percent = None

    def after_step(self, model, step, epoch):
        if not self.schedule.due(step, epoch):
            return
        percent = min(self.schedule.percent(epoch), math.nextafter(1.0, 0.0))
        if percent == self.last_percent:
            return
        report = prune_model(model, **{**self.arguments, "percent": percent})
        self.last_percent = percent
        log.info("step %d, epoch %.3f: pruned to %.2f%% of the selected weights (%d of %d)", step, epoch,
                 100 * report.ratio, report.pruned, report.total)
