"""Where this process stands among the workers of a multi-worker run: the cluster that `system.cluster` or the
`TF_CONFIG` environment variable describes, checked before TensorFlow starts its server; which worker is the chief;
the meeting of the workers at start-up; and the one line that says which worker stopped answering.

Without TensorFlow, so the settings check (`mayo_lite.distribute.checks`) reads it at once;
`mayo_lite.distribute.strategy` builds the strategy.
"""

import json
import os
import re
import socket
import time
from typing import NamedTuple

from mayo_lite import files
from mayo_lite.config.keys import located_error
from mayo_lite.errors import ConfigError, UserError

JOBS = ("chief", "worker")  # the tasks that train; MultiWorkerMirroredStrategy has no use for the others
MAX_WORKERS = 4096


class ClusterError(UserError):
    """A multi-worker run that cannot start or go on: a port taken, a worker that did not start or stopped."""


class Cluster(NamedTuple):
    """The workers of a run, by task type ("chief", "worker") in TensorFlow's order, and this process's task."""

    jobs: dict      # task type -> ["host:port", ...]
    task_type: str
    index: int
    timeout: float  # system.cluster_timeout, seconds
    source: str     # where the description came from, for messages

    @property
    def chief(self):
        """TensorFlow's rule (`multi_worker_util.is_chief`): the `chief` task, or worker 0 when there is none."""
        return self.task_type == "chief" or ("chief" not in self.jobs and self.index == 0)

    @property
    def workers(self):
        return sum(len(addresses) for addresses in self.jobs.values())

    @property
    def address(self):
        return self.jobs[self.task_type][self.index]

    def name(self, task_type=None, index=None):
        """`worker 1 (host:port)`; this process's task by default."""
        task_type = self.task_type if task_type is None else task_type
        index = self.index if index is None else index
        chief = ", the chief" if task_type == "worker" and index == 0 and "chief" not in self.jobs else ""
        return f"{task_type} {index} ({self.jobs[task_type][index]}{chief})"

    def others(self):
        return [(task_type, index) for task_type, addresses in self.jobs.items()
                for index in range(len(addresses)) if (task_type, index) != (self.task_type, self.index)]


def read(cfg, strategy, timeout):
    """The cluster of a `multi_worker` run, or None when it has none (one worker, no server); a bad description is
    a ConfigError naming where it came from. `system.cluster` wins over `TF_CONFIG`. `strategy`, `timeout`:
    the checked `system.strategy` and `system.cluster_timeout`."""
    spec = cfg.get("system.cluster")
    if strategy != "multi_worker":
        if spec is not None:
            raise located_error(cfg.origin("system.cluster"), "system.cluster",
                                f"only system.strategy=multi_worker reads it, and the strategy is {strategy}")
        return None
    if spec is not None:
        return _from_setting(cfg, spec, timeout)
    text = os.environ.get("TF_CONFIG", "")
    return _from_tf_config(text, timeout) if text.strip() else None


def _from_setting(cfg, spec, timeout):
    where = cfg.origin("system.cluster")
    if not isinstance(spec, dict) or set(spec) != {"workers", "index"}:
        raise located_error(where, "system.cluster", f"expected {{workers: [host:port, ...], index: i}}, got "
                                                     f"{spec!r}")
    workers = spec["workers"]
    if not isinstance(workers, list) or not workers or len(workers) > MAX_WORKERS:
        raise located_error(where, "system.cluster.workers", f"expected a list of host:port, got {workers!r}")
    for number, address in enumerate(workers):
        problem = _address_problem(address)
        if problem:
            raise located_error(where, f"system.cluster.workers.{number}", problem)
    _no_duplicates(workers, lambda number, problem: located_error(where, f"system.cluster.workers.{number}",
                                                                  problem))
    index = spec["index"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(workers):
        raise located_error(where, "system.cluster.index", f"expected this worker's position in workers, an integer "
                                                           f"in [0, {len(workers) - 1}], got {index!r}")
    return Cluster({"worker": list(workers)}, "worker", index, timeout, "system.cluster")


def _from_tf_config(text, timeout):
    def bad(problem):
        return ConfigError(f"TF_CONFIG: {problem}")
    try:
        spec = json.loads(text)
    except ValueError as error:
        raise bad(f"not JSON ({error}); expected {{\"cluster\": {{\"worker\": [\"host:port\", ...]}}, \"task\": "
                  "{\"type\": \"worker\", \"index\": 0}}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("cluster"), dict) or not isinstance(spec.get("task"),
                                                                                                 dict):
        raise bad("expected an object with a \"cluster\" and a \"task\" object")
    jobs = {}
    for task_type, addresses in spec["cluster"].items():
        if task_type not in JOBS:
            why = ("parameter servers are refused (see system.strategy=parameter_server)" if task_type == "ps" else
                   f"tasks of type {task_type!r} are not supported")
            raise bad(f"cluster.{task_type}: {why}; a multi_worker run has chief and worker tasks")
        if not isinstance(addresses, list) or not addresses or len(addresses) > MAX_WORKERS:
            raise bad(f"cluster.{task_type}: expected a list of host:port, got {addresses!r}")
        for number, address in enumerate(addresses):
            problem = _address_problem(address)
            if problem:
                raise bad(f"cluster.{task_type}[{number}]: {problem}")
        jobs[task_type] = list(addresses)
    if len(jobs.get("chief", [])) > 1:
        raise bad(f"cluster.chief: one chief, not {len(jobs['chief'])}")
    if not jobs:
        raise bad("cluster: no chief and no worker task")
    everyone = [address for task_type in JOBS for address in jobs.get(task_type, [])]
    _no_duplicates(everyone, lambda number, problem: bad(f"cluster: {problem}"))
    task_type, index = spec["task"].get("type"), spec["task"].get("index", 0)
    if task_type not in jobs:
        raise bad(f"task.type: expected one of the cluster's task types ({', '.join(jobs)}), got {task_type!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(jobs[task_type]):
        raise bad(f"task.index: expected an integer in [0, {len(jobs[task_type]) - 1}], got {index!r}")
    ordered = {name: jobs[name] for name in JOBS if name in jobs}
    return Cluster(ordered, task_type, index, timeout, "TF_CONFIG")


def split_address(address):
    """("host", port) of "host:port" ("[::1]:port" for an IPv6 address)."""
    host, _, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _address_problem(address):
    if not isinstance(address, str) or not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}",
                                                        address):
        return f"expected host:port, got {address!r}"
    if not 1 <= split_address(address)[1] <= 65535:
        return f"{address}: the port must be in [1, 65535]"
    return None


def _no_duplicates(addresses, error):
    """Raises `error(position, problem)` for the first address listed before (localhost is 127.0.0.1)."""
    seen = {}
    for number, address in enumerate(addresses):
        host, port = split_address(address)
        key = ("127.0.0.1" if host.lower() == "localhost" else host.lower(), port)
        if key in seen:
            same = "" if seen[key] == address else f" (as {seen[key]})"
            raise error(number, f"{address} is listed twice{same}; each worker needs its own port")
        seen[key] = address


# -- start-up -------------------------------------------------------------------------------------------------------

def meet(cluster):
    """Holds this worker's port and waits until every other worker listens on its own, for at most the cluster
    timeout. Written by hand because TensorFlow (2.21) waits without bound in the strategy's constructor for a
    worker that never starts, holding the interpreter lock so that no Python thread can time it out; and a port
    taken by another program is refused here in one line, before TensorFlow's server fails on it."""
    port = split_address(cluster.address)[1]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Allowed over a closed connection's TIME_WAIT (TensorFlow's server is too), refused over a listening socket.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", port))
        listener.listen(MAX_WORKERS)
    except OSError as error:
        listener.close()
        raise ClusterError(f"{cluster.source}: {cluster.name()} cannot listen on port {port}: "
                           f"{error.strerror or error} (another program holds it, or another worker was given "
                           "the same index)") from None
    waiting = dict.fromkeys(cluster.others())
    deadline = time.monotonic() + cluster.timeout
    try:
        while waiting:
            for task in list(waiting):
                try:
                    socket.create_connection(split_address(cluster.jobs[task[0]][task[1]]), timeout=1).close()
                    del waiting[task]
                except OSError:
                    pass
            if waiting and time.monotonic() > deadline:
                names = ", ".join(cluster.name(*task) for task in waiting)
                raise ClusterError(f"{names} did not start within system.cluster_timeout={cluster.timeout:g} s "
                                   f"(nothing listens there); start every worker with the same {cluster.source} "
                                   "and its own index")
            if waiting:
                time.sleep(0.2)
    finally:
        listener.close()


# -- this process's place ---------------------------------------------------------------------------------------------

_joined = None  # the cluster this process's TensorFlow server belongs to: one per process
_shared_seed = None


def join(cluster, shared_seed):
    """Records that this process is a worker of `cluster`, whose workers drew `shared_seed` together; a worker other
    than the chief writes to scratch from now on (its directory is returned)."""
    global _joined, _shared_seed
    _joined, _shared_seed = cluster, shared_seed
    if not cluster.chief:
        return files.write_to_scratch(f"{cluster.task_type}-{cluster.index}")
    return None


def joined():
    return _joined


def shared_seed():
    """A seed every worker of this process's cluster holds, or None outside a cluster: the workers shuffle the data
    alike without `system.seed`, as each keeps its share of the same global batches."""
    return _shared_seed


# What TensorFlow raises in a collective when a worker is gone: UnavailableError (missed heartbeats, a closed
# connection) or DeadlineExceededError (the collective timeout), by class name, as this module does not import
# TensorFlow; other errors of an aborted collective count when their text says a worker was lost.
LOST = ("UnavailableError", "DeadlineExceededError")
PASSED_ON = ("AbortedError", "CancelledError", "InternalError", "UnknownError")
SIGNS = ("stopped sending heartbeats", "Connection reset", "Socket closed", "failed to connect")
TASK = re.compile(r"/job:(chief|worker)/(?:replica:\d+/)?task:(\d+)")


def lost_worker(error):
    """The ClusterError to raise for a TensorFlow error that says a worker stopped answering, or None."""
    cluster = _joined
    kind = type(error).__name__
    text = str(getattr(error, "message", error))
    if cluster is None or not (kind in LOST or (kind in PASSED_ON and any(sign in text for sign in SIGNS))):
        return None
    named = []
    for task_type, index in TASK.findall(text):
        task = (task_type, int(index))
        if task != (cluster.task_type, cluster.index) and task not in named and task[1] < len(
                cluster.jobs.get(task_type, [])):
            named.append(task)
    others = list(cluster.others())
    # A collective's deadline does not say whom it waited for; with one other worker there is only one it can be.
    who = cluster.name(*others[0]) if len(others) == 1 else "a worker"
    if named:
        what = f"{', '.join(cluster.name(*task) for task in named)} stopped responding"
    elif kind == "DeadlineExceededError":
        what = f"{who} did not answer within system.cluster_timeout={cluster.timeout:g} s"
    else:
        what = f"{who} stopped responding"
    return ClusterError(f"{what}; {cluster.name()} stops too. Restart every worker with the same command: they "
                        "resume from the chief's checkpoint `latest`")
