"""Time per training step of mayo-lite's distributed custom loop against plain Keras `Model.fit`, in one process.

The same YAML model, the same batches (in memory, so the input pipeline is not what is measured), the same
optimizer; the ratio is mayo-lite / Keras, so 1.00 means the custom loop costs nothing extra.

    .venv/bin/python benchmarks/train_step.py [MODEL.yaml] [--batch 128] [--steps 40] [--repeats 3]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mayo_lite.cli import Runner  # noqa: E402


def session_for(model_file, batch, overrides=()):
    runner = Runner()
    for path in (model_file, "datasets/fashion_mnist.yaml", "trainers/cifarnet.yaml"):
        runner.cfg.load(path)
    for override in overrides:
        runner.cfg.override(override)
    runner.cfg.set("system.batch_size_per_gpu", batch)
    runner.cfg.set("system.checkpoint.load", None)
    runner.cfg.set("system.seed", 0)
    return runner.session()


def batches(session, steps, batch):
    shape = session.input_shape()
    rng = np.random.default_rng(0)
    images = rng.random((steps * batch,) + shape, dtype=np.float32)
    labels = rng.integers(0, 10, steps * batch).astype(np.int32)
    return images, labels


def time_custom_loop(session, images, labels, batch):
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).cache()
    step = session.loops._build_train_step()
    distributed = list(session.strategy.experimental_distribute_dataset(dataset))
    for element in distributed[:2]:  # trace and warm up
        [float(v) for v in step(element)]
    start = time.perf_counter()
    for element in distributed:
        [float(v) for v in step(element)]  # the loop reads its results every step, for the progress bar
    return (time.perf_counter() - start) / len(distributed)


def compare_steps(sessions, images, labels, batch, repeats):
    """Median seconds per training step of each named session on the same batches, timed alternately so that
    drifting machine load hits them alike."""
    times = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            times[name].append(time_custom_loop(session, images, labels, batch))
    return {name: statistics.median(values) for name, values in times.items()}


def time_keras_fit(session, images, labels, batch):
    model = keras.models.clone_model(session.model)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(images[:2 * batch], labels[:2 * batch], batch_size=batch, epochs=1, verbose=0, shuffle=False)
    start = time.perf_counter()
    model.fit(images, labels, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    return (time.perf_counter() - start) / (len(images) // batch)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="models/cifarnet_slim.yaml")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    session = session_for(args.model, args.batch)
    images, labels = batches(session, args.steps, args.batch)
    ours, theirs = [], []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        ours.append(time_custom_loop(session, images, labels, args.batch))
        theirs.append(time_keras_fit(session, images, labels, args.batch))
    mine, keras_time = statistics.median(ours), statistics.median(theirs)
    print(f"model {args.model}, batch {args.batch}, {args.steps} steps, median of {args.repeats}")
    print(f"keras fit:        {keras_time * 1000:8.1f} ms/step")
    print(f"mayo-lite loop:   {mine * 1000:8.1f} ms/step")
    print(f"ratio mayo-lite / keras: {mine / keras_time:.3f}")


if __name__ == "__main__":
    main()
