"""The `train` action: train until `system.max_epochs`, saving checkpoints as `system.checkpoint.save` says."""

import logging
import math

import tensorflow as tf

from mayo_lite import registry
from mayo_lite.config.keys import located_error
from mayo_lite.errors import ConfigError
from mayo_lite.session import callbacks, distill, pruning
from mayo_lite.session.epochs import epoch_text

log = logging.getLogger("mayo_lite")

# The arguments of the registry's learning rate schedules and optimizers (Keras' and TF1's spellings) and the
# warm-up, each read with the typed readers: Keras takes a string or a flag where a number belongs without a word
# and fails in the middle of a step with Python's message, or never (`staircase: maybe` is true), so a bad value is
# named here by its file and key, before any work. Name -> (low, low_open, high).
NUMBERS = {
    "_initial": (0, True, math.inf),  # every shipped trainer's initial rate (docs/config-language.md)
    "warmup_epochs": (0, False, math.inf),
    "initial_learning_rate": (0, False, math.inf), "learning_rate": (0, False, math.inf),
    "value": (0, False, math.inf), "decay_steps": (0, True, math.inf), "decay_rate": (0, False, math.inf),
    "alpha": (0, False, 1), "warmup_steps": (0, False, math.inf),
    "momentum": (0, False, 1), "rho": (0, False, 1), "decay": (0, False, 1), "epsilon": (0, False, math.inf),
    "beta_1": (0, False, 1), "beta_2": (0, False, 1), "beta1": (0, False, 1), "beta2": (0, False, 1),
    "weight_decay": (0, False, math.inf), "clipnorm": (0, True, math.inf),
}
OPTIONAL_NUMBERS = {"warmup_target"}  # null: no warm-up in CosineDecay
FLAGS = {"staircase", "nesterov", "use_nesterov", "amsgrad", "centered"}
NUMBER_LISTS = {"boundaries", "values"}  # piecewise_constant


def train(runner):
    cfg = runner.cfg
    session = runner.session()
    if session.optimizer is None:
        raise ConfigError("train: the config has no `train` section; add a trainer, e.g. trainers/lenet5.yaml")
    session.measured_densities = None  # the gates change with the weights
    gradual = pruning.schedule(cfg, session.model)
    max_epochs = runner.settings.max_epochs
    if session.epoch.value >= max_epochs - 1e-9:
        log.info("already trained to epoch %s (system.max_epochs=%s); reset-num-epochs trains a full schedule "
                 "again", epoch_text(session.epoch.value), epoch_text(max_epochs))
        return
    if session.teacher is not None:  # train.distill: its checkpoint is read (or refused) before the first step
        log.info("the logged loss blends the crossentropy with the distillation term (weight %g)",
                 session.teacher.weight)
    session.loops.train(max_epochs, callbacks.from_config(cfg, runner.settings, session, gradual))


def check_train(cfg, settings):
    """What `train` will use, checked before the session is built: the trainer, its learning rate over the whole
    schedule, its optimizer and a gradual pruning schedule."""
    if cfg.get("train", None) is None:
        raise ConfigError("train: the config has no `train` section; add a trainer, e.g. trainers/lenet5.yaml")
    for key in ("train.learning_rate", "train.optimizer"):
        _check_arguments(cfg, key)
    where = cfg.where("train.learning_rate")
    schedule = registry.learning_rate_schedule(cfg.get("train.learning_rate"), where)
    max_epochs = settings.max_epochs
    for epoch in (0.0, max_epochs / 2, max_epochs):
        try:
            rate = float(schedule(tf.constant(epoch, tf.float32)))
        except (TypeError, ValueError, tf.errors.OpError) as error:
            raise ConfigError(f"{where}: cannot compute the learning rate at epoch {epoch:g} "
                              f"({type(error).__name__}: {str(error).splitlines()[0][:160]})") from None
        if not math.isfinite(rate) or rate < 0:
            raise ConfigError(f"{where}: the learning rate at epoch {epoch:g} is {rate}; expected a finite "
                              "non-negative number")
    registry.build("optimizer", cfg.get("train.optimizer"), cfg.where("train.optimizer"))
    pruning.check_schedule(cfg)
    callbacks.user_callbacks(cfg)
    distill.settings(cfg)


def _check_arguments(cfg, key):
    """The numbers and flags of the schedule or optimizer mapping at `key`, read with the typed readers; unknown
    arguments are left to the registry, which names them."""
    spec = cfg.get(key)
    if not isinstance(spec, dict):
        return
    for name in spec:
        path = f"{key}.{name}"
        if name in NUMBERS:
            low, low_open, high = NUMBERS[name]
            cfg.number(path, low, high, low_open=low_open)
        elif name in OPTIONAL_NUMBERS:
            cfg.number(path, 0, optional=True)
        elif name in FLAGS:
            cfg.boolean(path)
        elif name in NUMBER_LISTS:
            values = cfg.get(path)
            if not isinstance(values, list) or not values:
                raise located_error(cfg.origin(path), path, f"expected a list of numbers, got {values!r}")
            for index in range(len(values)):
                cfg.number(f"{path}.{index}")
