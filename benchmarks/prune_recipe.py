"""The reference static-pruning recipe on Fashion-MNIST M-CifarNet, with the `my` commands a user would type.

1. A dense M-CifarNet: trained here (`--dense-epochs`, 3 by default), or an existing checkpoint (`--dense PATH`).
2. Kernel-level pruning at `--percent` (0.3: the reference's `kernel_prune.py --percent 0.3`), which prints the
   reference's report and the accuracy before and after, optionally re-estimates the batch norms' statistics on
   `--recalibrate` training batches (beyond the reference), then one epoch of fine-tuning with
   trainers/finetune.yaml (SGD 0.001, momentum 0.9, weight decay 1e-4), then `eval` and `info`.

It prints the dense, pruned and fine-tuned top-1, the MACs that remain, and whether the fine-tuned model is within
0.3 points of the dense one (the static-pruning issue's bar). Runs in `--workdir`.

    .venv/bin/python benchmarks/prune_recipe.py [--workdir prune_recipe_run] [--dense PATH] [--percent 0.3]
"""

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from commands import effective_macs, evaluations, my, total_macs  # noqa: E402

DATA = ["datasets/fashion_mnist.yaml"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("prune_recipe_run"))
    parser.add_argument("--dense", type=Path, help="a dense M-CifarNet checkpoint (.npz) to start from")
    parser.add_argument("--dense-epochs", type=int, default=3)
    parser.add_argument("--percent", type=float, default=0.3)
    parser.add_argument("--finetune-epochs", type=float, default=1)
    parser.add_argument("--recalibrate", type=int, default=0,
                        help="training batches to re-estimate the batch norms on after pruning (0: the reference)")
    options = parser.parse_args()
    workdir = options.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    model = ["models/cifarnet.yaml", *DATA, "system.seed=0"]
    if options.dense is None:
        my(workdir, *model, "trainers/cifarnet.yaml", f"system.max_epochs={options.dense_epochs}", "train")
        dense = workdir / "checkpoints" / "cifarnet" / "fashion_mnist" / "latest.npz"
    else:
        dense = options.dense.resolve()
    output = my(workdir, *model, f"system.checkpoint.load={dense}", "eval", f"prune.percent={options.percent}",
                f"prune.recalibrate={options.recalibrate}", "prune", "trainers/finetune.yaml", f"system.max_epochs={options.finetune_epochs}",
                "reset-num-epochs", "train", "eval", "info")
    dense_top1, finetuned_top1 = evaluations(output)[0][0], evaluations(output)[-1][0]
    pruned_top1 = float(re.search(r"accuracy after pruning: +top1: ([\d.]+)%", output).group(1))
    ratio = float(re.search(r"Pruned ratio: ([\d.]+)", output).group(1))
    dense_macs, remaining = total_macs(output), effective_macs(output)

    print(f"\nKernel pruning, Fashion-MNIST, M-CifarNet ({dense})")
    print(f"  dense                               top1 {dense_top1:.2f}%  {dense_macs:,} MACs")
    print(f"  pruned {options.percent:.0%} (ratio {ratio:.4f})          top1 {pruned_top1:.2f}%")
    recalibrated = re.search(r"recalibrating the batch norms on (\d+) training images: top1: ([\d.]+)%", output)
    if recalibrated:
        print(f"  batch norms recalibrated ({recalibrated.group(1)} images) top1 {float(recalibrated.group(2)):.2f}%")
    print(f"  fine-tuned {options.finetune_epochs:g} epoch(s)             top1 {finetuned_top1:.2f}%  "
          f"{remaining:,} MACs ({dense_macs / remaining:.2f}× fewer)")
    print(f"  top-1 change after fine-tuning: {finetuned_top1 - dense_top1:+.2f} points "
          f"({'within' if dense_top1 - finetuned_top1 <= 0.3 else 'NOT within'} 0.3 points)")


if __name__ == "__main__":
    main()
