"""The `export-model` action: a deployable copy of the session's model in every format `system.export.formats`
lists (`.keras`, SavedModel, TensorFlow Lite, int8 TensorFlow Lite, ONNX), each loaded back by its own runtime and
checked against Keras on validation images.

The copy is rebuilt from the config without masks, so pruned convolutions become plain `Conv2D` layers whose pruned
weights are zero; the channels that channel pruning switched off are removed (`mayo_lite.models.narrowing`), so the
exported network is really narrower; and every batch norm that follows a convolution is folded into it. Gated (FBS)
layers stay `GatedConv2D`: loading the `.keras` file needs `mayo_lite.layers` imported, the other formats need
nothing. A gated model is also written as its sparse execution path (`mayo_lite.sparse`), a SavedModel that computes
only the active channels of one image at a time.
"""

import logging
import shutil
from pathlib import Path

import keras
import tensorflow as tf

import numpy as np

from mayo_lite.errors import ConfigError, DataError
from mayo_lite.files import output_path
from mayo_lite.layers import gated_layers
from mayo_lite.net import build_model
from mayo_lite.models.cost import model_cost
from mayo_lite.models.folding import fold_batch_norms, with_keras_layers
from mayo_lite.models.narrowing import narrow_model
from mayo_lite.quantize import quantizer_layers
from mayo_lite.quantize.export import int8_ready
from mayo_lite.session.actions.export_formats import FORMATS, compressed_size, missing, quiet, remove, size
from mayo_lite.sparse import SparseGatedModel, UnsupportedModel, native_kernels, native_runtime

log = logging.getLogger("mayo_lite")


def copy_folded(source, target):
    """Copies `source`'s weights into `target` layer by layer (same config, so the same layer names), multiplying
    each masked kernel by its mask; the masks themselves are not copied."""
    layers = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        origin = layers[layer.name]
        mask = getattr(origin, "mask", None)
        values = {variable.name: keras.ops.convert_to_numpy(variable) for variable in origin.weights
                  if variable is not mask}
        if mask is not None:
            values["kernel"] = values["kernel"] * keras.ops.convert_to_numpy(mask)
        for variable in layer.weights:
            variable.assign(values[variable.name])


def export_sparse(program, path):
    """Writes an `InferenceProgram` as a SavedModel whose `serving_default` signature runs it (XLA-compiled when
    the program is): TensorFlow alone loads and serves it, without mayo-lite."""
    tf.saved_model.save(program, str(path), signatures={"serving_default": program.run.get_concrete_function()})


def export_native(program, path):
    """Writes an `InferenceProgram`'s native program under `path`: its operations and arrays, and the runtime's
    two modules (NumPy and Numba only), so it runs without mayo-lite: `native_runtime.load(path)(image)`."""
    program.native.save(path)
    for module in (native_runtime, native_kernels):
        shutil.copyfile(module.__file__, Path(path) / Path(module.__file__).name)


def _check_images(session, count):
    """`count` validation images to check the exports on and as many to calibrate int8 on; random ones when the
    data is not there (said so)."""
    try:
        images = np.stack([image.numpy() for image, *_ in session.pipeline("validate").unbatch().take(2 * count)])
        source = "validation images"
    except DataError as error:
        log.warning("export-model: no validation data (%s); checking on random images", str(error).split(";")[0])
        images = np.random.default_rng(0).random((2 * count, *session.input_shape()), dtype=np.float32)
        source = "random images"
    return images[:count], images[count:] if len(images) > count else images, source


def _human(count):
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _print_narrowing(plain, narrow):
    widths = {layer.name: (layer.filters, narrow.get_layer(layer.name).filters) for layer in plain.layers
              if hasattr(layer, "filters") and layer.filters != narrow.get_layer(layer.name).filters}
    removed = sum(before - after for before, after in widths.values())
    print(f"  channel pruning: {removed} of {sum(before for before, _ in widths.values())} output channels removed "
          f"from {', '.join(f'{name} ({before}→{after})' for name, (before, after) in widths.items())}; MACs "
          f"{model_cost(plain).total['macs']:,} → {model_cost(narrow).total['macs']:,}", flush=True)


def check_export_model(cfg, settings):
    """The formats, before any work: known names (their list and the other settings are checked by
    `settings.check_settings`)."""
    for name in settings.export.formats:
        if name not in FORMATS:
            raise ConfigError(f"{cfg.where('system.export.formats')}: unknown format {name!r}; known: "
                              f"{', '.join(FORMATS)}")


def export_model(runner):
    cfg, session = runner.cfg, runner.session()
    directory = output_path(runner.settings.export.path)
    quantized = any(quantizer_layers(session.model))
    narrow = None
    if quantized:  # the quantized weights baked in, the activations' quantizers kept; int8 keeps their grids
        plain, folded, int8_model, norms, learned = int8_ready(session.model)
    else:
        plain = build_model(session.model_spec, session.input_shape(), origin=cfg.origin, masked=False)
        copy_folded(session.model, plain)
        narrow = narrow_model(plain)
        folded, norms = fold_batch_norms(narrow if narrow is not None else plain)
    folded, own_layers = with_keras_layers(folded)
    if not quantized:
        int8_model, learned = folded, 0
    sparse = None
    if list(gated_layers(plain)):
        try:
            sparse = SparseGatedModel(plain)
        except UnsupportedModel as error:
            log.warning("export-model: no sparse SavedModel, %s", error)
    checks, calibration, source = _check_images(session, runner.settings.export.images)
    expected = keras.ops.convert_to_numpy(plain(checks, training=False))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"export-model: {plain.name}, pruning masks folded into the kernels, {len(norms)} batch norms folded "
          f"into the layer before them; each format loaded back and run on {len(checks)} {source}", flush=True)
    if narrow is not None:
        _print_narrowing(plain, narrow)
    if own_layers:
        print(f"  the .keras file needs mayo_lite.layers imported to load ({', '.join(own_layers)}); the other "
              f"formats need nothing", flush=True)
    reference = 4 * plain.count_params()
    print(f"  the dense model's float32 weights: {_human(reference)}", flush=True)
    if quantized:
        print(f"  quantized weights baked in; tflite_int8 keeps the convolutions' fixed-point weight grids and takes "
              f"the learned ranges of {learned} fixed-point activation quantizer(s) (the other tensors are "
              "calibrated)", flush=True)
    written = {}
    for name in runner.settings.export.formats:
        absent = missing(name)
        if absent:
            print(f"  {name:<12} skipped: needs {', '.join(absent)} (pip install {' '.join(absent)})", flush=True)
            continue
        target = directory / f"{plain.name}{FORMATS[name].suffix}"
        partial = directory / f".{target.name}.partial{target.suffix}"
        remove(partial)
        with quiet():
            FORMATS[name].write(int8_model if name == "tflite_int8" else folded, partial, calibration)
        remove(target)
        partial.rename(target)
        with quiet():
            found = FORMATS[name].load(target)(checks)
        difference = float(np.max(np.abs(found - expected)))
        agreement = float(np.mean(found.argmax(-1) == expected.argmax(-1)))
        bytes_ = size(target)
        print(f"  {name:<12} {str(target):<40} {_human(bytes_):>9} ({bytes_ / reference:.2f}× the dense, gzip "
              f"{_human(compressed_size(target))})  max |Δ| vs Keras {difference:.2e}, top-1 agreement "
              f"{agreement:.2%}", flush=True)
        written[name] = {"path": str(target), "bytes": bytes_, "max_difference": difference,
                         "top1_agreement": agreement}
    if sparse is not None:
        sparse_model = directory / f"{plain.name}_sparse_savedmodel"
        export_sparse(sparse, sparse_model)
        print(f"wrote the sparse execution path as the SavedModel {sparse_model}/ (one image at a time: "
              f"signature serving_default, input `image` of shape {(1, *sparse.input_shape)})", flush=True)
    if sparse is not None and sparse.native is not None:
        native = directory / f"{plain.name}_sparse_native"
        partial = directory / f".{native.name}.partial"
        remove(partial)
        export_native(sparse, partial)
        found = np.concatenate([native_runtime.load(partial)(image[None]) for image in checks])
        remove(native)
        partial.rename(native)
        print(f"wrote it for the native runtime as {native}/ (NumPy and Numba, without mayo-lite: "
              f"`native_runtime.load(path)(image)` with native_runtime.py from that folder); max |Δ| vs Keras "
              f"{float(np.max(np.abs(found - expected))):.2e}", flush=True)
    return written
