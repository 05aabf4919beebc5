"""The formats `export-model` writes, each with the runtime that loads it back for the check against Keras: Keras'
own `model.export` writes SavedModel, LiteRT (TensorFlow Lite) and ONNX; the loaders are those of each runtime."""

import contextlib
import logging
import os
import shutil
import sys
import warnings
from typing import Callable, NamedTuple

import keras
import numpy as np


class Format(NamedTuple):
    suffix: str                      # appended to the model's name
    write: Callable                  # write(model, path, calibration images)
    load: Callable                   # load(path) -> run(images) -> outputs
    needs: tuple = ()                # modules it needs, and the pip packages that bring them


def _write_keras(model, path, calibration):
    model.save(path)


def _load_keras(path):
    model = keras.models.load_model(path)
    return lambda images: keras.ops.convert_to_numpy(model(images, training=False))


def _write_saved_model(model, path, calibration):
    model.export(str(path), format="tf_saved_model", verbose=False)


def _load_saved_model(path):
    import tensorflow as tf

    served = tf.saved_model.load(str(path))
    return lambda images: served.serve(images).numpy()


def _write_tflite(model, path, calibration):
    model.export(str(path), format="litert", verbose=False)


def _write_tflite_int8(model, path, calibration):
    """Post-training int8 quantisation of weights and activations, calibrated on validation images; input and
    output stay float32 so the model is a drop-in replacement."""
    import tensorflow as tf

    def representative():
        for image in calibration:
            yield [image[None].astype(np.float32)]
    model.export(str(path), format="litert", verbose=False, optimizations=[tf.lite.Optimize.DEFAULT],
                 representative_dataset=representative)


def _load_tflite(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(images):
        outputs = []
        for image in images:  # batch 1, as a phone runs it
            interpreter.resize_tensor_input(source["index"], [1, *image.shape])
            interpreter.allocate_tensors()
            interpreter.set_tensor(source["index"], image[None].astype(np.float32))
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(target["index"])[0])
        return np.stack(outputs)
    return run


def _write_onnx(model, path, calibration):
    model.export(str(path), format="onnx", verbose=False)


def _load_onnx(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images.astype(np.float32)})[0]


FORMATS = {
    "keras": Format(".keras", _write_keras, _load_keras),
    "saved_model": Format("_savedmodel", _write_saved_model, _load_saved_model),
    "tflite": Format(".tflite", _write_tflite, _load_tflite, (("ai_edge_litert", "ai-edge-litert"),)),
    "tflite_int8": Format("_int8.tflite", _write_tflite_int8, _load_tflite, (("ai_edge_litert", "ai-edge-litert"),)),
    "onnx": Format(".onnx", _write_onnx, _load_onnx, (("tf2onnx", "tf2onnx"), ("onnxruntime", "onnxruntime"))),
}


@contextlib.contextmanager
def quiet():
    """Silences what the converters print from C++ ("fully_quantize: 0, ...", "Created TensorFlow Lite XNNPACK
    delegate") and tf2onnx's warnings, which say nothing to act on: file descriptors 1 and 2 go to /dev/null."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    sink = os.open(os.devnull, os.O_WRONLY)
    level = logging.getLogger("tf2onnx").level
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        os.dup2(sink, 1)
        os.dup2(sink, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for handle in (*saved, sink):
            os.close(handle)
        logging.getLogger("tf2onnx").setLevel(level)


def missing(name):
    """The pip packages a format needs that are not installed."""
    import importlib.util

    return [package for module, package in FORMATS[name].needs if importlib.util.find_spec(module) is None]


def size(path):
    """Bytes of a file or of a directory's files."""
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size


def compressed_size(path):
    """Bytes after gzip (a pruned model's zeros compress: what it costs to download)."""
    import gzip
    import io
    import tarfile

    buffer = io.BytesIO()
    if path.is_dir():
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            archive.add(path, arcname=path.name)
        return len(buffer.getvalue())
    return len(gzip.compress(path.read_bytes(), compresslevel=9))


def remove(path):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
