"""The `bench` action: batch-1 inference latency of the session's model and of the other ways to run it, measured
side by side in one process (`mayo_lite.sparse.benchmark` says what each row is).

For a gated model: its dense counterpart in Keras, folded and compiled, and under TensorFlow Lite; the gated model
in Keras and run sparsely (whose outputs are checked against Keras'), on the engine timed fastest on this machine;
and the static network of the gates' width, on the same engine and under TensorFlow Lite. With
`system.bench.profile=true` also each layer's time on the native runtime, stage by stage, beside the dense layer's.
For a pruned model: the masked model in Keras against its masks folded into a plain model, compiled and under
TensorFlow Lite (masks alone save no time: Keras convolutions are dense). For a plain model: Keras, compiled, and
TensorFlow Lite, with no sparse row, since nothing is gated. A loaded checkpoint is used when there is one; random
weights cost the same time.
"""

import gc
import logging
import os

import numpy as np
import yaml

from mayo_lite.errors import ConfigError, DataError
from mayo_lite.files import write_atomically
from mayo_lite.layers import gated_layers
from mayo_lite.net import build_model, static_width, without_gates, without_quantizers
from mayo_lite.quantize import quantizer_layers
from mayo_lite.quantize.export import int8_ready
from mayo_lite.session.actions.export_formats import quiet
from mayo_lite.session.actions.export_model import copy_folded
from mayo_lite.sparse import InferenceProgram, SparseGatedModel, UnsupportedModel
from mayo_lite.sparse.benchmark import measure, speedups, table, tflite_runner
from mayo_lite.sparse.profile import profile
from mayo_lite.sparse.profile import table as profile_table

log = logging.getLogger("mayo_lite")


def _images(session, count):
    """`count` validation images, one per batch, or random ones when the data is not there (said so)."""
    try:
        batches = session.pipeline("validate").unbatch().take(count)
        images = [image[None].numpy().astype(np.float32) for image, *_ in batches]
        source = f"{len(images)} validation images"
    except DataError as error:
        log.info("bench: no validation data (%s); timing random images", str(error).split(";")[0])
        images = []
    # An input pipeline's iterator left for the garbage collector keeps tf.data's autotuning thread waking up,
    # which slows the compiled programs by 15-20% at batch 1 on two cores: collect it before timing.
    gc.collect()
    if not images:
        rng = np.random.default_rng(0)
        images = [rng.random((1, *session.input_shape()), dtype=np.float32) for _ in range(count)]
        source = f"{count} random images"
    return images, source


def _quantized_variants(cfg, settings, session, images):
    """A quantization-aware model: the float model it quantizes (the same weights, no quantizers) is the dense
    row and its float TensorFlow Lite the bar; the model itself in Keras, and as int8 TensorFlow Lite."""
    dense = build_model(without_quantizers(session.model_spec), session.input_shape(), origin=cfg.origin)
    copy_folded(session.model, dense)
    variants = {"dense": dense, "quantized": session.model}
    if settings.bench.tflite:
        try:
            with quiet():  # the converter's C++ lines ("fully_quantize: 0, ...")
                variants["int8"] = tflite_runner(int8_ready(session.model)[2], calibration=images[:100])
        except Exception as error:  # the converter fails in many ways; the other rows still stand
            log.warning("bench: no int8 TensorFlow Lite row (%s: %s)", type(error).__name__,
                        str(error).splitlines()[0])
    return variants


def _variants(cfg, settings, session, images):
    """The keyword arguments of `measure` for the session's model, and what the table is about."""
    model, shape = session.model_spec, session.input_shape()
    if list(gated_layers(session.model)):
        try:
            sparse = SparseGatedModel(session.model, engine=settings.bench.engine)
        except UnsupportedModel as error:
            raise ConfigError(f"bench: model {session.model.name} cannot run sparsely: {error}") from None
        dense = build_model(without_gates(model), shape, origin=cfg.origin)
        narrow = static_width(model)
        static = build_model(narrow, shape, origin=cfg.origin) if narrow is not None else None
        return {"dense": dense, "gated": session.model, "sparse": sparse, "static": static}, "gated"
    if any(quantizer_layers(session.model)):
        return _quantized_variants(cfg, settings, session, images), "quantized"
    if session.masked:
        plain = build_model(model, shape, origin=cfg.origin, masked=False)
        copy_folded(session.model, plain)
        return {"dense": plain, "masked": session.model}, "pruned"
    return {"dense": session.model}, "plain"


def bench(runner):
    cfg, settings, session = runner.cfg, runner.settings, runner.session()
    count, repeats, tflite = settings.bench.images, settings.bench.repeats, settings.bench.tflite
    images, source = _images(session, count)
    variants, kind = _variants(cfg, settings, session, images)
    milliseconds, differences = measure(images=images, repeats=repeats, tflite=tflite, **variants)
    ratios = speedups(milliseconds)
    print(f"latency of one image of {session.model.name}, {source}, median of {repeats} passes, "
          f"{os.cpu_count()} CPU threads:")
    print("\n".join(table(milliseconds)))
    for name, difference in differences.items():
        print(f"  {name}: outputs differ by at most {difference:.2g}")
    sparse = variants.get("sparse")
    if ratios:
        print(f"sparse execution ({_engine_line(sparse)}): {ratios['speedup']:.2f}× dense Keras"
              + (f", {ratios['speedup_vs_folded']:.2f}× the folded dense path" if "speedup_vs_folded" in ratios
                 else "")
              + (f", {ratios['speedup_vs_tflite']:.2f}× TensorFlow Lite's dense model"
                 if "speedup_vs_tflite" in ratios else "")
              + (f"; {ratios['sparse_over_static']:.2f}× the time of the static network of the same width"
                 if "sparse_over_static" in ratios else ""))
        if settings.bench.profile:
            _print_profile(sparse, variants["dense"], images[0])
    elif "int8_tflite_ms" in milliseconds and "tflite_ms" in milliseconds:
        print(f"int8 TensorFlow Lite: {milliseconds['tflite_ms'] / milliseconds['int8_tflite_ms']:.2f}× the float "
              f"TensorFlow Lite model, {milliseconds['dense_ms'] / milliseconds['int8_tflite_ms']:.2f}× dense Keras")
    else:
        print(f"no sparse row: {session.model.name} has no gated (FBS) convolutions, so no channel is skipped; "
              f"a gated variant (configs/models/gate/) runs sparsely")
    if settings.plumbing:
        keys = ("dense_ms", "dense_folded_ms", "tflite_ms", "masked_ms", "gated_ms", "sparse_ms", "static_ms",
                "static_tflite_ms", "quantized_ms", "int8_tflite_ms")
        record = {key: milliseconds.get(key) for key in keys} | {
            key: ratios.get(key) for key in ("speedup", "speedup_vs_folded", "speedup_vs_tflite",
                                             "sparse_over_static")} | {
            "engine": sparse.engine if sparse is not None else None,
            "modes": dict(sparse.modes) if sparse is not None else None,
            "model": session.model.name, "kind": kind, "images": source, "repeats": repeats,
            "threads": os.cpu_count(), "output_differences": differences}
        write_atomically("bench.yaml", yaml.safe_dump(record, sort_keys=False))
        log.info("wrote bench.yaml")
    return milliseconds


def _engine_line(sparse):
    engine = {"native": "native runtime", "xla": "TensorFlow, XLA"}[sparse.engine]
    if sparse.native is None:
        return f"{engine}; the native runtime cannot run this model"
    return f"{engine}, timed fastest on this machine" + (" (tuning cache)" if sparse.from_cache else "")


def _print_profile(sparse, dense_model, image):
    if sparse.native is None:
        print("no per-layer profile: it times the native runtime, which cannot run this model")
        return
    dense = InferenceProgram(dense_model, engine="native")
    print("per-layer time on the native runtime, ms per image (median of 20), gated layers stage by stage, "
          "beside the dense model's layer:")
    print("\n".join(profile_table(profile(sparse.native, dense.native, image))))


def check_bench(cfg, settings):
    """A gate that sparse execution cannot run is refused before the model is built or timed."""
    for path, params in _gate_params(cfg.get("model"), "model"):
        if isinstance(params, dict) and params.get("norm", "batch") != "batch":
            raise ConfigError(f"{cfg.where(path + '.norm')}: bench runs gated models sparsely, which needs "
                              f"norm: batch (moving statistics); norm: {params['norm']} normalises each image by "
                              "its own moments")


def _gate_params(spec, path):
    if isinstance(spec, dict):
        if spec.get("type") == "gated_convolution":
            yield f"{path}.gate_params", spec.get("gate_params")
        for key, value in spec.items():
            yield from _gate_params(value, f"{path}.{key}")
    elif isinstance(spec, list):
        for index, value in enumerate(spec):
            yield from _gate_params(value, f"{path}.{index}")
