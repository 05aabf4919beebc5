"""The `export-model` action: a deployable copy of the session's model, with pruning masks folded into the kernels.

The copy is rebuilt from the config without masks, so pruned convolutions become plain `Conv2D` layers whose pruned
weights are zero; it is written as a `.keras` file and as a TensorFlow SavedModel (for TF Serving, TFLite
converters and other runtimes). Gated (FBS) layers stay `GatedConv2D`: loading the `.keras` file needs
`mayo_lite.layers` imported, the SavedModel needs nothing. A gated model is also written as its sparse execution
path (`mayo_lite.sparse`), a SavedModel that computes only the active channels of one image at a time.
"""

import logging
from pathlib import Path

import keras
import tensorflow as tf

from mayo_lite.errors import ConfigError
from mayo_lite.layers import gated_layers
from mayo_lite.net import build_model
from mayo_lite.sparse import SparseGatedModel, UnsupportedModel

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


def export_model(runner):
    cfg, session = runner.cfg, runner.session()
    directory = Path(cfg.get("system.export.path"))
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{cfg.where('system.export.path')}: {directory} exists and is not a directory")
    plain = build_model(cfg.get("model"), session.input_shape(), origin=cfg.origin, masked=False)
    copy_folded(session.model, plain)
    sparse = None
    if list(gated_layers(plain)):
        try:
            sparse = SparseGatedModel(plain)
        except UnsupportedModel as error:
            log.warning("export-model: no sparse SavedModel, %s", error)
    directory.mkdir(parents=True, exist_ok=True)
    keras_file = directory / f"{plain.name}.keras"
    plain.save(keras_file)
    saved_model = directory / f"{plain.name}_savedmodel"
    plain.export(str(saved_model), format="tf_saved_model", verbose=False)
    print(f"wrote {keras_file} and the SavedModel {saved_model}/", flush=True)
    if sparse is not None:
        sparse_model = directory / f"{plain.name}_sparse_savedmodel"
        export_sparse(sparse, sparse_model)
        print(f"wrote the sparse execution path as the SavedModel {sparse_model}/ (one image at a time: "
              f"signature serving_default, input `image` of shape {(1, *sparse.input_shape)})", flush=True)
    return keras_file, saved_model
