"""The distribution settings of a run, read and checked once, before TensorFlow starts: `system.strategy`,
`system.num_gpus`, `system.visible_gpus`, `system.cluster` (or `TF_CONFIG`) and `system.cluster_timeout`.

`read` returns them as a `Distribution`, which `mayo_lite.distribute.strategy` builds the strategy from; nothing
reads these keys again.
"""

from dataclasses import dataclass

from mayo_lite.config.keys import located_error
from mayo_lite.distribute import cluster as clusters

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# Why `parameter_server` is refused, in the error a user sees.
PARAMETER_SERVER = ("parameter_server is refused: training is one synchronous step whose FBS global thresholds and "
                    "masks need all-reduce, while ParameterServerStrategy runs steps a coordinator schedules "
                    "(ClusterCoordinator.schedule); use multi_worker")
# The origin of the keys `mayo_lite.distribute.strategy` sets before each action, which a config must not set.
DERIVED = "the distribution strategy"


@dataclass(frozen=True)
class Distribution:
    """How a run is spread over devices and workers, as checked."""

    strategy: str            # one of STRATEGIES
    num_gpus: int            # replicas asked of this worker
    visible_gpus: tuple      # GPU indices to use, or None for the first num_gpus
    cluster: object          # the multi-worker run's `Cluster`, or None (one worker, no server)
    where: dict              # key -> `file: key` of the keys above, for the errors found once TensorFlow runs


def read(cfg):
    """The checked `Distribution` of `cfg`; a bad value is a ConfigError naming the file and key."""
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
    timeout = cfg.number("system.cluster_timeout", 0, low_open=True)
    keys = ("system.strategy", "system.num_gpus", "system.visible_gpus")
    return Distribution(strategy, replicas, tuple(visible) if visible is not None else None,
                        clusters.read(cfg, strategy, timeout), {key: cfg.where(key) for key in keys})
