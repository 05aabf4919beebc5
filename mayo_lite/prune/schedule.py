"""Gradual pruning while training, as TensorFlow Model Optimization's pruning schedules do it: the pruned fraction
follows a schedule of the epoch counter, and `train` prunes the model to it every `frequency` steps.

`constant` prunes to `percent` from `begin` to `end`; `polynomial` rises from `initial` to `final` between `begin` and
`end` as `final + (initial − final)·(1 − progress)^power` (TFMOT's PolynomialDecay, power 3 by default), so most
weights go early, while the network can still recover, and few near the end.
"""

import math
import numbers

from mayo_lite.errors import UserError


def _constant(settings, epoch):
    return settings["percent"]


def _polynomial(settings, epoch):
    begin, end = settings["begin"], settings["end"]
    progress = min(max((epoch - begin) / (end - begin), 0.0), 1.0) if end > begin else 1.0
    initial, final = settings["initial"], settings["final"]
    return final + (initial - final) * (1.0 - progress) ** settings["power"]


# schedule type -> (pruned fraction at an epoch, its settings and their defaults; None: required)
SCHEDULES = {
    "constant": (_constant, {"percent": None, "begin": 0.0, "end": math.inf, "frequency": 100}),
    "polynomial": (_polynomial, {"initial": 0.0, "final": None, "begin": 0.0, "end": None, "power": 3,
                                 "frequency": 100}),
}


class PruneSchedule:
    """When and how much `train` prunes: `due(step, epoch)` says whether to prune now, `percent(epoch)` how much.

    Args:
        settings: the schedule mapping (`type` and the keys of `SCHEDULES[type]`), already validated.
    """

    def __init__(self, settings):
        self.kind = settings["type"]
        function, defaults = SCHEDULES[self.kind]
        self.settings = {**defaults, **{k: v for k, v in settings.items() if k != "type"}}
        self._function = function

    @property
    def frequency(self):
        return int(self.settings["frequency"])

    def active(self, epoch):
        return self.settings["begin"] <= epoch <= self.settings["end"]

    def due(self, step, epoch):
        return self.active(epoch) and step % self.frequency == 0

    def percent(self, epoch):
        return self._function(self.settings, epoch)


class ScheduleError(UserError, ValueError):
    """A bad pruning schedule; `key` names the schedule's key at fault (None: the schedule itself)."""

    def __init__(self, key, reason):
        super().__init__(f"schedule{'.' + key if key else ''}: {reason}")
        self.key, self.reason = key, reason


def parse_schedule(spec):
    """A `PruneSchedule` from its mapping (`{"type": "polynomial", "final": 0.8, "begin": 0, "end": 4}`), the form
    of the runner's `prune.schedule`; a `ScheduleError` naming the key for anything else."""
    if not isinstance(spec, dict) or spec.get("type") not in SCHEDULES:
        raise ScheduleError(None, f"expected a mapping with type {' or '.join(SCHEDULES)}, got {spec!r}")
    _, defaults = SCHEDULES[spec["type"]]
    unknown = sorted(set(spec) - set(defaults) - {"type"})
    if unknown:
        raise ScheduleError(None, f"unknown key {', '.join(unknown)} for a {spec['type']} schedule "
                                  f"(accepted: {', '.join(defaults)})")
    missing = [key for key, default in defaults.items() if default is None and key not in spec]
    if missing:
        raise ScheduleError(None, f"a {spec['type']} schedule needs {', '.join(missing)}")
    for key in sorted(set(spec) - {"type"}):
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
            raise ScheduleError(key, f"expected a non-negative number, got {value!r}")
        if key in ("percent", "initial", "final") and not value < 1:
            raise ScheduleError(key, f"expected a fraction in [0, 1), got {value!r}")
    frequency = spec.get("frequency", 1)
    if frequency < 1 or int(frequency) != frequency:
        raise ScheduleError("frequency", f"expected a whole number of steps >= 1, got {frequency!r}")
    schedule = PruneSchedule(spec)
    if schedule.settings["end"] < schedule.settings["begin"]:
        raise ScheduleError(None, f"end ({schedule.settings['end']}) is before begin ({schedule.settings['begin']})")
    return schedule
