"""The distribution strategy of a run, from `system.strategy`, `system.num_gpus`, `system.visible_gpus` and, for a
run over several workers, `system.cluster` or `TF_CONFIG`, as `mayo_lite.distribute.checks` read and checked them
(a `Distribution`).

Every strategy drives the same training step (`mayo_lite.session.loop`). What TensorFlow allows only before its
first operation — hiding GPUs, splitting the CPU, starting a cluster server, connecting to a TPU — is done by
`prepare_devices`, which the command line calls before each action's checks.
"""

import logging
import random
import signal

import tensorflow as tf
# Private, but the only way to set the heartbeat timeout of the coordination service that
# MultiWorkerMirroredStrategy starts (it configures one itself unless one is configured already).
from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.python.eager import context

from mayo_lite.distribute import cluster as clusters
from mayo_lite.distribute.checks import DERIVED
from mayo_lite.errors import ConfigError

log = logging.getLogger("mayo_lite")

# Listed once, at import: the CLI imports this module with TensorFlow's native start-up notices silenced.
GPUS = tf.config.list_physical_devices("GPU")

# One per process: TensorFlow starts one cluster server, and connects to one TPU system.
_ONCE = ("multi_worker", "tpu")
_prepared = []  # [(key, strategy)]


def prepare_devices(cfg, distribution):
    """Prepares this process's devices for the run `distribution` (the config's, checked) describes and sets
    `system.replicas` in `cfg`, the replicas in sync across all workers, for configs to read (a learning rate
    scaled with the global batch)."""
    name = distribution.strategy
    local = None if name == "tpu" else _local_replicas(distribution)
    replicas = _once(distribution).num_replicas_in_sync if name in _ONCE else local
    if cfg.get("system.replicas") != replicas:
        cfg.set("system.replicas", replicas, origin=DERIVED)


def make_strategy(distribution):
    """The strategy of a session, devices prepared (`prepare_devices`): built afresh, or for a cluster or a TPU the
    one of this process; `default` over more than one local replica is `mirrored`."""
    name = distribution.strategy
    if name in _ONCE:
        return _once(distribution)
    local = len(distribution.visible_gpus) if distribution.visible_gpus is not None else distribution.num_gpus
    if name == "default" and local > 1:
        name = "mirrored"
    return STRATEGIES[name](distribution)


def _local_replicas(distribution):
    """The replicas of this worker: the GPUs it uses (the others hidden from TensorFlow, as Mayo hid them with
    CUDA_VISIBLE_DEVICES), or without GPUs the logical CPU devices it splits the CPU into."""
    count, visible, where = distribution.num_gpus, distribution.visible_gpus, distribution.where
    if visible is not None:
        missing = [str(index) for index in visible if index >= len(GPUS)]
        if missing:
            found = f"its GPUs are 0 to {len(GPUS) - 1}" if GPUS else "it has none"
            raise ConfigError(f"{where['system.visible_gpus']}: this machine has no GPU {', '.join(missing)} "
                              f"({found})")
        return _use_gpus([GPUS[index] for index in visible], where["system.visible_gpus"])
    if GPUS:
        if count > len(GPUS):
            raise ConfigError(f"{where['system.num_gpus']}: {count} replicas, but this machine has "
                              f"{len(GPUS)} GPU{'s' if len(GPUS) > 1 else ''}")
        return _use_gpus(GPUS[:count], where["system.num_gpus"])
    if count > 1 and distribution.strategy == "multi_worker":
        raise ConfigError(f"{where['system.num_gpus']}: without GPUs a multi_worker run trains one replica per "
                          f"worker, on its CPU, not {count}; add workers instead")
    if count > 1:
        _cpu_replicas(count)
    return count


def _use_gpus(chosen, where):
    if tf.config.get_visible_devices("GPU") != chosen:
        try:
            tf.config.set_visible_devices(chosen, "GPU")
        except RuntimeError:
            raise ConfigError(f"{where}: the GPUs in use cannot change within one command line (TensorFlow is "
                              "already initialised); run a separate command") from None
    return len(chosen)


def _cpu_replicas(count):
    """Splits the CPU into `count` logical devices, so multi-replica training can be tried without GPUs."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) != count:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError:
            raise ConfigError(f"system.num_gpus={count}: no GPUs, and the CPU can no longer be split into "
                              f"{count} replicas in this process (TensorFlow is already initialised)") from None
    return [device.name for device in tf.config.list_logical_devices("CPU")[:count]]


def _once(distribution):
    name = distribution.strategy
    key = (name, distribution.cluster)  # None but for multi_worker (cluster.read)
    if _prepared:
        if _prepared[0][0] == key:
            return _prepared[0][1]
        raise ConfigError(f"{distribution.where['system.strategy']}: this process already trains under "
                          f"{_prepared[0][0][0]}, with another cluster or TPU; TensorFlow allows one per process, so "
                          "run a separate command")
    strategy = STRATEGIES[name](distribution)
    _prepared.append((key, strategy))
    return strategy


def _default(distribution):
    return tf.distribute.get_strategy()


# One MirroredStrategy per set of devices, for the whole process: a second one over the same devices numbers its
# collective operations afresh, and its first all-reduce then collides with the first strategy's (measured with TF
# 2.21: "Shape mismatch in the collective instance 100", in the first evaluation after a config change rebuilt the
# session). Variables are created under the scope of each session's model; the strategy holds no model state.
_mirrored_strategies = {}


def _mirrored(distribution):
    if GPUS:
        devices = tuple(device.name for device in tf.config.list_logical_devices("GPU"))
    else:
        devices = tuple(_cpu_replicas(distribution.num_gpus))
    if devices not in _mirrored_strategies:
        _mirrored_strategies[devices] = tf.distribute.MirroredStrategy(list(devices))
    return _mirrored_strategies[devices]


def _multi_worker(distribution):
    cluster = distribution.cluster
    gpus = {"GPU": len(tf.config.get_visible_devices("GPU"))} if GPUS else {}
    if cluster is None:  # one worker, no server
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=tf.distribute.cluster_resolver.SimpleClusterResolver(
                tf.train.ClusterSpec({}), num_accelerators=gpus))
    clusters.meet(cluster)
    milliseconds = int(cluster.timeout * 1000)
    # A worker that stops sending heartbeats (killed, crashed, its machine lost) is reported to the others after
    # the timeout; a collective that waits longer than it for a worker fails (DeadlineExceeded).
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{next(iter(cluster.jobs))}/replica:0/task:0",
        heartbeat_timeout_in_ms=milliseconds, shutdown_barrier_timeout_in_ms=milliseconds,
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=task_type, num_tasks=len(addresses))
                          for task_type, addresses in cluster.jobs.items()])
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster.jobs), task_type=cluster.task_type, task_id=cluster.index, rpc_layer="grpc",
        num_accelerators=gpus)
    # TensorFlow's preemption notifier takes SIGTERM over; the loop's own handling (save, then stop) is restored.
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver,
            communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=cluster.timeout))
    except RuntimeError as error:
        raise ConfigError(f"{distribution.where['system.strategy']}: multi_worker must be chosen from the first "
                          f"action of the command line ({str(error).splitlines()[0]})") from None
    finally:
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
    # Its input iterators would otherwise all-reduce, at every batch, whether each worker has data left: collectives
    # the training loop's reading thread launches while the step launches its own, numbered in whichever order the
    # threads reach them, which differs between workers (measured: "Collective instance 132 expected type 0 and
    # data_type 9 but got ... data_type 1", or a hang). Not needed: every worker takes its share of every global
    # batch (the session shards its pipelines by data), so all have data for the same steps.
    strategy.extended.experimental_enable_get_next_as_optional = False
    scratch = clusters.join(cluster, _draw_together(cluster))
    log.info("%s of %d workers, from %s: %s", cluster.name(), cluster.workers, cluster.source,
             "it writes the run's files" if scratch is None else
             f"the chief writes the run's files, this worker writes to {scratch} (removed at exit)")
    return strategy


def _draw_together(cluster):
    """A random seed the chief draws and the other workers read, through the coordination service's key-value store."""
    key = "mayo_lite/shared_seed"
    if cluster.chief:
        context.context().set_config_key_value(key, str(random.SystemRandom().randrange(2 ** 31)))
    return int(context.context().get_config_key_value(key, int(cluster.timeout * 1000)))


def _tpu(distribution):
    resolver_class = getattr(tf.distribute.cluster_resolver, "TPUClusterResolver", None)
    if resolver_class is None:
        raise ConfigError(f"{distribution.where['system.strategy']}: this TensorFlow build has no TPUClusterResolver")
    try:
        resolver = resolver_class()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise ConfigError(f"{distribution.where['system.strategy']}: no TPU found ({reason}); run on a TPU VM or set "
                          "TPU_NAME") from None
    return tf.distribute.TPUStrategy(resolver)


STRATEGIES = {"default": _default, "mirrored": _mirrored, "multi_worker": _multi_worker, "tpu": _tpu}
