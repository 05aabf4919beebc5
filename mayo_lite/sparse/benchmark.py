"""Batch-1 latency of the ways this project can run a model, side by side in one process: what the `bench` action
and `benchmarks/sparse_latency.py` print.

The variants, each optional but the first:
    dense_ms         the dense Keras model (every gated convolution a plain one), `model(image, training=False)`
    dense_folded_ms  the same dense model as an `InferenceProgram`: batch norms folded, on the faster of XLA and
                     the native runtime (timed on this machine): the fastest dense path this project makes
    tflite_ms        the dense model under TensorFlow Lite (LiteRT) with its XNNPACK delegate
    gated_ms         the gated model in Keras (every channel computed, then masked)
    sparse_ms        the gated model as a `SparseGatedModel` (only the active channels computed), on the engine
                     its tuning chose
    static_ms        a dense network whose gated layers have only as many channels as the gate keeps, folded, on
                     the sparse path's engine: what a static pruning of the same width costs there, the ceiling of
                     the sparse path
    static_tflite_ms the same static network under TensorFlow Lite
    quantized_ms     a quantization-aware model in Keras (its quantizers computed in float)
    int8_tflite_ms   the same model as int8 TensorFlow Lite (learned fixed-point ranges where it has them)
"""

import logging
import os
import tempfile

import numpy as np
import tensorflow as tf

from mayo_lite.sparse.latency import compare_latency, keras_runner
from mayo_lite.sparse.program import InferenceProgram, SparseGatedModel
from mayo_lite.sparse.folding import UnsupportedModel

log = logging.getLogger("mayo_lite")

LABELS = {
    "dense_ms": "dense model (Keras)",
    "dense_folded_ms": "dense, batch norm folded (XLA or native)",
    "tflite_ms": "dense, TensorFlow Lite (XNNPACK)",
    "masked_ms": "pruned, masked kernels (Keras)",
    "gated_ms": "gated, every channel computed (Keras)",
    "sparse_ms": "gated, active channels only (sparse)",
    "static_ms": "static network of the gates' width",
    "static_tflite_ms": "static network, TensorFlow Lite",
    "quantized_ms": "quantization-aware model (Keras)",
    "int8_tflite_ms": "quantized, int8 TensorFlow Lite",
}


def _interpreter(content):
    """A TensorFlow Lite interpreter: LiteRT's (`ai_edge_litert`, the maintained one) or TensorFlow's own."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # TensorFlow still ships its deprecated copy
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_content=content, num_threads=os.cpu_count())


def tflite_runner(model, calibration=None):
    """A batch-1 runner of `model` converted to TensorFlow Lite (float32; XNNPACK is the default delegate), or with
    `calibration` images to int8 (weights and activations; FakeQuant ranges in the model are kept).

    Converted from a SavedModel written by Keras' `model.export`: converting the traced function directly gives
    NaN outputs with TensorFlow 2.21 and Keras 3.
    """
    with tempfile.TemporaryDirectory() as directory:
        model.export(directory, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        if calibration is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([np.asarray(image, np.float32)] for image in calibration)
        content = converter.convert()
    interpreter = _interpreter(content)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]

    def run(image):
        interpreter.set_tensor(source, np.asarray(image, np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(target)
    return run


def _largest_difference(first, second, images):
    return max(float(np.max(np.abs(np.asarray(first(image)) - np.asarray(second(image))))) for image in images)


def measure(dense, images, repeats=5, gated=None, masked=None, static=None, tflite=True, sparse=None,
            quantized=None, int8=None):
    """Times the variants above on `images` (each (1, H, W, C) float32), interleaved; returns
    `(milliseconds, differences)`: `{key: median ms per image}` and `{description: largest output difference}`
    for each compiled or converted variant against the Keras model it stands for.

    Args:
        dense: the dense Keras model.
        gated: the gated model, if there is one (adds gated_ms and sparse_ms).
        sparse: its `SparseGatedModel`, if already made.
        masked: a pruned model with masked kernels, if that is what is measured (adds masked_ms).
        static: the static network of the gates' width (adds static_ms).
        tflite: also time the dense model under TensorFlow Lite (skipped with a notice if conversion fails), or
            a `tflite_runner` of it made before.
        quantized: a quantization-aware model (adds quantized_ms), and `int8` its int8 TensorFlow Lite runner
            (adds int8_tflite_ms, checked against it).
    """
    runners, checks = {"dense_ms": keras_runner(dense)}, {}
    try:
        runners["dense_folded_ms"] = InferenceProgram(dense)
        checks["folded dense vs Keras dense"] = ("dense_folded_ms", "dense_ms")
    except UnsupportedModel as error:  # a layer the folded program has no step for: the other rows still stand
        log.warning("bench: no folded dense row (%s)", error)
    if callable(tflite):
        runners["tflite_ms"] = tflite
        checks["TensorFlow Lite vs Keras dense"] = ("tflite_ms", "dense_ms")
    elif tflite:
        try:
            runners["tflite_ms"] = tflite_runner(dense)
            checks["TensorFlow Lite vs Keras dense"] = ("tflite_ms", "dense_ms")
        except Exception as error:  # the converter fails in many ways; the other rows still stand
            log.warning("bench: no TensorFlow Lite row (%s: %s)", type(error).__name__, str(error).splitlines()[0])
    if masked is not None:
        runners["masked_ms"] = keras_runner(masked)
    if quantized is not None:
        runners["quantized_ms"] = keras_runner(quantized)
        if int8 is not None:
            runners["int8_tflite_ms"] = int8
            checks["int8 TensorFlow Lite vs Keras quantized"] = ("int8_tflite_ms", "quantized_ms")
    engine = "auto"
    if gated is not None:
        runners["gated_ms"] = keras_runner(gated)
        runners["sparse_ms"] = sparse or SparseGatedModel(gated)
        engine = runners["sparse_ms"].tune(images[:5])
        checks["sparse vs Keras gated"] = ("sparse_ms", "gated_ms")
    if static is not None:
        runners["static_ms"] = InferenceProgram(static, engine=engine)
        if tflite:
            try:
                runners["static_tflite_ms"] = tflite_runner(static)
            except Exception as error:  # as for the dense model: the other rows still stand
                log.warning("bench: no static TensorFlow Lite row (%s: %s)", type(error).__name__,
                            str(error).splitlines()[0])
    differences = {name: _largest_difference(runners[a], runners[b], images[:5]) for name, (a, b) in checks.items()}
    seconds = compare_latency(runners, images, repeats)
    return {key: value * 1000 for key, value in seconds.items()}, differences


def speedups(milliseconds):
    """When there is a sparse row: `speedup` (dense Keras / sparse), `speedup_vs_folded` (folded dense / sparse),
    `speedup_vs_tflite` (dense TensorFlow Lite / sparse) and `sparse_over_static` (sparse / static network of the
    same width on the same engine), those whose rows were measured."""
    if "sparse_ms" not in milliseconds:
        return {}
    sparse = milliseconds["sparse_ms"]
    ratios = {"speedup": milliseconds["dense_ms"] / sparse}
    if "dense_folded_ms" in milliseconds:
        ratios["speedup_vs_folded"] = milliseconds["dense_folded_ms"] / sparse
    if "tflite_ms" in milliseconds:
        ratios["speedup_vs_tflite"] = milliseconds["tflite_ms"] / sparse
    if "static_ms" in milliseconds:
        ratios["sparse_over_static"] = sparse / milliseconds["static_ms"]
    return ratios


def table(milliseconds):
    """Lines of `label  ms  ratio to dense Keras`, in the order of LABELS."""
    width = max(len(LABELS[key]) for key in milliseconds)
    base = milliseconds["dense_ms"]
    return [f"  {LABELS[key].ljust(width)}  {milliseconds[key]:9.3f} ms  {base / milliseconds[key]:5.2f}× dense Keras"
            for key in LABELS if key in milliseconds]
