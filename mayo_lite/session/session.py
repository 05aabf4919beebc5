"""One run: the distribution strategy, the model, the optimizer and schedule, the epoch counter, checkpoints.

A session is built from a config as it stands when an action needs it; the command line discards it when the
config changes. Data pipelines are built lazily, so `info` on CIFAR-10 needs no CIFAR-10 files.
"""

import contextlib
import logging
import re
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mayo_lite import registry, weights
from mayo_lite.config.mayo_overriders import translate
from mayo_lite.data import make_dataset, num_examples
from mayo_lite.data.description import label_offset, network_shape, num_classes
from mayo_lite.distribute import cluster
from mayo_lite.distribute.strategy import make_strategy, prepare_devices
from mayo_lite.errors import CheckpointError, ConfigError
from mayo_lite.net import build_model
from mayo_lite.net.specs import with_class_count
from mayo_lite.session import distill
from mayo_lite.session.callbacks.divergence import DivergedError
from mayo_lite.session.epochs import EpochCounter, epoch_text
from mayo_lite.session.loop import Loops
from mayo_lite.session.restore import assign
from mayo_lite.settings import check_settings
from mayo_lite.weights import checkpoint

log = logging.getLogger("mayo_lite")

_UNSET = object()  # a teacher not built yet

@contextlib.contextmanager
def _held_back(logger):
    """The records `logger` (and its children) emit in the block, kept back instead of written: the caller hands
    them on when it wants them said (a checkpoint's error must be the first line, before any line about the data)."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def prepared_settings(cfg, action, settings=None):
    """The checked settings of `cfg` for `action` (`settings`, when the caller checked them already), this
    process's devices prepared for them: what the command line does before each action, and a session built
    without the command line does itself."""
    settings = settings if settings is not None else check_settings(cfg, action)
    prepare_devices(cfg, settings.distribution)
    return settings


class Session:
    """The live objects of one run, built from a config."""

    def __init__(self, cfg, settings=None, continue_from=None, splits=()):
        """`settings`: the config's checked `mayo_lite.settings.Settings`, devices prepared (the command line's);
        checked and prepared here when not given. `continue_from`: a checkpoint to load instead of the one
        `system.checkpoint.load` selects (the command line passes the last one the previous session loaded or
        saved, see `mayo_lite.cli.Runner`). `splits`: the data splits read before any checkpoint is loaded (their
        files' errors come first; the pipelines are kept)."""
        settings = settings if settings is not None else prepared_settings(cfg, "train")
        self.settings = settings
        self.cfg = self._with_network_classes(cfg)
        self.version = cfg.version
        if settings.seed is not None:
            keras.utils.set_random_seed(settings.seed)
        self.strategy = make_strategy(settings.distribution)
        if self.strategy.num_replicas_in_sync > 1:
            log.info("%d replicas under %s", self.strategy.num_replicas_in_sync, type(self.strategy).__name__)
        self.dataset = cfg.get("dataset")
        self.batch_size = settings.batch_size_per_gpu * self.strategy.num_replicas_in_sync
        self.store = checkpoint.CheckpointStore(settings.checkpoint_path)
        source = continue_from if continue_from is not None else self._selected_path()
        # Mayo's pruning overriders on layers are read as `prune:` settings (session/pruning.py reads them too).
        mayo = translate(self.cfg.get("model"), cfg.where)  # self.cfg: num_classes after the background rule
        self.model_spec = with_class_count(mayo.model, self.cfg.get("dataset.task.num_classes", None))
        # Convolutions carry pruning masks when the config prunes or the checkpoint was pruned; otherwise a plain
        # model pays nothing for them.
        self.masked = cfg.get("prune", None) is not None or mayo.prune is not None or (
            isinstance(source, Path) and checkpoint.has_masks(source))
        # The precision policy is process-wide in Keras: every session sets its own before building its model.
        keras.mixed_precision.set_global_policy(settings.precision)
        with self.strategy.scope():
            self.model = build_model(self.model_spec, self.input_shape(), origin=cfg.origin, masked=self.masked)
            self.epoch = EpochCounter()
            self.optimizer = self._optimizer()
        if mayo.summary:  # once the model is built: a bad quantizer setting is the only line the user sees
            log.info("%s", mayo.summary)
        self._pipelines = {}
        self._loops = None
        self.checkpoint_path = None  # the last checkpoint this session loaded or saved
        self.measured_densities = None  # per gated layer, from the last full evaluation
        self._teacher = _UNSET
        with _held_back(logging.getLogger("mayo_lite.data")) as said:
            for split in splits:
                self.pipeline(split)
        if continue_from is not None:
            log.info("continuing from %s, where the previous action left the weights", continue_from)
        if source is not None:
            self.load(source)
        elif settings.checkpoint_load == "latest":
            log.info("no checkpoint at %s: starting from initial weights", self.store.locate("latest"))
        for record in said:  # what the data room said of the splits read above, in the order of the work
            logging.getLogger(record.name).handle(record)

    @property
    def teacher(self):
        """The `train.distill` teacher (`mayo_lite.session.distill.Teacher`), built on first use; None without."""
        if self._teacher is _UNSET:
            self._teacher = distill.teacher(self.cfg, self)
        return self._teacher

    @property
    def loops(self):
        if self._loops is None:
            self._loops = Loops(self)
        return self._loops

    # -- construction -----------------------------------------------------------------------------------------

    def input_shape(self):
        """The network's input shape: `dataset.task.preprocess.shape` where a (Mayo) model sets it, else
        `dataset.task.shape` (`mayo_lite.data.description.network_shape`)."""
        return self.input_source()[0]

    def input_source(self):
        """(the network's input shape, the key it comes from)."""
        with self._located():
            return network_shape(self.dataset)

    def _with_network_classes(self, cfg):
        """The config the model is built from: as given, or with `dataset.task.num_classes` moved by Mayo's
        background-class rule (`use − has`), which Mayo also writes back into the config for `$()` to read."""
        dataset = cfg.get("dataset", None)
        if not isinstance(dataset, dict):
            return cfg
        self.cfg, self.dataset = cfg, dataset  # for `_located`, until the caller sets them
        with self._located():
            offset, outputs = label_offset(dataset), num_classes(dataset)
        if offset == 0:
            return cfg
        adjusted = cfg.copy()
        adjusted.set("dataset.task.num_classes", outputs, origin=cfg.origin("dataset.task.background_class"))
        log.info("the network has %d outputs: dataset.task.num_classes %d %+d (background_class use − has)",
                 outputs, outputs - offset, offset)
        return adjusted

    def _optimizer(self):
        """The optimizer of `train.optimizer`, with the learning rate a function of the epoch counter."""
        if self.cfg.get("train", None) is None:
            return None
        self.schedule = registry.learning_rate_schedule(
            self.cfg.get("train.learning_rate"), f"{self.cfg.where('train.learning_rate')}")
        optimizer = registry.build("optimizer", self.cfg.get("train.optimizer"),
                                   f"{self.cfg.where('train.optimizer')}")
        # Keras calls a callable learning rate at every update, so the rate follows the epoch counter exactly.
        optimizer.learning_rate = self.learning_rate
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(self.model.trainable_variables)
        return optimizer

    def learning_rate(self):
        return tf.cast(self.schedule(tf.cast(self.epoch.variable, tf.float32)), tf.float32)

    # -- data -------------------------------------------------------------------------------------------------

    def examples(self, split):
        with self._located():
            return num_examples(self.dataset, split)

    @contextlib.contextmanager
    def _located(self):
        """The data room reads a resolved `dataset` mapping and cannot know which file set a key; its config errors
        name the key (`dataset.num_examples_per_epoch.train`), and this names the file that set it."""
        try:
            yield
        except ConfigError as error:
            match = re.search(r"(?<![\w.])(dataset(?:\.[A-Za-z0-9_]+)+)", str(error))
            origin = self.cfg.origin(match.group(1)) if match else None
            if origin is None or str(error).startswith(origin):
                raise
            raise ConfigError(f"{origin}: {error}") from error

    def pipeline(self, split, epoch=0):
        """The batched dataset of one pass over `split`; training order depends on the seed and the epoch."""
        training = split == "train"
        key = (split, epoch if training else None)
        if key not in self._pipelines:
            if training:
                self._pipelines = {k: v for k, v in self._pipelines.items() if k[0] != "train"}
            base = self.settings.seed if self.settings.seed is not None else cluster.shared_seed()
            seed = None if base is None else base + (epoch if training else 0)
            with self._located():
                self._pipelines[key] = make_dataset(
                    self.dataset, split, self.batch_size, training, seed=seed,
                    search_path=self.settings.search_path, shuffle_buffer=self.settings.shuffle_buffer,
                    cache=self.settings.cache)
            if cluster.joined() is not None:
                # Every worker reads the whole split and keeps its share of each global batch, so that all take
                # the same number of steps (the strategy does not check, see mayo_lite.distribute.strategy): sharding
                # by file, TensorFlow's choice for a split in several files, gives workers unequal shares.
                options = tf.data.Options()
                options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
                self._pipelines[key] = self._pipelines[key].with_options(options)
        return self._pipelines[key]

    # -- checkpoints ------------------------------------------------------------------------------------------

    def variables(self):
        """Everything a checkpoint holds, by name: model variables and optimizer state."""
        # Keras numbers random-seed states per process (seed_generator_3/...); named after their layer instead,
        # they match between processes and between sessions of one command line.
        seeds = {id(layer.seed_generator.state): f"{layer.name}/seed_generator_state"
                 for layer in self.model.layers if isinstance(getattr(layer, "seed_generator", None),
                                                              keras.random.SeedGenerator)}
        named = {f"model/{seeds.get(id(v), v.path)}": v for v in self.model.variables}
        if self.optimizer is not None:
            # Without the optimizer's own name, which Keras makes unique per process (sgd, sgd_1, ...).
            named.update({f"optimizer/{v.path.split('/', 1)[-1]}": v for v in self.optimizer.variables})
        return named

    def save(self, name="latest"):
        values = {name: variable.numpy() for name, variable in self.variables().items()}
        broken = [key for key, value in values.items()
                  if key.startswith("model/") and value.dtype.kind == "f" and not np.all(np.isfinite(value))]
        if broken:
            # Whatever the loss said (ReLU and max pooling can hide a NaN input from it), a checkpoint with a
            # non-finite weight must never replace a good one.
            raise DivergedError(
                f"training diverged: {len(broken)} variable(s) hold NaN or infinite values at epoch "
                f"{epoch_text(self.epoch.value)} ({', '.join(k.removeprefix('model/') for k in broken[:3])}"
                f"{', ...' if len(broken) > 3 else ''}); checkpoint {name} was not written, the last good one is "
                "kept")
        meta = {"model": self.model.name, "dataset": self.dataset.get("name"),
                "optimizer": type(self.optimizer).__name__ if self.optimizer else None}
        path = self.store.save(name, values, self.epoch.value, meta)
        self.checkpoint_path = path
        # Beside a digest of what was saved: the workers of a run hold identical weights, and their logs show it.
        digest = f", weights {checkpoint.digest(values)}" if cluster.joined() else ""
        log.info("saved checkpoint %s (epoch %s%s)", path, epoch_text(self.epoch.value), digest)
        return path

    def saved_checkpoints(self):
        """This run's checkpoint files: numbered ones by epoch, then named ones by name."""
        return self.store.available()

    def keep_numbered(self, count):
        """Removes this run's numbered checkpoints (`epoch-N`) but the newest `count`."""
        self.store.prune_numbered(count)

    def _selected_path(self):
        """The checkpoint `system.checkpoint.load` selects, or None (none selected, or no `latest` yet); a
        `keras:` / `torchvision:` selector is returned as it is."""
        if self.settings.checkpoint_load is None:
            return None
        return self.checkpoint_for(self.settings.checkpoint_load, "system.checkpoint.load")

    def checkpoint_for(self, selector, key):
        """The checkpoint `selector` names as the value of setting `key` (`system.checkpoint.load`,
        `train.distill.teacher`): a checkpoint of this run, a path, the `latest` of another model's run on this
        dataset, or a `keras:` / `torchvision:` / `tf1:` selector as it is; None for a `latest` not yet written."""
        pretrained = weights.pretrained_selector(selector)  # a TF1 checkpoint's files are checked here
        if pretrained is not None:
            return pretrained
        path = self.store.locate(selector)
        if not path.is_file():
            if selector == "latest":
                return None
            other = self._other_run(selector)
            if other is None:
                available = ", ".join(p.stem for p in self.store.available()) or "none"
                raise CheckpointError(f"{key}={selector}: no checkpoint at {path} "
                                      f"(checkpoints of this run: {available}; nor is it a model name with a "
                                      f"run on {self.dataset.get('name')})")
            path = other
        return path

    def _other_run(self, selector):
        """`latest` of the run of model `selector` on this dataset (a dense model's run, for its gated variant),
        where `system.checkpoint.path` puts it; None if there is none."""
        text = str(selector)
        if "/" in text or text.endswith(checkpoint.SUFFIX) or text.isdigit():
            return None
        other = self.cfg.copy()
        other.set("model.name", text, origin="system.checkpoint.load")
        path = checkpoint.CheckpointStore(other.get("system.checkpoint.path")).locate("latest")
        return path if path.is_file() else None

    def load(self, path):
        """Loads a checkpoint file (or, for a `keras:` / `torchvision:` selector, pretrained weights)."""
        if isinstance(path, str) and path.startswith(weights.PRETRAINED_PREFIXES):
            stored, description = weights.read_pretrained(path, self.model)
            assign(self, stored, 0.0, {"model": description}, path, description)
            return
        stored, epoch, meta = checkpoint.read(path)
        assign(self, stored, epoch, meta, path, f"checkpoint {path}")
