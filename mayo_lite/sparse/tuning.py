"""Choosing how an `InferenceProgram` runs by timing the candidates on the machine it runs on, as cuDNN, XLA and
TVM autotune: which engine (TensorFlow compiled by XLA, or the native runtime) and, in the native runtime, how each
gated layer computes (`gather` or `every`, `native_runtime.Convolution`).

The choice is cached per program structure and machine in a JSON file (`MAYO_LITE_TUNING_CACHE`, by default
`~/.cache/mayo-lite/tuning.json`), so a second run pays nothing. The candidates compute the same function: a choice
changes the time, never the outputs. The cache is safe to delete; a damaged one is ignored with one warning line
and written afresh.
"""

import hashlib
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from mayo_lite.sparse import gated_step, native_runtime
from mayo_lite.sparse.latency import compare_latency

log = logging.getLogger("mayo_lite")

MODES = ("gather", "every")


def cache_path():
    return Path(os.environ.get("MAYO_LITE_TUNING_CACHE",
                               Path.home() / ".cache" / "mayo-lite" / "tuning.json"))


def machine():
    """What a timing depends on besides the program: the processor, how many threads, the libraries."""
    import numba
    import tensorflow as tf
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as file:
            model = next((line.split(":", 1)[1].strip() for line in file if line.startswith("model name")), model)
    except OSError:
        pass
    return {"processor": model, "machine": platform.machine(), "threads": os.cpu_count(),
            "numpy": np.__version__, "numba": numba.__version__, "tensorflow": tf.__version__}


def program_key(program):
    """A key for an `InferenceProgram`'s structure (its layers, their shapes and kept channels; not the weights'
    values) on this machine."""
    structure = [[type(step).__name__, step.layer_name, str(step.layer.output.shape), getattr(step, "count", None)]
                 for step in program.steps]
    text = json.dumps([structure, list(program.input_shape), machine()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read_cache(path):
    try:
        with open(path) as file:
            cache = json.load(file)
        if not isinstance(cache, dict):
            raise ValueError("not a JSON object")
        return cache
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.warning("sparse: ignoring the tuning cache %s (%s); it will be written afresh", path, error)
        return {}


def _write_cache(path, cache):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tuning-", suffix=".json")
        with os.fdopen(handle, "w") as file:
            json.dump(cache, file, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except OSError as error:  # a read-only home: the choice is still made, just not remembered
        log.warning("sparse: could not write the tuning cache %s (%s)", path, error)


def _median_seconds(function, argument, repeats):
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(argument)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def layer_inputs(native, image):
    """Each operation's input features on `image`, from one pass."""
    results = [native_runtime.Feature(np.asarray(image, np.float32)[0], None, native.input_shape[-1])]
    inputs = []
    for operation, wiring in zip(native.operations, native.wiring):
        features = [results[i] for i in wiring]
        inputs.append(features)
        results.append(operation(*features))
    return inputs


def tune_modes(native, image, repeats=9):
    """{gated layer: fastest mode}, each layer timed alone in every mode on its own input from `image`."""
    modes = {}
    for operation, features in zip(native.operations, layer_inputs(native, image)):
        if not getattr(operation, "gated", False) or operation.count == operation.filters:
            continue
        times = {}
        for mode in MODES:
            operation.mode = mode
            operation(*features)  # warm
            times[mode] = _median_seconds(lambda feature: operation(feature), features[0], repeats)
        modes[operation.name] = min(times, key=times.get)
        operation.mode = modes[operation.name]
    return modes


def apply_modes(native, modes):
    for operation, spec in zip(native.operations, native.specs):
        if operation.name in modes:
            operation.mode = spec["mode"] = modes[operation.name]


# The gather costs tried for the TensorFlow program when it has small maps: the first guess, gathering everywhere,
# and computing every channel wherever the map is small.
GATHER_COSTS = (None, 0.0, float("inf"))


def choose(program, native, images, repeats=3):
    """The engine (`xla` or `native`) and the native modes for `program` (`native`: its native program, or None
    where the native runtime cannot run it), from the cache or measured on `images`; the TensorFlow program is left
    traced with its fastest gather cost."""
    path = cache_path()
    key = program_key(program)
    cache = _read_cache(path)
    entry = cache.get(key)
    if _valid(entry, native):
        if native is not None:
            apply_modes(native, entry["modes"])
        if "gather_cost" in entry:
            program.with_gather_cost(float(entry["gather_cost"]))
        return entry["engine"], entry["modes"], True
    runners, modes = {}, {}
    if native is not None:
        modes = tune_modes(native, images[0])
        apply_modes(native, modes)
        runners["native"] = native
    for cost in GATHER_COSTS if program.small_maps() else (None,):
        cost = float(gated_step.GATHER_COST) if cost is None else cost
        runners[f"xla:{cost}"] = program.with_gather_cost(cost)
    seconds = compare_latency(runners, images, repeats, warmup=2) if len(runners) > 1 else {
        name: 0.0 for name in runners}
    best_xla = min((name for name in seconds if name != "native"), key=seconds.get)
    gather_cost = float(best_xla.split(":", 1)[1])
    program.with_gather_cost(gather_cost)
    engine = "native" if native is not None and seconds["native"] < seconds[best_xla] else "xla"
    cache[key] = {"engine": engine, "modes": modes, "gather_cost": gather_cost,
                  "ms": {name: round(value * 1000, 4) for name, value in seconds.items()},
                  "tuned": time.strftime("%Y-%m-%d")}
    _write_cache(path, cache)
    return engine, modes, False


def _valid(entry, native):
    """Whether a cache entry is a choice this program can take."""
    return (isinstance(entry, dict) and entry.get("engine") in (("xla", "native") if native is not None else ("xla",))
            and isinstance(entry.get("modes"), dict) and all(mode in MODES for mode in entry["modes"].values())
            and isinstance(entry.get("gather_cost", 0.0), (int, float)))
