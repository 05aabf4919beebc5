"""Dynamic against static pruning on real data, over several seeds, one command: writes docs/results.md and
docs/results.png.

For the slim M-CifarNet on Fashion-MNIST (M-CifarNet with `--models cifarnet`, CIFAR-10 with `--dataset cifar10`
when TensorFlow Datasets has it locally), for each seed, with `my` command lines a user would type:

1. the dense baseline, the README main job (`trainers/cifarnet.yaml`, 5 epochs);
2. FBS, the documented recipe: the gated model loaded from the dense checkpoint and fine-tuned at density 1.0, 0.5,
   0.35 and 0.25 (1, 2, 1 and 1 epochs of `trainers/gate_finetune.yaml` with `trainers/distill.yaml`, the dense
   model the teacher);
3. network slimming from the same dense checkpoint: one epoch with the L1 penalty on the batch norms' scales
   (`models/override/netslim.yaml`, the twin of FBS's density-1.0 step), then pruned by |gamma| (the same share of
   every convolution's channels) to the MACs FBS reached at 0.5, 0.35 and 0.25 and fine-tuned, really narrower,
   with FBS's trainer, distillation and epochs at each budget;
4. dynamic on top of static: FBS on the network slimmed to FBS-0.5's MACs, at the largest density whose MACs are
   within FBS-0.35's and FBS-0.25's budgets (about 8× and 16× fewer than dense), with FBS's epochs.

Every choice is made on a validation split, the last 5,000 training images (`dataset.validate_from_train=5000`;
training keeps 55,000): the fine-tuning learning rate of FBS and of slimming, each chosen on seed 0 among
`RATES` by the validation top-1 at the first budget. The test split (10,000 images) is evaluated once per row, at
the end, for the table. Every model of seed 0 is then timed at batch 1 on the CPU, side by side in one process.

Each step is cached in `--workdir` by its command line, the config files it names and the code version (a digest
of `mayo_lite/` and `configs/`): an interrupted run continues where it stopped, and a changed mayo-lite reruns every
step, so the page comes from one code version. Latencies are cached with the checkpoints they timed (`--retime`
measures again; run it on an idle machine). The page is rewritten after each seed. `--quick` runs a small subset
(two seeds, a hundredth of an epoch per step, 500 test images) that a test runs. About 100 minutes on a 2-core CPU.

    .venv/bin/python benchmarks/results.py [--quick] [--workdir results_run] [--dataset fashion_mnist]
        [--models cifarnet_slim] [--seeds 0,1,2] [--retime] [--out docs]
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_page import DATASETS, MODELS, write  # noqa: E402
from results_steps import ROOT, Run, combined_chain, fbs_chain, row_session, slimming_chain  # noqa: E402

RATES = [0.03, 0.1]  # fine-tuning learning rates tried on the validation split (0.03: trainers/gate_finetune.yaml)
FULL = {"models": ["cifarnet_slim"], "seeds": [0, 1, 2], "dense_epochs": 5, "rates": RATES,
        "steps": [(1.0, 1), (0.5, 2), (0.35, 1), (0.25, 1)], "combined": [0.35, 0.25], "scale": 1.0,
        "overrides": ["dataset.validate_from_train=5000"], "test_batches": None, "test": "the 10,000 test images",
        "validate": "the last 5,000 training images", "images": 200, "repeats": 3, "engine": "auto",
        "settle": None, "in_process": False}
# Quick mode checks the page, not the figures: the native engine without timing it against XLA, no pauses, and each
# step's `my` command line run by the launcher's `main` in this process (TensorFlow started once, not twenty times).
QUICK = {"models": ["cifarnet_slim"], "seeds": [0, 1], "dense_epochs": 1, "rates": RATES,
         "steps": [(1.0, 1), (0.5, 1), (0.25, 1)], "combined": [0.25], "scale": 0.01,
         "overrides": ["dataset.validate_from_train=500"], "test_batches": 8, "test": "the first 512 test images",
         "validate": "the last 500 training images", "images": 4, "repeats": 1,
         "engine": "native", "settle": 0.0, "in_process": True}


def dense(run, model, seed):
    directory = f"{model}/s{seed}/dense"
    record = run.step(f"{model}/s{seed}/dense", [
        f"models/{model}.yaml", *run.data, "trainers/cifarnet.yaml", f"system.seed={seed}",
        f"system.checkpoint.path={directory}", run.epochs(run.mode["dense_epochs"]), "train", "eval", "info"],
        directory)
    record["checkpoint"] = str(run.checkpoint(directory))
    return record


def slimming(run, model, seed, start, fbs, rate):
    """Network slimming's L1 epoch, then its chain at the MACs of FBS's steps below density 1.0."""
    directory = f"{model}/s{seed}/slimming_l1_lr{rate}"
    l1 = run.step(f"{model}/s{seed}/slimming_l1/lr{rate}", [
        f"models/{model}.yaml", "models/override/netslim.yaml", *run.data, "trainers/gate_finetune.yaml",
        "trainers/distill.yaml", f"train.distill.teacher={start}", f"train.learning_rate._initial={rate}",
        f"system.seed={seed}", f"system.checkpoint.load={start}", f"system.checkpoint.path={directory}",
        run.epochs(run.mode["steps"][0][1]), "reset-num-epochs", "train", "eval", "info"], directory)
    l1.update(density_setting=1.0, checkpoint=str(run.checkpoint(directory)), epochs=run.mode["steps"][0][1])
    budgets = [((record["density_setting"], record["epochs"]), record["effective_macs"]) for record in fbs[1:]]
    return [l1, *slimming_chain(run, model, seed, run.checkpoint(directory), budgets, start, rate,
                                name=f"slimming_lr{rate}")]


def choose(run, chains, key):
    """The rate whose chain scores the best validation top-1 at its first step below density 1.0."""
    scores = {rate: chain[1]["val_top1"] for rate, chain in chains.items()}
    best = max(scores, key=lambda rate: (scores[rate], -rate))
    run.choices[key] = {"scores": scores, "chosen": best}
    return best


def seed_rows(run, model, seed, rates):
    """Every step of one seed; returns {method: [records]}. On the first seed, tries each rate of the mode on
    the validation split first, and fixes `rates` (method -> chosen rate) for the seeds after it."""
    start = dense(run, model, seed)
    if "fbs" not in rates:
        head = run.mode["steps"][:2]
        tried = {rate: fbs_chain(run, model, seed, start["checkpoint"], rate, f"fbs_lr{rate}", head)
                 for rate in run.mode["rates"]}
        rates["fbs"] = choose(run, tried, "FBS")
    fbs = fbs_chain(run, model, seed, start["checkpoint"], rates["fbs"], f"fbs_lr{rates['fbs']}")
    if "slimming" not in rates:
        first = fbs[:2]
        tried = {rate: slimming(run, model, seed, start["checkpoint"], first, rate) for rate in run.mode["rates"]}
        rates["slimming"] = choose(run, tried, "network slimming")
    slim = slimming(run, model, seed, start["checkpoint"], fbs, rates["slimming"])
    half = next(record for record in slim if record["density_setting"] == run.mode["steps"][1][0])
    budgets = [((record["density_setting"], record["epochs"]), record["effective_macs"]) for record in fbs
               if record["density_setting"] in run.mode["combined"]]
    combined = combined_chain(run, model, seed, half, budgets, start["checkpoint"], rates["fbs"])
    start.update(density_setting=None, epochs=run.mode["dense_epochs"])
    return {"dense": [start], "fbs": fbs,
            "slimming": slim, "combined": combined}


def test_scores(run, rows):
    """Top-1 and top-5 of every row on the test split, evaluated once in this process and kept in its record."""
    for records in rows.values():
        for record in records:
            if "test_top1" in record:
                continue
            current = row_session(run, record)
            result = current.loops.evaluate(progress=False, split="test", max_batches=run.mode["test_batches"])
            record.update(test_top1=round(result["top1"] * 100, 2), test_top5=round(result["top5"] * 100, 2),
                          test_density=result.get("density"))
            run.save()


def timed(run, rows, retime):
    """Batch-1 latency of seed 0's models, side by side in this process: dense folded (XLA) and in TensorFlow
    Lite, FBS and slimming + FBS on the sparse path, slimmed networks folded (XLA) and in TensorFlow Lite."""
    cache = run.workdir / "latency.json"
    checkpoints = sorted(record["checkpoint"] for records in rows.values() for record in records)
    if cache.is_file() and not retime:
        saved = json.loads(cache.read_text())
        if saved["code"] == run.version and saved["checkpoints"] == checkpoints:
            return saved
    import gc
    import numpy as np
    from mayo_lite.sparse import SparseGatedModel
    from mayo_lite.sparse.benchmark import tflite_runner
    from mayo_lite.sparse.latency import compare_latency
    from mayo_lite.sparse.program import InferenceProgram
    runners, images, engine = {}, None, run.mode["engine"]
    for method, records in rows.items():
        for record in records:
            if method == "slimming" and record["density_setting"] == 1.0:
                continue  # the L1 epoch's network is the dense one
            current = row_session(run, record)
            if images is None:
                batches = current.pipeline("test").unbatch().take(run.mode["images"])
                images = [image[None].numpy().astype(np.float32) for image, *_ in batches]
            name = f"{method} {record['density_setting']}"
            if method in ("fbs", "combined"):
                runners[name] = SparseGatedModel(current.model, engine=engine)
            else:
                runners[f"{name} XLA"] = InferenceProgram(current.model, engine=engine)
                runners[f"{name} TFLite"] = tflite_runner(current.model)
    gc.collect()
    seconds = compare_latency(runners, images, run.mode["repeats"], settle=run.mode["settle"])
    saved = {"code": run.version, "checkpoints": checkpoints, "images": len(images), "repeats": run.mode["repeats"],
             "measured": datetime.datetime.now().isoformat(timespec="minutes"),
             "ms": {name: value * 1000 for name, value in seconds.items()}}
    cache.write_text(json.dumps(saved, indent=1))
    return saved


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "results_run")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="fashion_mnist")
    parser.add_argument("--quick", action="store_true", help="a small subset, for tests")
    parser.add_argument("--out", type=Path, help="where results.md and .png go (docs/, or the workdir with --quick)")
    parser.add_argument("--seeds", help="comma-separated seeds (the first one chooses the rates and is timed)")
    parser.add_argument("--models", help="comma-separated, from " + ", ".join(MODELS))
    parser.add_argument("--retime", action="store_true", help="measure the latencies again")
    options = parser.parse_args()
    mode = dict(QUICK if options.quick else FULL)
    models = options.models.split(",") if options.models else mode["models"]
    unknown = [name for name in models if name not in MODELS]
    if unknown:
        parser.error(f"--models: unknown model {unknown[0]!r} (known: {', '.join(MODELS)})")
    try:
        seeds = [int(seed) for seed in options.seeds.split(",")] if options.seeds else mode["seeds"]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers, got {options.seeds!r}")
    if options.dataset == "cifar10":
        import tensorflow_datasets as tfds
        if not tfds.builder("cifar10").is_prepared():
            parser.error("--dataset cifar10: TensorFlow Datasets has no prepared cifar10 in "
                         f"{tfds.core.constants.DATA_DIR} (or TFDS_DATA_DIR); prepare it where the internet is "
                         "reachable: python -m tensorflow_datasets.scripts.download_and_prepare --datasets=cifar10")
    workdir = options.workdir.resolve() / options.dataset
    workdir.mkdir(parents=True, exist_ok=True)
    out = (options.out or (workdir if options.quick else ROOT / "docs")).resolve()
    command = "python benchmarks/results.py " + " ".join(sys.argv[1:])
    run = Run(workdir, options.dataset, mode)
    run.choices = {}
    for model in models:
        rates, seeded, latency = {}, {}, None
        for seed in seeds:
            seeded[seed] = seed_rows(run, model, seed, rates)
            test_scores(run, seeded[seed])
            if latency is None:
                latency = timed(run, seeded[seed], options.retime)
            write(run, model, options.dataset, seeded, latency, out, command)


if __name__ == "__main__":
    main()
