"""Keras Applications weights (`keras:vgg16`, `keras:resnet50`, `keras:mobilenet`), read from the Keras cache and
mapped onto this project's models."""

import os
from pathlib import Path

import keras
import numpy as np

from mayo_lite.errors import CheckpointError
from mayo_lite.weights.architectures import CONVOLUTIONS, KERAS
from mayo_lite.weights.fitting import ModelSide, check_layout, first_line, fit, listed


def _keras_cache():
    # Keras' own rule (`keras_home()` is not in its public API): KERAS_HOME, else ~/.keras.
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(os.path.expanduser(home)) / "models"


def _keras_architecture(selector):
    name = selector[len("keras:"):].strip().lower()
    if name not in KERAS:
        raise CheckpointError(f"{selector}: unknown Keras Applications model {name!r} (known: "
                              f"{', '.join(f'keras:{known}' for known in KERAS)})")
    return KERAS[name]


def read_keras(selector, model):
    architecture = _keras_architecture(selector)
    check_layout(selector, architecture, ModelSide(model))  # before a download of up to 550 MB
    application = _application(selector, architecture)
    return from_keras_application(application, architecture.name, model, where=selector), architecture.title


def _application(selector, architecture):
    """keras.applications.<X>(weights="imagenet"): from the cache, or downloaded by Keras."""
    cache = _keras_cache()
    cached = cache / architecture.weights_file
    shown = str(cache).replace(os.path.expanduser("~"), "~", 1)
    try:
        return getattr(keras.applications, architecture.application)(weights="imagenet", classifier_activation=None)
    except Exception as error:  # Keras raises a bare Exception when a download fails
        if cached.is_file():
            raise CheckpointError(f"{selector}: could not read the ImageNet weights {cached} "
                                  f"({first_line(error)}); delete the file to download it again") from None
        raise CheckpointError(
            f"{selector}: the ImageNet weights are not in {shown} and could not be downloaded "
            f"({first_line(error)}); copy {architecture.weights_file} into {shown} from a machine with internet "
            f"(python -c 'import keras; keras.applications.{architecture.application}()')") from None


def from_keras_application(application, arch, model, where=None):
    """Maps an already built Keras Applications model (`arch`: vgg16, resnet50 or mobilenet) onto `model`."""
    where = where or f"keras:{arch}"
    architecture = _keras_architecture(f"keras:{arch}")
    target = ModelSide(model)
    check_layout(where, architecture, target, strides=False)
    layers = {layer.name: layer for layer in application.layers}
    sources, problems = {}, []
    for entry in architecture.entries:
        layer = layers.get(entry.source)
        if layer is None:
            problems.append(f"no layer {entry.source}")
            continue
        found = {variable.path.rsplit("/", 1)[-1]: variable for variable in layer.weights}
        if set(found) != set(entry.roles):
            problems.append(f"{entry.source} has {sorted(found)}, expected {list(entry.roles)}")
            continue
        strides = getattr(layer, "strides", None)
        if entry.kind in CONVOLUTIONS and tuple(strides) != (entry.stride, entry.stride):
            problems.append(f"{entry.source} has stride {tuple(strides)}, expected {entry.stride}")
            continue
        arrays = {role: np.asarray(found[role].numpy()) for role in entry.roles}
        names = {role: (f"{entry.source}/{role}", tuple(array.shape)) for role, array in arrays.items()}
        sources[entry.source] = (arrays, names, float(getattr(layer, "epsilon", 0.0)))
    if problems:
        raise CheckpointError(f"{where}: not the Keras Applications model the table expects "
                              f"({architecture.application}): {listed(problems)}")
    values = fit(where, architecture, sources, target)
    check_layout(where, architecture, target)
    return values
