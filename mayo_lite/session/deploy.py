"""The `export-model` action: a deployable copy of the session's model, with pruning masks folded into the kernels.

The copy is rebuilt from the config without masks, so pruned convolutions become plain `Conv2D` layers whose pruned
weights are zero; it is written as a `.keras` file and as a TensorFlow SavedModel (for TF Serving, TFLite
converters and other runtimes). Gated (FBS) layers stay `GatedConv2D`: loading the `.keras` file needs
`mayo_lite.layers` imported, the SavedModel needs nothing.
"""

import logging
from pathlib import Path

import keras

from mayo_lite.errors import ConfigError
from mayo_lite.net import build_model

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


def export_model(runner):
    cfg, session = runner.cfg, runner.session()
    directory = Path(cfg.get("system.export.path"))
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{cfg.where('system.export.path')}: {directory} exists and is not a directory")
    plain = build_model(cfg.get("model"), session.input_shape(), origin=cfg.origin, masked=False)
    copy_folded(session.model, plain)
    directory.mkdir(parents=True, exist_ok=True)
    keras_file = directory / f"{plain.name}.keras"
    plain.save(keras_file)
    saved_model = directory / f"{plain.name}_savedmodel"
    plain.export(str(saved_model), format="tf_saved_model", verbose=False)
    print(f"wrote {keras_file} and the SavedModel {saved_model}/", flush=True)
    return keras_file, saved_model
