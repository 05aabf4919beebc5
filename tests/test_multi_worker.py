"""One run over several workers (`system.strategy=multi_worker`): two `my` processes on 127.0.0.1 train a gated model
to identical weights, only the chief writes files, a worker that dies stops the other within
`system.cluster_timeout`, the restarted pair resumes from the chief's checkpoint, and a bad cluster is one line."""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.scaling import free_ports  # the benchmark starts workers on 127.0.0.1 the same way
from mayo_lite import files
from mayo_lite.cli import main
from mayo_lite.distribute import cluster as clusters
from mayo_lite.weights.checkpoint import digest, read
from tests.synthetic import synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent
GATED = """
model:
  name: small_gate
  layers:
    conv0: {type: gated_convolution, kernel_size: 3, num_outputs: 8, normalizer_fn: batch_norm,
            gate_params: {density: 0.5}, normalizer_params: {scale: true}}
    pool: {type: reduce_mean, axis: [1, 2]}
    logits: {type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}
  graph: {from: input, with: [conv0, pool, logits], to: output}
""" + synthetic_dataset(channels=3, train=64, validate=32) + """
train:
  learning_rate: 0.05
  optimizer: {type: sgd, momentum: 0.9}
system: {batch_size_per_gpu: 8, max_epochs: 2, strategy: multi_worker}
"""  # no seed: the workers draw the data order together
RUN = Path("checkpoints/small_gate/synthetic")
SAVED = re.compile(r"^saved checkpoint (\S+) \(epoch ([\d.]+), weights ([0-9a-f]+)\)$", re.MULTILINE)
WAIT = 120  # seconds a two-worker run may take on two busy cores before the test gives up on it


def cluster_setting(ports, index):
    return f"system.cluster={{workers: [{', '.join(f'127.0.0.1:{port}' for port in ports)}], index: {index}}}"


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


class Worker:
    """One `my` process, run from `directory` (the workers share it, as they would a file system), its scratch
    directories under `directory/scratch`, its output in files to be read while it runs."""

    def __init__(self, directory, name, arguments, environment=None):
        self.log = directory / f"{name}.err"
        self.out = directory / f"{name}.out"
        env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
        env.update(PYTHONPATH=str(ROOT), TMPDIR=str(directory / "scratch"), **(environment or {}))
        with open(self.out, "w") as out, open(self.log, "w") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "mayo_lite", "gate.yaml", *arguments],
                                            cwd=directory, env=env, stdout=out, stderr=err)

    def wait(self, timeout=WAIT):
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def stderr(self):
        return self.log.read_text()

    def saved(self):
        """(path, epoch, weights digest) of each checkpoint it saved."""
        return SAVED.findall(self.stderr())


@pytest.fixture
def launch(tmp_path):
    """`launch(arguments, through)` starts two workers on free ports of 127.0.0.1 in `tmp_path`, described by
    `system.cluster` or by TF_CONFIG, and returns them (the chief first); any still running at the end are killed."""
    (tmp_path / "gate.yaml").write_text(GATED)
    (tmp_path / "scratch").mkdir()
    started = []

    def pair(arguments, through="system.cluster"):
        ports = free_ports(2)
        workers = [Worker(tmp_path, f"worker{index}", [cluster_setting(ports, index), *arguments])
                   if through == "system.cluster" else
                   Worker(tmp_path, f"worker{index}", arguments, {"TF_CONFIG": tf_config(ports, index)})
                   for index in range(2)]
        started.extend(workers)
        return workers
    yield pair
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


def written(directory):
    """Every file under `directory` but the config and the workers' logs, relative."""
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*")
                  if path.is_file() and path.suffix not in (".err", ".out") and path.name != "gate.yaml")


def test_two_workers_train_identical_weights_and_only_the_chief_writes(launch, tmp_path, capsys, monkeypatch):
    chief, other = launch(["system.info.plumbing=true", "train", "eval"])
    assert chief.wait() == 0, chief.stderr()
    assert other.wait() == 0, other.stderr()
    assert "the chief" in chief.stderr() and "this worker writes to" in other.stderr()
    # The same weights on both workers after every epoch, and in the chief's checkpoint.
    mine, theirs = chief.saved(), other.saved()
    assert [(epoch, weights) for _, epoch, weights in mine] == [(epoch, weights) for _, epoch, weights in theirs]
    assert [epoch for _, epoch, _ in mine] == ["1", "1", "2", "2"]
    stored, epoch, _ = read(tmp_path / RUN / "latest.npz")
    assert epoch == 2 and digest(stored) == mine[-1][2]
    # One set of files, the chief's: the other worker wrote to a scratch tmp_path, removed when it ended.
    assert [path for path, _, _ in mine] == [str(RUN / name) for name in (
        "epoch-1.npz", "latest.npz", "epoch-2.npz", "latest.npz")]
    assert all(path.startswith(str(tmp_path / "scratch")) for path, _, _ in theirs)
    found = written(tmp_path)
    events = [path for path in found if "tfevents" in path]
    assert len(events) == 1, found
    assert sorted(set(found) - set(events)) == ["checkpoints/small_gate/synthetic/epoch-1.npz",
                                                "checkpoints/small_gate/synthetic/epoch-2.npz",
                                                "checkpoints/small_gate/synthetic/history.csv",
                                                "checkpoints/small_gate/synthetic/latest.npz", "eval.yaml"]
    assert len((tmp_path / RUN / "history.csv").read_text().splitlines()) == 3  # a header and two epochs
    assert list((tmp_path / "scratch").iterdir()) == []
    assert chief.out.read_text().splitlines()[-1] == other.out.read_text().splitlines()[-1]
    # A checkpoint of two replicas loads into one.
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["gate.yaml", "system.strategy=default", "eval"]) == 0
    assert f"loaded checkpoint {RUN / 'latest.npz'} (epoch 2)" in capsys.readouterr().err


def test_a_dead_worker_stops_the_other_in_time_and_a_restart_resumes(launch, tmp_path):
    """Through TF_CONFIG: worker 1 is killed during epoch 3; the chief names it and stops within the timeout."""
    timeout = 5
    chief, other = launch([f"system.cluster_timeout={timeout}", "system.max_epochs=1000", "train"],
                          through="TF_CONFIG")
    deadline = time.monotonic() + WAIT
    while "epoch 3/" not in chief.stderr():
        assert chief.process.poll() is None and other.process.poll() is None, chief.stderr() + other.stderr()
        assert time.monotonic() < deadline, chief.stderr()
        time.sleep(0.1)
    other.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    status = chief.wait(timeout + 30)
    elapsed = time.monotonic() - killed
    last = chief.stderr().strip().splitlines()[-1]
    assert status != 0
    assert re.fullmatch(r"my: error: worker 1 \(127\.0\.0\.1:\d+\) (stopped responding|did not answer within "
                        rf"system\.cluster_timeout={timeout} s); worker 0 .* stops too\. "
                        r"Restart every worker with the same command: they resume from the chief's checkpoint "
                        r"`latest`", last), last
    assert elapsed < timeout + 10, elapsed
    _, epoch, _ = read(tmp_path / RUN / "latest.npz")
    assert epoch == 2
    # The pair restarted resumes from the chief's `latest`, both workers alike.
    chief, other = launch(["system.max_epochs=3", "train"])
    assert chief.wait() == 0, chief.stderr()
    assert other.wait() == 0, other.stderr()
    for worker in (chief, other):
        assert f"loaded checkpoint {RUN / 'latest.npz'} (epoch 2)" in worker.stderr()
    assert [epoch for _, epoch, _ in chief.saved()] == ["3", "3"]
    assert read(tmp_path / RUN / "latest.npz")[1] == 3


def _snapshot(directory):
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "directory"
            for path in sorted(directory.rglob("*"))}


# (arguments, environment, what the error line says): {held} is a port something listens on, {one} and {two} are
# free ones.
BAD = [
    (["system.cluster={workers: [127.0.0.1:{one}, host], index: 0}"], {}, "expected host:port, got 'host'"),
    (["system.cluster={workers: [127.0.0.1:{one}, 127.0.0.1:0], index: 0}"], {}, "the port must be in [1, 65535]"),
    (["system.cluster={workers: [localhost:{one}, 127.0.0.1:{one}], index: 1}"], {}, "is listed twice"),
    (["system.cluster={workers: [127.0.0.1:{one}, 127.0.0.1:{two}], index: 2}"], {}, "system.cluster.index"),
    (["system.cluster={workers: [127.0.0.1:{one}, 127.0.0.1:{two}], index: -1}"], {}, "system.cluster.index"),
    (["system.cluster={workers: [127.0.0.1:{one}, 127.0.0.1:{two}]}"], {}, "system.cluster: expected {workers"),
    (["system.strategy=default", "system.cluster={workers: [127.0.0.1:{one}], index: 0}"], {},
     "only system.strategy=multi_worker reads it"),
    ([], {"TF_CONFIG": "{cluster: worker"}, "TF_CONFIG: not JSON"),
    ([], {"TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:{one}"]}, "task": {"type": "worker", "index": 1}}'},
     "TF_CONFIG: task.index"),
    ([], {"TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:{one}"], "ps": ["127.0.0.1:{two}"]}, "task": {"type": '
                       '"worker", "index": 0}}'}, "parameter servers are refused"),
    (["system.cluster_timeout=0"], {}, "system.cluster_timeout"),
    (["system.strategy=parameter_server"], {}, "ClusterCoordinator.schedule"),
    (["system.replicas=4"], {}, "system.replicas: the strategy sets it"),
    (["system.visible_gpus=[0, 0]"], {}, "system.visible_gpus"),
    (["system.strategy=default", "system.visible_gpus=[1]"], {}, "this machine has no GPU 1"),
    (["system.strategy=tpu"], {}, "system.strategy: no TPU found"),
    # Refused when the strategy is made: still before any work, and before TensorFlow starts a server.
    (["system.cluster={workers: [127.0.0.1:{held}, 127.0.0.1:{one}], index: 0}"], {}, "cannot listen on port {held}"),
    (["system.cluster_timeout=1", "system.cluster={workers: [127.0.0.1:{one}, 127.0.0.1:{two}], index: 1}"], {},
     "worker 0 (127.0.0.1:{one}, the chief) did not start within system.cluster_timeout=1 s"),
]


@pytest.mark.parametrize("arguments, environment, culprit", BAD, ids=[" ".join(c[0]) or c[2] for c in BAD])
def test_a_bad_cluster_is_one_line_exit_2_and_writes_nothing(arguments, environment, culprit, tmp_path, monkeypatch,
                                                              capsys):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    one, two = free_ports(2)
    ports = {"held": listener.getsockname()[1], "one": one, "two": two}

    def filled(text):
        return re.sub(r"\{(held|one|two)\}", lambda match: str(ports[match[1]]), text)
    (tmp_path / "gate.yaml").write_text(GATED)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, filled(value))
    before = _snapshot(tmp_path)
    capsys.readouterr()
    try:
        status = main(["gate.yaml", *map(filled, arguments), "train"])
    finally:
        listener.close()
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("my: error: ") and filled(culprit) in lines[0], captured.err
    assert captured.out == "" and _snapshot(tmp_path) == before
    assert clusters.joined() is None


def test_a_lost_worker_is_named_from_the_error_tensorflow_raises(monkeypatch):
    class UnavailableError(Exception):
        pass

    class InternalError(Exception):
        pass
    cluster = clusters.Cluster({"worker": ["10.0.0.1:5000", "10.0.0.2:5000"]}, "worker", 0, 7.0, "system.cluster")
    heartbeats = UnavailableError("Collective ops is aborted by: Error reported from /job:worker/task:1: The following "
                                  "tasks are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1")
    mismatch = InternalError("Collective instance 132 expected type 0 and data_type 9 but got type 0 and data_type 1")
    assert clusters.lost_worker(heartbeats) is None  # no cluster joined
    monkeypatch.setattr(clusters, "_joined", cluster)
    message = str(clusters.lost_worker(heartbeats))
    assert message.startswith("worker 1 (10.0.0.2:5000) stopped responding; worker 0 (10.0.0.1:5000, the chief) "
                              "stops too.")
    assert clusters.lost_worker(mismatch) is None  # a bug, not a lost worker: reported as it is
    assert clusters.lost_worker(ValueError("stopped sending heartbeats")) is None
    # A collective's deadline names nobody: with one other worker it is that one, with more it is "a worker".
    class DeadlineExceededError(Exception):
        pass
    deadline = DeadlineExceededError("Collective ops timed out")
    assert str(clusters.lost_worker(deadline)).startswith(
        "worker 1 (10.0.0.2:5000) did not answer within system.cluster_timeout=7 s; worker 0")
    three = clusters.Cluster({"worker": ["10.0.0.1:5000", "10.0.0.2:5000", "10.0.0.3:5000"]}, "worker", 0, 7.0,
                             "system.cluster")
    monkeypatch.setattr(clusters, "_joined", three)
    assert str(clusters.lost_worker(deadline)).startswith("a worker did not answer within system.cluster_timeout=7 s")


def test_a_worker_other_than_the_chief_writes_under_its_scratch_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_scratch", tmp_path)
    target = files.output_path("runs/../eval.yaml")
    assert target == tmp_path / Path(os.path.abspath("eval.yaml")).relative_to("/")
    assert target.parent.is_dir()
