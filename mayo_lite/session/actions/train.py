"""The `train` action: train until `system.max_epochs`, saving checkpoints as `system.checkpoint.save` says."""

import logging
import math

import tensorflow as tf

from mayo_lite import registry
from mayo_lite.errors import ConfigError
from mayo_lite.session import callbacks, distill, pruning
from mayo_lite.session.epochs import epoch_text

log = logging.getLogger("mayo_lite")


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
    spec = cfg.get("train.learning_rate")
    if isinstance(spec, dict):
        # The schedule's arguments are numbers (a boundary list, `staircase`), each refused here by its own key
        # and the file or override that set it, before TensorFlow fails on it without naming either.
        for key, value in spec.items():
            if str(key).startswith("_") or key in ("type", "name", "warmup_epochs") or isinstance(value, (int, float, list)):
                continue
            if key == "staircase":
                cfg.boolean("train.learning_rate.staircase")
            else:
                cfg.number(f"train.learning_rate.{key}")  # raises: expected a number, got 'abc'
        if "warmup_epochs" in spec:
            cfg.number("train.learning_rate.warmup_epochs", 0)
    where = cfg.where("train.learning_rate")
    schedule = registry.learning_rate_schedule(spec, where)
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
