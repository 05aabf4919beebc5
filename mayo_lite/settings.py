"""Every `system` setting and name an action relies on, checked before the action does any work.

The command line calls `check_settings` before each action: a bad value costs nothing (no model built, no
checkpoint read, no epoch trained) and prints one line naming the file and key. Without TensorFlow, so it answers
at once. Settings of one action only (the `prune:` section, the trainer) are checked by that action's own check in
`check` functions of `mayo_lite.session.actions`, also before any work.
"""

import tempfile
from pathlib import Path

from mayo_lite.errors import ConfigError
from mayo_lite.config.keys import located_error
from mayo_lite.session import cluster

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# Why `parameter_server` is refused, in the error a user sees.
PARAMETER_SERVER = ("parameter_server is refused: training is one synchronous step whose FBS global thresholds and "
                    "masks need all-reduce, while ParameterServerStrategy runs steps a coordinator schedules "
                    "(ClusterCoordinator.schedule); use multi_worker")
# The origin of the keys `mayo_lite.session.strategy` sets before each action, which a config must not set.
DERIVED = "the distribution strategy"
LOG_LEVELS = ("debug", "info", "warning", "error")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
CACHE = ("auto", True, False)
SEED_RANGE = (0, 2 ** 32 - 1)  # what NumPy and TensorFlow seeds accept


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


def _distribution(cfg):
    """The strategy and its devices; a multi-worker run's cluster (system.cluster or TF_CONFIG) too."""
    replicas = cfg.integer("system.num_gpus", 1)
    if cfg.get("system.strategy") == "parameter_server":
        raise located_error(cfg.origin("system.strategy"), "system.strategy", PARAMETER_SERVER)
    strategy = cfg.choice("system.strategy", STRATEGIES)
    visible = cfg.get("system.visible_gpus")
    if visible is not None:
        where = cfg.origin("system.visible_gpus")
        if (not isinstance(visible, list) or not visible or len(set(visible)) != len(visible) or not all(
                isinstance(index, int) and not isinstance(index, bool) and index >= 0 for index in visible)):
            raise located_error(where, "system.visible_gpus", f"expected a list of distinct GPU indices (integers "
                                                              f"≥ 0) or null, got {visible!r}")
        if strategy == "tpu":
            raise located_error(where, "system.visible_gpus", "a tpu run has no GPUs to choose; set it to null")
        if replicas not in (1, len(visible)):
            raise located_error(cfg.origin("system.num_gpus"), "system.num_gpus",
                                f"{replicas} replicas, but system.visible_gpus lists {len(visible)} GPUs; leave "
                                "num_gpus at 1 (visible_gpus sets the replicas)")
    for key in ("system.replicas", "system.global_batch_size"):
        origin = cfg.origin(key)
        if origin not in ("defaults", DERIVED):
            raise located_error(origin, key, "the strategy sets it (from num_gpus, visible_gpus and the workers); "
                                             "read it, do not set it")
    cfg.number("system.cluster_timeout", 0, low_open=True)
    cluster.read(cfg)


def check_settings(cfg, action):
    """Raises a ConfigError for the first bad setting that `action` would use."""
    if "model" not in cfg and action != "export":
        if "visualize" in cfg:  # Mayo's models/plot/*.yaml: settings of its plotting command
            raise located_error(cfg.origin("visualize"), "visualize", "Mayo's plotting settings, not a model; "
                                "give a model file (mayo-lite draws its figures with the plot action)")
        raise ConfigError(f"no model: no file given defines `model` (action {action}); give a model file first, "
                          "e.g. models/lenet5.yaml")
    _distribution(cfg)
    cfg.integer("system.batch_size_per_gpu", 1)
    cfg.number("system.max_epochs", 0, low_open=True)
    cfg.integer("system.seed", *SEED_RANGE, optional=True)
    cfg.choice("system.precision", PRECISIONS)
    cfg.choice("system.log.level", LOG_LEVELS)
    cfg.integer("system.checkpoint.save.interval", 1, optional=True)
    cfg.integer("system.checkpoint.save.keep", 1, optional=True)
    cfg.integer("system.pipeline.shuffle_buffer", 1)
    cfg.choice("system.pipeline.cache", CACHE)
    cfg.boolean("system.info.plumbing")
    cfg.integer("system.info.density_batches", 0)
    _search_path(cfg)
    for key in ("system.log.tensorboard", "system.log.history"):
        value = cfg.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise located_error(cfg.origin(key), key, f"expected a path or null, got {value!r}")
    if action == "export":
        return
    cfg.name("model.name")
    if "dataset" in cfg:
        _dataset(cfg)
    writes_checkpoints = action in ("train", "save", "prune")
    _directory(cfg, "system.checkpoint.path", writes_checkpoints)
    if action in ("eval", "eval-all"):
        cfg.choice("system.eval.split", ("validate", "test"))
    if action == "bench":
        cfg.integer("system.bench.images", 1)
        cfg.integer("system.bench.repeats", 1)
        cfg.boolean("system.bench.tflite")
        cfg.boolean("system.bench.profile")
        cfg.choice("system.bench.engine", ("auto", "xla", "native"))
    if action == "plot":
        _directory(cfg, "system.plot.path", True)
        cfg.integer("system.plot.batches", 1)
        runs = cfg.get("system.plot.runs")
        if not isinstance(runs, list) or not all(isinstance(name, str) and name for name in runs):
            raise located_error(cfg.origin("system.plot.runs"), "system.plot.runs",
                                f"expected a list of eval_all.csv paths, got {runs!r}")
    if action == "export-model":
        _directory(cfg, "system.export.path", True)
