"""Knowledge distillation while training (`train.distill`), for any trainer: fine-tuning a gated (FBS) model, a
pruned one, or training from scratch.

    train:
      distill: {teacher: cifarnet, temperature: 4, weight: 0.5}

The teacher is the dense counterpart of the session's model (gated convolutions as plain ones, no masks, each layer
as wide as the checkpoint's kernel: a channel-pruned student learns from the full-width network), with the weights
of checkpoint `teacher`, selected as `system.checkpoint.load` selects one (a checkpoint of this run, a path,
the `latest` of another model's run on this dataset, or `keras:` / `torchvision:` / `tf1:` weights). A pruned
checkpoint's masks are multiplied into its kernels. Each example's loss becomes Hinton et al.'s blend

    (1 − weight) · crossentropy(label, student) + weight · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

(T² keeps the soft term's gradients at the scale of the hard one's as T changes); the logged `loss` is this blend.
Keras has no distillation for a custom training step, hence this module. The teacher runs in inference mode (its
batch norms' moving statistics, no dropout), its output stopped from the gradient.
"""

import logging

import tensorflow as tf

from mayo_lite import weights
from mayo_lite.errors import CheckpointError, ConfigError
from mayo_lite.net import build_model, with_widths, without_gates
from mayo_lite.weights import checkpoint

log = logging.getLogger("mayo_lite")

SETTINGS = {
    "teacher": "the checkpoint of the teacher, the dense model (required), named as system.checkpoint.load names one",
    "temperature": "T, by which both models' logits are divided before the softmax (default 4)",
    "weight": "w: each example's loss is (1 − w)·crossentropy + w·T²·KL(teacher's ‖ model's softened outputs) "
              "(default 0.5)",
}
KEYS = tuple(SETTINGS)


def settings(cfg):
    """`train.distill` checked: (teacher selector, temperature, weight), or None when it is not set."""
    spec = cfg.get("train.distill", None)
    if spec is None:
        return None
    where = cfg.where("train.distill")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected {{teacher: CHECKPOINT, temperature: T, weight: W}}, got {spec!r}")
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise ConfigError(f"{cfg.where('train.distill.' + unknown[0])}: train.distill has no key {unknown[0]!r} "
                          f"(it takes {', '.join(KEYS)})")
    teacher = spec.get("teacher")
    if not isinstance(teacher, (str, int)) or isinstance(teacher, bool) or teacher == "":
        raise ConfigError(f"{cfg.where('train.distill.teacher')}: expected the teacher's checkpoint (a name, a "
                          f"path or a model name, as system.checkpoint.load takes), got {teacher!r}")
    temperature = cfg.number("train.distill.temperature", 0, float("inf"), low_open=True, default=4.0)
    weight = cfg.number("train.distill.weight", 0, 1, default=0.5)
    return str(teacher), float(temperature), float(weight)


class Teacher:
    """A frozen model whose softened outputs the student is trained towards."""

    def __init__(self, model, temperature, weight, source):
        self.model, self.temperature, self.weight, self.source = model, temperature, weight, source

    def blend(self, images, logits, losses):
        """Each example's crossentropy `losses` blended with its distillation term (float32)."""
        teacher = tf.stop_gradient(tf.cast(self.model(images, training=False), tf.float32))
        scale = 1.0 / self.temperature
        targets = tf.nn.softmax(teacher * scale)
        divergence = tf.reduce_sum(
            targets * (tf.nn.log_softmax(teacher * scale) - tf.nn.log_softmax(logits * scale)), axis=-1)
        soft = divergence * self.temperature ** 2
        return (1.0 - self.weight) * tf.cast(losses, tf.float32) + self.weight * soft


def teacher(cfg, session):
    """The session's `Teacher`, or None when `train.distill` is not set. Raises CheckpointError when its checkpoint
    is not there or does not fit the teacher."""
    values = settings(cfg)
    if values is None:
        return None
    selector, temperature, weight = values
    key = "train.distill.teacher"
    path = session.checkpoint_for(selector, key)
    if path is None:
        raise CheckpointError(f"{key}={selector}: checkpoint {selector} of this run is not written yet; name the "
                              "dense model's checkpoint (its model name, a path)")
    spec = without_gates(session.model_spec)
    if isinstance(path, str):  # keras: / torchvision: / tf1:
        stored = None
    else:
        stored, _, _ = checkpoint.read(path)
        # As wide as the checkpoint: a narrowed (channel-pruned) student learns from the full-width model.
        spec = with_widths(spec, {name.split("/")[1]: value.shape[-1] for name, value in stored.items()
                                  if name.startswith("model/") and name.endswith("/kernel") and name.count("/") == 2})
    with session.strategy.scope():
        model = build_model(spec, session.input_shape(), origin=cfg.origin, masked=False)
    model.trainable = False
    if stored is None:
        stored, _ = weights.read_pretrained(path, model)
    targets = {f"model/{v.path}": v for v in model.variables if "seed_generator" not in v.path}
    pairs, missing, _ = checkpoint.match(targets, stored, path)
    if missing:
        raise CheckpointError(
            f"{key}={selector}: {path} lacks {len(missing)} of the teacher's variables "
            f"({', '.join(name.removeprefix('model/') for name in missing[:3])}{', ...' if len(missing) > 3 else ''});"
            f" the teacher is the dense counterpart of model {session.model.name!r}")
    for variable, value in pairs:
        name = "model/" + variable.path
        mask = stored.get(name.rsplit("/", 1)[0] + "/mask") if name.endswith("/kernel") else None
        variable.assign(value * mask if mask is not None else value)
    log.info("distilling from %s (the dense counterpart of %s, temperature %g, weight %g)", path,
             session.model.name, temperature, weight)
    return Teacher(model, temperature, weight, path)

