"""Training throughput with one replica, two replicas in one process, and two worker processes on 127.0.0.1,
measured side by side with mayo-lite's own distributed training step.

Each configuration runs in fresh processes (TensorFlow fixes its devices and cluster at start-up) on synthetic
data of the model's dataset shape, with the same batch per replica (weak scaling: the global batch grows with the
replicas), for two epochs of `--steps` steps; the second epoch is timed (the first traces and warms up). On a
machine with N GPUs, `--replicas N` gives real multi-GPU figures; on a CPU the replicas share its cores, so two
replicas cannot be faster than one and the ratio says what the synchronisation costs.

    .venv/bin/python benchmarks/scaling.py [--model models/cifarnet_slim.yaml] [--batch 64] [--steps 20]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(arguments):
    """Runs in a child process: trains two epochs and prints the timed epoch's figures as JSON (chief only)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(ROOT))
    import keras

    from mayo_lite.cli import Runner

    runner = Runner()
    runner.cfg.load(arguments.model)
    runner.cfg.load("datasets/synthetic.yaml")
    runner.cfg.load("trainers/cifarnet.yaml")
    workers = len(json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"]) if "TF_CONFIG" in os.environ else 1
    replicas = arguments.replicas * workers
    for override in (f"system.num_gpus={arguments.replicas}", f"system.batch_size_per_gpu={arguments.batch}",
                     "system.checkpoint.load=null", "system.seed=0", "system.log.tensorboard=null",
                     "system.log.history=null", f"system.checkpoint.path={arguments.scratch}",
                     f"dataset.num_examples_per_epoch.train={arguments.steps * arguments.batch * replicas}",
                     f"system.strategy={'multi_worker' if workers > 1 else 'default'}"):
        runner.cfg.override(override)
    session = runner.session()

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    timer = Timer()
    session.loops.train(2.0, [timer])
    task = json.loads(os.environ.get("TF_CONFIG", '{"task": {"index": 0}}'))["task"]["index"]
    if task == 0:
        global_batch = arguments.batch * replicas
        print(json.dumps({"replicas": replicas, "global_batch": global_batch,
                          "step_ms": 1000 * timer.seconds / arguments.steps,
                          "images_per_s": global_batch * arguments.steps / timer.seconds}), flush=True)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def run(arguments, replicas, workers, scratch):
    """The chief's figures for one configuration."""
    command = [sys.executable, __file__, "--worker", "--model", arguments.model, "--batch", str(arguments.batch),
               "--steps", str(arguments.steps), "--replicas", str(replicas)]
    hosts = [f"127.0.0.1:{port}" for port in free_ports(workers)] if workers > 1 else []
    processes = []
    for index in range(workers):
        environment = dict(os.environ, PYTHONPATH=str(ROOT))
        if hosts:
            environment["TF_CONFIG"] = json.dumps({"cluster": {"worker": hosts},
                                                   "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(command + ["--scratch", str(scratch / f"w{index}")], cwd=ROOT,
                                          env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
    outputs = [process.communicate(timeout=1800) for process in processes]
    for process, (_, error) in zip(processes, outputs):
        if process.returncode != 0:
            lines = [line for line in error.strip().splitlines() if "Error" in line or "error" in line]
            raise SystemExit(f"scaling: a worker failed: {(lines or error.strip().splitlines() or ['?'])[0]}")
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/cifarnet_slim.yaml")
    parser.add_argument("--batch", type=int, default=64, help="examples per replica per step")
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch (the second epoch is timed)")
    parser.add_argument("--replicas", type=int, default=2, help="replicas of the multi-replica rows")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        return worker(arguments)
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        rows = [("1 replica", run(arguments, 1, 1, scratch / "a")),
                (f"{arguments.replicas} replicas, one process", run(arguments, arguments.replicas, 1, scratch / "b")),
                ("2 workers on 127.0.0.1, 1 replica each", run(arguments, 1, 2, scratch / "c"))]
    base = rows[0][1]["images_per_s"]
    print(f"{arguments.model}, {arguments.batch} images per replica per step, {arguments.steps} timed steps, "
          f"{os.cpu_count()} CPU cores")
    print(f"{'configuration':<40} {'replicas':>8} {'global batch':>12} {'step ms':>9} {'images/s':>9} {'vs 1':>6}")
    for name, figures in rows:
        print(f"{name:<40} {figures['replicas']:>8} {figures['global_batch']:>12} {figures['step_ms']:>9.1f} "
              f"{figures['images_per_s']:>9.1f} {figures['images_per_s'] / base:>5.2f}×")


if __name__ == "__main__":
    main()
