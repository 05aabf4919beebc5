"""Gradual pruning while training, as TensorFlow Model Optimization's pruning schedules do it: the pruned fraction
follows a schedule of the epoch counter, and `train` prunes the model to it every `frequency` steps.

`constant` prunes to `percent` from `begin` to `end`; `polynomial` rises from `initial` to `final` between `begin` and
`end` as `final + (initial − final)·(1 − progress)^power` (TFMOT's PolynomialDecay, power 3 by default), so most
weights go early, while the network can still recover, and few near the end.
"""

import math


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
