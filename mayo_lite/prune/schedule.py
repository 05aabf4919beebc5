"""Gradual pruning while training, as TensorFlow Model Optimization's pruning schedules do it: the pruned fraction
follows a schedule of the epoch counter, and `train` prunes the model to it every `frequency` steps.

`constant` prunes to `percent` from `begin` to `end`; `polynomial` rises from `initial` to `final` between `begin` and
`end` as `final + (initial − final)·(1 − progress)^power` (TFMOT's PolynomialDecay, power 3 by default), so most
weights go early, while the network can still recover, and few near the end.

`surgery` is dynamic network surgery (Guo et al. 2016; Mayo's DynamicNetworkSurgeryPruner): no target fraction,
but every `frequency` steps from `begin` to `end` each layer's mask is updated from its weights' magnitudes
(`mayo_lite.prune.surgery`), and pruned weights keep learning, so that they can come back.
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


# schedule type -> (pruned fraction at an epoch, or None for surgery; its settings and their defaults; None:
# required). Surgery's factors are Mayo's and Guo et al.'s hysteresis around the threshold.
SCHEDULES = {
    "constant": (_constant, {"percent": None, "begin": 0.0, "end": math.inf, "frequency": 100}),
    "polynomial": (_polynomial, {"initial": 0.0, "final": None, "begin": 0.0, "end": None, "power": 3,
                                 "frequency": 100}),
    "surgery": (None, {"alpha": None, "on_factor": 1.1, "off_factor": 0.9, "begin": 0.0, "end": math.inf,
                       "frequency": 100}),
}
# Settings that may be negative: surgery's threshold is mean(|w|) + alpha·std(|w|), and Mayo's default alpha is -2.
_SIGNED = {"alpha"}


class PruneSchedule:
    """When and how much `train` prunes: `due(step, epoch)` says whether to prune now, `percent(epoch)` how much
    (for surgery, `settings` holds alpha and the factors of the mask update instead).

    Args:
        settings: the schedule mapping (`type` and the keys of `SCHEDULES[type]`), already validated.
    """

    def __init__(self, settings):
        self.kind = settings["type"]
        function, defaults = SCHEDULES[self.kind]
        self.settings = {**defaults, **{k: v for k, v in settings.items() if k != "type"}}
        self._function = function

    @property
    def surgery(self):
        """Whether this is dynamic network surgery (masks that regrow) rather than a pruned fraction."""
        return self._function is None

    @property
    def frequency(self):
        return int(self.settings["frequency"])

    def active(self, epoch):
        return self.settings["begin"] <= epoch <= self.settings["end"]

    def due(self, step, epoch):
        return self.active(epoch) and step % self.frequency == 0

    def percent(self, epoch):
        """The fraction to prune at `epoch`; None for surgery, which has no target fraction."""
        return None if self.surgery else self._function(self.settings, epoch)


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
        if key in _SIGNED:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ScheduleError(key, f"expected a finite number, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
            raise ScheduleError(key, f"expected a non-negative number, got {value!r}")
        if key in ("percent", "initial", "final") and not value < 1:
            raise ScheduleError(key, f"expected a fraction in [0, 1), got {value!r}")
        if key in ("on_factor", "off_factor") and not 0 < value < math.inf:
            raise ScheduleError(key, f"expected a positive number, got {value!r}")
    frequency = spec.get("frequency", 1)
    if frequency < 1 or int(frequency) != frequency:
        raise ScheduleError("frequency", f"expected a whole number of steps >= 1, got {frequency!r}")
    schedule = PruneSchedule(spec)
    if schedule.surgery and schedule.settings["off_factor"] > schedule.settings["on_factor"]:
        raise ScheduleError("off_factor", f"expected at most on_factor ({schedule.settings['on_factor']}): a weight "
                                          f"is pruned below off_factor·threshold and spliced back above "
                                          f"on_factor·threshold, got {schedule.settings['off_factor']!r}")
    if schedule.settings["end"] < schedule.settings["begin"]:
        raise ScheduleError(None, f"end ({schedule.settings['end']}) is before begin ({schedule.settings['begin']})")
    return schedule
