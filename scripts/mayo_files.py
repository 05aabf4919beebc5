"""Runs `my <model> <dataset> info` for each model file of a Mayo checkout with the dataset file it was written for,
in one process, and prints one line per pair: the exit status, the files, and the MACs or the error line.

    .venv/bin/python scripts/mayo_files.py /path/to/mayo [name-filter ...]

A Mayo checkout: `git clone https://github.com/deep-fry/mayo` (its `models/` and `datasets/` folders). The pairs:
`lenet5*` with mnist, `cifarnet*` and the compact VGG with cifar10, `*cifar100*` with cifar100, YOLO with voc, every
other model with imagenet; `models/override/` holds overlays, not models, and is left out.
"""

import contextlib
import io
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def dataset_for(name):
    base = Path(name).name
    for marker, dataset in (("yolo", "voc"), ("lenet5", "mnist"), ("cifar100", "cifar100"), ("cifarnet", "cifar10"),
                            ("compact", "cifar10")):
        if marker in base:
            return dataset
    return "imagenet"


def main():
    if len(sys.argv) < 2 or not (Path(sys.argv[1]) / "models").is_dir():
        sys.exit("usage: scripts/mayo_files.py MAYO_CHECKOUT [NAME-FILTER ...] (a folder with models/ and datasets/)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from mayo_lite.cli import main as my
    root, filters = Path(sys.argv[1]), sys.argv[2:]
    models = sorted(path.relative_to(root / "models") for path in (root / "models").rglob("*.yaml")
                    if "override" not in path.relative_to(root / "models").parts)
    ran = total = 0
    for model in models:
        if filters and not any(text in str(model) for text in filters):
            continue
        dataset = dataset_for(model)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = my([str(root / "models" / model), str(root / "datasets" / f"{dataset}.yaml"), "info"])
        lines = [line for line in err.getvalue().splitlines() if line.startswith("my: ")]
        macs = [line for line in out.getvalue().splitlines() if " MACs (" in line and line.startswith("model ")]
        print(f"{status}  {model} + {dataset}: {(macs[-1] if status == 0 and macs else lines[-1] if lines else '')}",
              flush=True)
        total += 1
        ran += status == 0
        if "Traceback" in err.getvalue():
            print("    (a traceback was printed)", flush=True)
    print(f"{ran} of {total} pairs ran `info`")


if __name__ == "__main__":
    main()
