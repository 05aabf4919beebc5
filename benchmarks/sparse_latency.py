"""Batch-1 CPU latency of FBS models run sparsely, against the dense model in Keras, folded and compiled, and under
TensorFlow Lite, for several densities: the figures of docs/performance.md.

For each model, one process builds the dense model and, per density, the gated model and the static network of
the gates' width (random weights with trained-looking batch-norm statistics: the work does not depend on the
values), checks the sparse outputs against Keras, and times every variant side by side (mayo_lite.sparse.benchmark):
the sparse path on the engine its tuning chose (printed), the static network on the same engine and under
TensorFlow Lite.

    .venv/bin/python benchmarks/sparse_latency.py [--models cifarnet vgg16 resnet18 mobilenet]
        [--densities 1.0 0.75 0.5 0.3] [--images 20] [--repeats 5] [--size 224]

M-CifarNet runs on 32×32×3 (CIFAR-10's shape), the others on --size×--size×3 (ImageNet's 224 by default).
"""

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from mayo_lite.config import Config  # noqa: E402
from mayo_lite.net import build_model, static_width, without_gates  # noqa: E402
from mayo_lite.sparse import SparseGatedModel  # noqa: E402
from mayo_lite.sparse.benchmark import measure, speedups, tflite_runner  # noqa: E402

CLASSES = {"cifarnet": 10, "cifarnet_slim": 10, "lenet5": 10}


def model_section(name, density):
    cfg = Config()
    cfg.load(f"models/gate/{name}.yaml")
    cfg.set("dataset", {"name": "benchmark", "task": {"num_classes": CLASSES.get(name, 1000)}})
    cfg.override(f"_gate.density={density}")
    return cfg.get("model")


def trained_looking(model, seed=0):
    """Batch-norm statistics and gate predictors like a trained network's: a fresh model's zero means, unit
    variances and identical gate biases would make every gate a tie."""
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        name = variable.path.rsplit("/", 1)[-1]
        shape = variable.shape
        values = {"moving_variance": lambda: rng.uniform(0.5, 2.0, shape),
                  "moving_mean": lambda: rng.normal(0.0, 0.3, shape),
                  "gate_bias": lambda: rng.uniform(0.5, 1.5, shape),
                  "gate_kernel": lambda: rng.normal(0.0, 0.1 / np.sqrt(shape[0]), shape)}.get(name)
        if values is not None:
            variable.assign(values().astype(np.float32))
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cifarnet", "vgg16", "resnet18", "mobilenet"])
    parser.add_argument("--densities", nargs="+", type=float, default=[1.0, 0.75, 0.5, 0.3])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--no-tflite", action="store_true", help="skip the TensorFlow Lite row")
    args = parser.parse_args()
    print(f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, "
          f"batch 1, median over {args.repeats} passes of {args.images} random images")
    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    header = (f"{'model':<10} {'density':>7} {'dense':>9} {'folded':>9} {'tflite':>9} {'gated':>9} {'sparse':>9} "
              f"{'static':>9} {'st.tfl':>9} {'×dense':>7} {'×folded':>8} {'×tflite':>8} {'sp/st':>6} {'engine':>7}"
              f"  max |sparse − gated|")
    print(header)
    for name in args.models:
        shape = (32, 32, 3) if name in CLASSES else (args.size, args.size, 3)
        rng = np.random.default_rng(0)
        images = [rng.random((1, *shape), dtype=np.float32) for _ in range(args.images)]
        dense = trained_looking(build_model(without_gates(model_section(name, 1.0)), shape))
        converted = None if args.no_tflite else tflite_runner(dense)  # once per model: VGG-16 takes a while
        for density in args.densities:
            section = model_section(name, density)
            gated = trained_looking(build_model(section, shape))
            narrow = static_width(section) if density < 1 else None
            static = trained_looking(build_model(narrow, shape)) if narrow is not None else None
            sparse = SparseGatedModel(gated)
            ms, differences = measure(dense, images, args.repeats, gated=gated, static=static,
                                      tflite=converted or False, sparse=sparse)
            ratios = speedups(ms)
            cells = " ".join(f"{ms[key]:9.2f}" if key in ms else f"{'-':>9}" for key in (
                "dense_ms", "dense_folded_ms", "tflite_ms", "gated_ms", "sparse_ms", "static_ms", "static_tflite_ms"))
            versus_tflite = f"{ratios['speedup_vs_tflite']:8.2f}" if "speedup_vs_tflite" in ratios else f"{'-':>8}"
            over_static = f"{ratios['sparse_over_static']:6.2f}" if "sparse_over_static" in ratios else f"{'-':>6}"
            print(f"{name:<10} {density:7.2f} {cells} {ratios['speedup']:7.2f} {ratios['speedup_vs_folded']:8.2f} "
                  f"{versus_tflite} {over_static} {sparse.engine:>7}  {differences['sparse vs Keras gated']:.1g}",
                  flush=True)


if __name__ == "__main__":
    main()
