"""The `bench` action: inference latency, one image at a time, of the session's model and its dense counterpart,
measured in one process so the ratios are fair.

For a gated model it times the dense model (every gated convolution a plain one), the gated model as Keras runs it
(every channel computed, then masked) and the gated model run sparsely (only active channels computed,
`mayo_lite.sparse`), whose outputs are checked against the Keras ones. A pruned model is timed as it runs here:
Keras convolutions are dense, so masks alone save no time.
"""

import logging

import numpy as np

from mayo_lite.errors import ConfigError, DataError
from mayo_lite.layers import gated_layers
from mayo_lite.net import build_model, without_gates
from mayo_lite.sparse import SparseGatedModel, UnsupportedModel, keras_runner, latency

log = logging.getLogger("mayo_lite")


def _count(cfg, key):
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{cfg.where(key)}: expected a positive integer, got {value!r}")
    return value


def _images(session, count):
    """`count` validation images, one per batch, or random ones when the data is not there (said so)."""
    try:
        batches = session.pipeline("validate").unbatch().take(count)
        images = [image[None].numpy() for image, *_ in batches]
        source = f"{len(images)} validation images"
    except DataError as error:
        log.info("bench: no validation data (%s); timing random images", str(error).split(";")[0])
        images = []
    if not images:
        rng = np.random.default_rng(0)
        images = [rng.random((1, *session.input_shape()), dtype=np.float32) for _ in range(count)]
        source = f"{count} random images"
    return images, source


def bench(runner):
    cfg, session = runner.cfg, runner.session()
    images, source = _images(session, _count(cfg, "system.bench.images"))
    repeats = _count(cfg, "system.bench.repeats")
    dense = build_model(without_gates(cfg.get("model")), session.input_shape(), origin=cfg.origin)
    rows = [("dense model (Keras)", latency(keras_runner(dense), images, repeats))]
    gated = list(gated_layers(session.model))
    if gated:
        keras_gated = keras_runner(session.model)
        rows.append(("gated, every channel computed (Keras)", latency(keras_gated, images, repeats)))
        try:
            sparse = SparseGatedModel(session.model)
        except UnsupportedModel as error:
            log.info("bench: no sparse execution for this model: %s", error)
        else:
            difference = max(float(np.max(np.abs(sparse(image).numpy() - keras_gated(image).numpy())))
                             for image in images)
            rows.append(("gated, active channels only (sparse)", latency(sparse, images, repeats)))
            log.info("sparse and Keras outputs differ by at most %.2g", difference)
    elif session.masked:
        rows.append(("pruned, masked kernels (Keras)", latency(keras_runner(session.model), images, repeats)))
    else:
        rows.append(("this model (Keras)", rows[0][1]))
    base = rows[0][1]
    width = max(len(name) for name, _ in rows)
    print(f"latency of one image, {source}, median of {repeats} passes:")
    for name, seconds in rows:
        print(f"  {name.ljust(width)}  {seconds * 1000:8.3f} ms  {base / seconds:5.2f}× the dense speed")
    return rows
