"""The FBS recipe on Fashion-MNIST M-CifarNet, end to end, with the `my` commands a user would type.

1. Train the dense M-CifarNet (`--dense-epochs`, 3 by default) and evaluate it.
2. Switch to the gated model, loading the dense checkpoint by model name (`system.checkpoint.load=cifarnet`),
   evaluate at density 1.0 before any fine-tuning, then fine-tune with trainers/gate_finetune.yaml at density
   1.0, 0.75 and 0.5 (1, 1 and 2 epochs), evaluating after each step.
3. `info` for the dense model and, after `eval`, for the gated one (densities measured on the validation set).

It prints the top-1 of every step, the MACs, and the two figures the FBS issue asks for: the gated model's top-1
at density 0.5 against the dense one (within 1.0 point) and the MAC reduction (at least 3×). Runs in
`--workdir` (checkpoints stay there); `--reuse-dense` skips step 1 when its checkpoint is already there.

    .venv/bin/python benchmarks/fbs_recipe.py [--workdir fbs_recipe_run] [--dense-epochs 3] [--reuse-dense]

Takes about 90 minutes on a 2-core CPU.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from commands import effective_macs, evaluations, my, total_macs  # noqa: E402

DATA = ["datasets/fashion_mnist.yaml"]
STAGES = [(1.0, 1), (0.75, 1), (0.5, 2)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("fbs_recipe_run"))
    parser.add_argument("--dense-epochs", type=int, default=3)
    parser.add_argument("--reuse-dense", action="store_true")
    options = parser.parse_args()
    workdir = options.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    dense = ["models/cifarnet.yaml", *DATA, "trainers/cifarnet.yaml", "system.seed=0"]
    dense_checkpoint = workdir / "checkpoints" / "cifarnet" / "fashion_mnist" / "latest.npz"
    if options.reuse_dense and dense_checkpoint.is_file():
        output = my(workdir, *dense, "eval")
    else:
        output = my(workdir, *dense, f"system.max_epochs={options.dense_epochs}", "train", "eval")
    dense_top1 = evaluations(output)[-1][0]

    recipe = ["models/gate/cifarnet.yaml", *DATA, "trainers/gate_finetune.yaml", "system.seed=0",
              "system.checkpoint.load=cifarnet", "_gate.density=1.0", "eval"]
    for density, epochs in STAGES:
        recipe += [f"_gate.density={density}", f"system.max_epochs={epochs}", "reset-num-epochs", "train", "eval"]
    gated = evaluations(my(workdir, *recipe))

    dense_info = my(workdir, *dense, "info")
    gated_info = my(workdir, "models/gate/cifarnet.yaml", *DATA, "system.checkpoint.load=latest",
                    "_gate.density=0.5", "eval", "info")
    dense_macs = total_macs(dense_info)
    effective = effective_macs(gated_info)

    print("\nFBS recipe, Fashion-MNIST, M-CifarNet")
    print(f"  dense ({options.dense_epochs} epochs)             top1 {dense_top1:.2f}%  {dense_macs:,} MACs")
    print(f"  gated, density 1.0, no fine-tuning  top1 {gated[0][0]:.2f}%  (density {gated[0][1]:.2f}%)")
    for (density, epochs), (top1, measured) in zip(STAGES, gated[1:]):
        print(f"  gated, density {density}, {epochs} epoch(s)     top1 {top1:.2f}%  (density {measured:.2f}%)")
    final = gated[-1][0]
    print(f"  density 0.5: {effective:,} effective MACs, {dense_macs / effective:.2f}× fewer than dense")
    print(f"  top-1 change at density 0.5: {final - dense_top1:+.2f} points "
          f"({'within' if dense_top1 - final <= 1.0 else 'NOT within'} 1.0 point); MAC reduction "
          f"{'at least' if dense_macs / effective >= 3 else 'BELOW'} 3×")


if __name__ == "__main__":
    main()
