"""Latency of one image through several ways of running a model, measured side by side so that ratios are fair.

Every variant runs on the same images, in passes that alternate between the variants (the order rotating, a short
pause before each pass so that no runtime's idle threads still spin), so a slower moment of a shared machine falls
on all of them alike; within a pass one variant runs image after image, as
a deployed model would, with its weights warm in the caches. The figure reported is the median of the single-image
times, which a few interrupted calls do not move.
"""

import statistics
import time

import numpy as np
import tensorflow as tf

# A pause before each variant's pass: the worker threads a runtime leaves behind keep spinning for a while after
# its last call (OpenBLAS's for about 0.1 s), and would take a core from the next variant. Measured here: TFLite's
# dense M-CifarNet 1.57 ms alone, 1.77 ms right after the native runtime's pass, 1.55 ms with this pause.
SETTLE_SECONDS = 0.3


def keras_runner(model):
    """A traced batch-of-one inference function of a Keras model, called through its concrete function (as the
    compiled programs are, so that no variant pays tf.function's argument matching and the others do not)."""
    function = tf.function(lambda image: model(image, training=False))
    shape = (1, *model.inputs[0].shape[1:])
    return function.get_concrete_function(tf.TensorSpec(shape, tf.float32))


def compare_latency(runners, images, repeats=5, warmup=3, settle=None):
    """Median seconds per image of each runner of `runners` (name -> function of one (1, H, W, C) image returning
    a tensor or an array), over `repeats` passes through `images`, after `warmup` calls each (tracing,
    compilation, caches), pausing `settle` seconds (`SETTLE_SECONDS` by default) before each pass.
    """
    settle = SETTLE_SECONDS if settle is None else settle
    names = list(runners)
    for name in names:
        for image in images[:warmup]:
            np.asarray(runners[name](image))
    samples = {name: [] for name in names}
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for name in order:
            run = runners[name]
            time.sleep(settle)
            for image in images:
                start = time.perf_counter()
                np.asarray(run(image))
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples[name]) for name in names}
