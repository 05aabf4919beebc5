"""Time per training step of a model with pruning masks against the same model without, in one process.

The masked model is the one the runner builds when the config has a `prune:` section (every convolution a
MaskedConv2D), pruned at 30% so the masks are real; both train through the session's own step on the same
in-memory batches, alternately. The ratio is masked / plain; the static-pruning issue asks for at most 1.05.

    .venv/bin/python benchmarks/masked_step.py [--model models/cifarnet_slim.yaml] [--batch 128] [--steps 20]
        [--repeats 5]
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train_step import batches, compare_steps, session_for  # noqa: E402

from mayo_lite.prune import prune_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/cifarnet_slim.yaml")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    plain = session_for(args.model, args.batch)
    masked = session_for(args.model, args.batch, ["prune.percent=0.3"])
    prune_model(masked.model, percent=0.3)
    images, labels = batches(plain, args.steps, args.batch)
    times = compare_steps({"plain": plain, "masked": masked}, images, labels, args.batch, args.repeats)
    plain_time, masked_time = times["plain"], times["masked"]
    print(f"model {args.model}, 30% kernel-pruned masks, batch {args.batch}, {args.steps} steps, "
          f"median of {args.repeats}")
    print(f"plain training step:   {plain_time * 1000:8.1f} ms")
    print(f"masked training step:  {masked_time * 1000:8.1f} ms")
    print(f"ratio masked / plain: {masked_time / plain_time:.3f}")


if __name__ == "__main__":
    main()
