"""Every `system` setting and name an action relies on, checked before the action does any work and read once into
a typed `Settings` that the command line hands to the session and the actions.

The command line calls `check_settings` before each action: a bad value costs nothing (no model built, no
checkpoint read, no epoch trained) and prints one line naming the file and key. Without TensorFlow, so it answers
at once. Settings of one action only (the `prune:` section, the trainer) are checked by that action's own check in
`check` functions of `mayo_lite.session.actions`, also before any work. Nothing else reads a `system.*` key: the
session, its callbacks and the actions read the `Settings` (`system.replicas`, which the strategy derives, is the
one value set, not read, once the devices are prepared).
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mayo_lite.errors import ConfigError
from mayo_lite.config.keys import located_error
from mayo_lite.distribute import checks as distribution_checks
from mayo_lite.distribute.checks import Distribution

LOG_LEVELS = ("debug", "info", "warning", "error")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
CACHE = ("auto", True, False)
SEED_RANGE = (0, 2 ** 32 - 1)  # what NumPy and TensorFlow seeds accept
EVAL_SPLITS = ("validate", "test")
ENGINES = ("auto", "xla", "native")


@dataclass(frozen=True)
class Bench:
    """`system.bench.*`: the `bench` action's."""
    images: int
    repeats: int
    tflite: bool
    profile: bool
    engine: str


@dataclass(frozen=True)
class Plot:
    """`system.plot.*`: the `plot` action's."""
    path: Path
    batches: int
    runs: tuple


@dataclass(frozen=True)
class Export:
    """`system.export.*`: the `export-model` action's (format names are checked against the formats by its check)."""
    path: Path
    formats: tuple
    images: int


@dataclass(frozen=True)
class Settings:
    """The `system` settings of one action, checked. The sections of other actions are None."""
    distribution: Distribution
    log_level: str
    batch_size_per_gpu: int
    max_epochs: float
    seed: Optional[int]
    precision: str
    save_interval: Optional[int]       # system.checkpoint.save.interval, epochs
    save_keep: Optional[int]           # system.checkpoint.save.keep
    checkpoint_load: object            # system.checkpoint.load: a selector (latest, name, epoch, path) or None
    shuffle_buffer: int
    cache: object                      # "auto", True or False
    search_path: tuple                 # system.search_path.dataset
    plumbing: bool                     # system.info.plumbing: write each action's figures as YAML
    density_batches: int               # system.info.density_batches
    tensorboard: Optional[str]         # system.log.tensorboard
    history: Optional[str]             # system.log.history
    checkpoint_path: Optional[Path] = None  # None for `export`
    eval_split: Optional[str] = None   # `eval` and `eval-all`
    bench: Optional[Bench] = None
    plot: Optional[Plot] = None
    export: Optional[Export] = None


def _directory(cfg, key, writing):
    """A path key that names a directory: not an existing file, nor under one; writable when `writing`."""
    text = cfg.get(key)
    if not isinstance(text, str) or not text or "\0" in text:
        raise located_error(cfg.origin(key), key, f"expected a directory path, got {text!r}")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise located_error(cfg.origin(key), key, f"{text} exists and is not a directory")
    existing = next((parent for parent in (path, *path.parents) if parent.exists()), None)
    if existing is not None and not existing.is_dir():
        raise located_error(cfg.origin(key), key, f"{existing} is a file, so {text} cannot be a directory")
    if writing and existing is not None:
        try:  # a probe, not os.access: root may be refused by a read-only or special file system
            tempfile.TemporaryFile(dir=existing).close()
        except OSError as error:
            raise located_error(cfg.origin(key), key, f"cannot write in {existing}: "
                                                      f"{error.strerror or error}") from None
    return path


def _search_path(cfg):
    value = cfg.get("system.search_path.dataset")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(entry, str) and entry for entry in value):
        raise located_error(cfg.origin("system.search_path.dataset"), "system.search_path.dataset",
                            f"expected a list of directories, got {value!r}")
    return tuple(value)


def _dataset(cfg):
    """The dataset description's values every action reads: what the data room would refuse only once the model
    is built and a checkpoint loaded, refused here first, naming the file that set the key."""
    cfg.name("dataset.name")
    task = cfg.get("dataset.task.type", None)
    if task is not None and str(task).rsplit(".", 1)[-1] != "Classify":
        # Mayo's tasks are mayo.task.image.Classify and the detection task YOLOv2 (VOC): only the first is here.
        raise located_error(cfg.origin("dataset.task.type"), "dataset.task.type",
                            f"{task} is Mayo's object detection task, out of scope: mayo-lite trains, prunes and "
                            "gates image classifiers (mayo.task.image.Classify)" if "YOLO" in str(task) else
                            f"unknown task {task!r}; mayo-lite runs image classification (mayo.task.image.Classify)")
    fitted = cfg.get("dataset.task.preprocess.shape", None)
    if fitted is not None and not isinstance(fitted, dict):
        raise located_error(cfg.origin("dataset.task.preprocess.shape"), "dataset.task.preprocess.shape",
                            f"expected a mapping of height, width, channels, got {fitted!r}")
    for key in ("height", "width", "channels"):
        # Mayo's datasets may give only `channels` when the model sets the network's input shape.
        if fitted is not None and key in fitted:
            cfg.integer(f"dataset.task.preprocess.shape.{key}", 1)
        else:
            cfg.integer(f"dataset.task.shape.{key}", 1)
    cfg.integer("dataset.task.num_classes", 1)
    for split in ("train", "validate"):
        cfg.integer(f"dataset.num_examples_per_epoch.{split}", 1)
    cfg.integer("dataset.validate_from_train", 1, cfg.get("dataset.num_examples_per_epoch.train") - 1,
                optional=True, default=None)
    for key in ("use", "has"):
        if f"dataset.task.background_class.{key}" in cfg:
            cfg.boolean(f"dataset.task.background_class.{key}")
    if "dataset.source.seed" in cfg:
        cfg.integer("dataset.source.seed", *SEED_RANGE)


def _log_path(cfg, key):
    value = cfg.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise located_error(cfg.origin(key), key, f"expected a path or null, got {value!r}")
    return value


def _bench(cfg):
    return Bench(cfg.integer("system.bench.images", 1), cfg.integer("system.bench.repeats", 1),
                 cfg.boolean("system.bench.tflite"), cfg.boolean("system.bench.profile"),
                 cfg.choice("system.bench.engine", ENGINES))


def _plot(cfg):
    path = _directory(cfg, "system.plot.path", True)
    batches = cfg.integer("system.plot.batches", 1)
    runs = cfg.get("system.plot.runs")
    if not isinstance(runs, list) or not all(isinstance(name, str) and name for name in runs):
        raise located_error(cfg.origin("system.plot.runs"), "system.plot.runs",
                            f"expected a list of eval_all.csv paths, got {runs!r}")
    return Plot(path, batches, tuple(runs))


def _export(cfg):
    path = _directory(cfg, "system.export.path", True)
    formats = cfg.get("system.export.formats")
    if not isinstance(formats, list) or not formats or not all(isinstance(name, str) for name in formats):
        raise located_error(cfg.origin("system.export.formats"), "system.export.formats",
                            f"expected a list of format names, got {formats!r}")
    return Export(path, tuple(formats), cfg.integer("system.export.images", 1))


SECTIONS = {"bench": ("bench", _bench), "plot": ("plot", _plot), "export-model": ("export", _export)}


def check_settings(cfg, action):
    """The `Settings` that `action` uses, checked; a ConfigError for the first bad one."""
    if "model" not in cfg and action != "export":
        if "visualize" in cfg:  # Mayo's models/plot/*.yaml: settings of its plotting command
            raise located_error(cfg.origin("visualize"), "visualize", "Mayo's plotting settings, not a model; "
                                "give a model file (mayo-lite draws its figures with the plot action)")
        raise ConfigError(f"no model: no file given defines `model` (action {action}); give a model file first, "
                          "e.g. models/lenet5.yaml")
    values = dict(
        distribution=distribution_checks.read(cfg),
        batch_size_per_gpu=cfg.integer("system.batch_size_per_gpu", 1),
        max_epochs=float(cfg.number("system.max_epochs", 0, low_open=True)),
        seed=cfg.integer("system.seed", *SEED_RANGE, optional=True),
        precision=cfg.choice("system.precision", PRECISIONS),
        log_level=cfg.choice("system.log.level", LOG_LEVELS),
        save_interval=cfg.integer("system.checkpoint.save.interval", 1, optional=True),
        save_keep=cfg.integer("system.checkpoint.save.keep", 1, optional=True),
        checkpoint_load=cfg.get("system.checkpoint.load", None),
        shuffle_buffer=cfg.integer("system.pipeline.shuffle_buffer", 1),
        cache=cfg.choice("system.pipeline.cache", CACHE),
        plumbing=cfg.boolean("system.info.plumbing"),
        density_batches=cfg.integer("system.info.density_batches", 0),
        search_path=_search_path(cfg),
        tensorboard=_log_path(cfg, "system.log.tensorboard"),
        history=_log_path(cfg, "system.log.history"))
    if action == "export":
        return Settings(**values)
    cfg.name("model.name")
    if "dataset" in cfg:
        _dataset(cfg)
    writes_checkpoints = action in ("train", "save", "prune")
    values["checkpoint_path"] = _directory(cfg, "system.checkpoint.path", writes_checkpoints)
    if action in ("eval", "eval-all"):
        values["eval_split"] = cfg.choice("system.eval.split", EVAL_SPLITS)
    if action in SECTIONS:
        field, read = SECTIONS[action]
        values[field] = read(cfg)
    return Settings(**values)
