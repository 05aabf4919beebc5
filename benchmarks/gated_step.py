"""Time per training step of a gated (FBS) model against the same dense model, in one process.

Both are built from YAML (the dense model file and its gated variant under models/gate/), trained by the
session's own distributed step on the same in-memory batches, alternately, so drifting machine load hits both
alike. The ratio is gated / dense; the FBS issue asks for at most 1.10.

    .venv/bin/python benchmarks/gated_step.py [--model cifarnet] [--density 0.5] [--batch 128] [--steps 20]
        [--repeats 5]
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train_step import batches, compare_steps, session_for  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cifarnet", help="a model with a gated variant in models/gate/")
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dense = session_for(f"models/{args.model}.yaml", args.batch)
    gated = session_for(f"models/gate/{args.model}.yaml", args.batch, [f"_gate.density={args.density}"])
    images, labels = batches(dense, args.steps, args.batch)
    times = compare_steps({"dense": dense, "gated": gated}, images, labels, args.batch, args.repeats)
    dense_time, gated_time = times["dense"], times["gated"]
    print(f"model {args.model}, gated at density {args.density}, batch {args.batch}, {args.steps} steps, "
          f"median of {args.repeats}")
    print(f"dense training step:  {dense_time * 1000:8.1f} ms")
    print(f"gated training step:  {gated_time * 1000:8.1f} ms")
    print(f"ratio gated / dense: {gated_time / dense_time:.3f}")


if __name__ == "__main__":
    main()
