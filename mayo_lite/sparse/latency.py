"""Latency of one image through a model, measured the same way for every variant so that ratios are fair."""

import statistics
import time

import tensorflow as tf


def keras_runner(model):
    """A compiled batch-of-one inference function of a Keras model."""
    return tf.function(lambda image: model(image, training=False), reduce_retracing=True)


def latency(run, images, repeats=3):
    """Median over `repeats` passes of the mean seconds per image of `run` over `images` (each (1, H, W, C)), after
    one warm-up pass (tracing)."""
    for image in images[:2]:
        run(image).numpy()
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            run(image).numpy()
        passes.append((time.perf_counter() - start) / len(images))
    return statistics.median(passes)
