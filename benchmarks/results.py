"""Dynamic against static pruning on real data, one command: writes docs/results.md and docs/results.png.

For each model (the slim M-CifarNet, then M-CifarNet) on Fashion-MNIST (or CIFAR-10 with `--dataset cifar10` when
TensorFlow Datasets has it locally), with `my` command lines a user would type:

1. the dense baseline, trained from scratch (`trainers/cifarnet.yaml`, seed `--seed`);
2. FBS, the documented recipe: the gated model loaded from the dense checkpoint, fine-tuned at density 1.0, 0.75,
   0.5 and 0.3 (1, 1, 2 and 2 epochs of `trainers/gate_finetune.yaml`, with `trainers/distill.yaml`: distillation
   from the dense model); and, as an ablation, the same steps without distillation;
3. kernel-level pruning and network slimming at the MAC budgets FBS reached (each step pruned until its MACs are at
   most FBS's at that step, searched on the pruned model itself), fine-tuned with the same trainer, distillation
   and epochs, step after step as FBS is. Network slimming trains its own dense model with the L1 penalty on the
   batch norms' scales (`models/override/netslim.yaml`, the same epochs as the dense baseline), prunes channels by
   |gamma| (the same share in every convolution), and fine-tunes the really narrower network (channels removed,
   not masked);
4. kernel pruning at 30% and one epoch of fine-tuning (batch norms recalibrated), with the reference's
   `trainers/finetune.yaml` and with the documented `trainers/prune_finetune.yaml`;
5. every model evaluated on the 10,000 test images, then timed at batch 1 on the CPU, side by side in this process:
   the dense model folded and compiled by XLA, FBS through its sparse path (only the active channels computed),
   kernel-pruned models folded (masks multiplied in: a dense runtime gains nothing from zeros), slimmed models as
   the narrower networks they are.

Steps already finished in `--workdir` (same command line, same contents of the config files it names) are not run
again: an interrupted run continues where it stopped, and a second run re-measures only the latencies (run it on an
idle machine: the latency of a model is only comparable to that of others timed in the same quiet process). The
page is rewritten after each model. `--quick` runs a small subset (the slim model, densities 1.0 and 0.5, a hundredth
of an epoch per step, 500 test images) that a test runs; it writes into the workdir unless `--out` is given.
About 90 minutes on a 2-core CPU in full.

    .venv/bin/python benchmarks/results.py [--quick] [--workdir results_run] [--dataset fashion_mnist]
        [--models cifarnet_slim,cifarnet] [--seed 0] [--out docs]
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EVAL = re.compile(r"^top1: ([\d.]+)%, top5: ([\d.]+)%(?:, density: ([\d.]+)%)?$", re.MULTILINE)
MODELS = {"cifarnet_slim": "slim M-CifarNet", "cifarnet": "M-CifarNet"}
DATASETS = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
# The FBS recipe: (density, epochs) per step.
FULL = {"models": ["cifarnet_slim", "cifarnet"], "ablation": ["cifarnet_slim"],
        "test": "all 10,000 test images", "dense_epochs": {"cifarnet_slim": 5, "cifarnet": 3},
        "steps": [(1.0, 1), (0.75, 1), (0.5, 2), (0.3, 2)], "scale": 1.0, "overrides": [], "images": 200,
        "repeats": 3, "recalibrate": 100, "engine": "auto", "settle": None}
# Quick mode checks the page, not the figures: the native engine without timing it against XLA, no pauses.
QUICK = {"models": ["cifarnet_slim"], "ablation": ["cifarnet_slim"], "test": "the first 500 test images",
         "dense_epochs": {"cifarnet_slim": 1}, "steps": [(1.0, 1), (0.5, 1)], "scale": 0.01,
         "overrides": ["dataset.num_examples_per_epoch.validate=500"], "images": 5, "repeats": 1, "recalibrate": 2,
         "engine": "native", "settle": 0.0}
METHODS = {"dense": "dense", "fbs": "FBS (distilled)", "fbs_plain": "FBS, no distillation",
           "kernel": "kernel pruning", "slimming": "network slimming", "kernel30": "kernel 30%, reference fine-tuning",
           "kernel30_recipe": "kernel 30%, documented recipe"}


def fingerprint(arguments):
    """A digest of the config files a command line names and those they import: a changed trainer runs its steps
    again (a change of mayo-lite's code does not)."""
    import yaml
    digest, seen = hashlib.sha256(), set()

    def add(path):
        if path in seen or not path.is_file():
            return
        seen.add(path)
        text = path.read_text()
        digest.update(text.encode())
        imports = (yaml.safe_load(text) or {}).get("_import") or []
        for name in [imports] if isinstance(imports, str) else imports:
            add((path.parent / name).resolve())
    for name in arguments:
        if name.endswith(".yaml"):
            add((ROOT / "configs" / name).resolve())
    return digest.hexdigest()[:16]


class Run:
    """The workdir, its record of finished steps, and the `my` command lines."""

    def __init__(self, workdir, dataset, mode, seed):
        self.workdir, self.data, self.mode, self.seed = workdir, [f"datasets/{dataset}.yaml"], mode, seed
        self.record_path = workdir / "steps.json"
        self.record = json.loads(self.record_path.read_text()) if self.record_path.is_file() else {}

    def epochs(self, epochs):
        return f"system.max_epochs={epochs * self.mode['scale']:g}"

    def step(self, key, arguments, directory=None):
        """Runs `my ARGUMENTS` unless step `key` finished with the same arguments; returns its record. A step that
        did not finish starts again from its inputs (its checkpoint `directory` is removed first)."""
        if self.done(key, arguments):
            print(f"[{key}] done before ({self.record[key]['finished']}), not run again", flush=True)
            return self.record[key]
        arguments = [*arguments, *self.mode["overrides"]]
        if directory is not None:
            shutil.rmtree(self.workdir / directory, ignore_errors=True)
        print(f"[{key}] $ my {' '.join(arguments)}", flush=True)
        started = time.monotonic()
        result = subprocess.run([str(ROOT / "my"), *arguments], cwd=self.workdir, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            sys.stderr.write(result.stderr[-3000:])
            sys.exit(f"results: step {key} failed (status {result.returncode}): my {' '.join(arguments)}")
        evaluations = EVAL.findall(result.stdout)
        done = {"command": arguments, "configs": fingerprint(arguments),
                "seconds": round(time.monotonic() - started, 1),
                "finished": datetime.datetime.now().isoformat(timespec="seconds")}
        if evaluations:
            top1, top5, density = evaluations[-1]
            done.update(top1=float(top1), top5=float(top5), density=float(density) / 100 if density else None)
        for pattern, name in ((r"([\d,]+) MACs \(", "macs"), (r"effective ([\d,]+) MACs", "effective_macs")):
            found = re.findall(pattern, result.stdout)
            if found:
                done[name] = int(found[-1].replace(",", ""))
        print(f"[{key}] {done.get('top1', '-')}% top-1, {done['seconds']:.0f} s", flush=True)
        self.record[key] = done
        self.save()
        return done

    def done(self, key, arguments):
        """Whether step `key` finished with these arguments (the mode's overrides added) and the config files they
        name held what they hold now."""
        record = self.record.get(key)
        return (record is not None and record["command"] == [*arguments, *self.mode["overrides"]]
                and record.get("configs") == fingerprint(arguments))

    def save(self):
        temporary = self.record_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.record, indent=1))
        os.replace(temporary, self.record_path)


def checkpoint(run, directory):
    return run.workdir / directory / "latest.npz"


def session(run, files, load, overrides=()):
    """A mayo-lite session of `files` with checkpoint `load`, in this process (for searches and timing)."""
    from mayo_lite.config import Config
    from mayo_lite.session.session import Session
    cfg = Config()
    for name in files:
        cfg.load(str(ROOT / "configs" / name))
    for override in [f"system.checkpoint.load={load}", *overrides]:
        cfg.override(override)
    return Session(cfg)


def search(model, budget, cost, **prune):
    """The smallest `percent` (to 1/1000) whose pruning of `model` costs at most `budget` MACs; the model is left
    pruned at it. Masks and batch norms are restored between tries."""
    from mayo_lite.prune import prune_model
    saved = [(variable, variable.numpy()) for variable in model.variables]

    def attempt(percent):
        for variable, value in saved:
            variable.assign(value)
        prune_model(model, percent=percent, **prune)
        return cost(model)
    low, high = 0.0, 0.999
    if attempt(high) > budget:
        return high, cost(model)  # as far as pruning goes
    while high - low > 1e-3:
        middle = (low + high) / 2
        if attempt(middle) <= budget:
            high = middle
        else:
            low = middle
    percent = math.ceil(high * 1e4) / 1e4  # as the command line will give it (rounded up: within the budget)
    return percent, attempt(percent)


def fbs(run, model, dense, distill):
    """The FBS recipe's steps; returns their records."""
    key = "fbs" if distill else "fbs_plain"
    base = [f"models/gate/{model}.yaml", *run.data, "trainers/gate_finetune.yaml",
            *(["trainers/distill.yaml", f"train.distill.teacher={dense}"] if distill else []),
            f"system.seed={run.seed}"]
    records, previous = [], dense
    for density, epochs in run.mode["steps"]:
        directory = f"{model}/{key}_{density}"
        records.append(run.step(f"{model}/{key}/{density}", [
            *base, f"system.checkpoint.load={previous}", f"system.checkpoint.path={directory}",
            f"_gate.density={density}", run.epochs(epochs), "reset-num-epochs", "train", "eval", "info"],
            directory) | {"density_setting": density})
        previous = checkpoint(run, directory)
    return records


def _effective(model):
    from mayo_lite.net import model_cost
    return model_cost(model).total["effective_macs"]


def static(run, model, start, budgets, granularity, teacher):
    """Kernel pruning (`granularity` kernel) or network slimming (channel) step after step down to `budgets`
    ((density, epochs) of the FBS step, MACs); returns their records. Each step's percent is searched on the
    previous step's checkpoint (deterministic, so a rerun finds the same one)."""
    from mayo_lite.net import narrow_model
    from mayo_lite.weights.checkpoint import CheckpointStore
    key = "kernel" if granularity == "kernel" else "slimming"
    files = [f"models/{model}.yaml", *run.data]
    # Network slimming prunes the same share of channels in every convolution (`scope: layer`): one global threshold
    # on |gamma| emptied whole layers of M-CifarNet (every channel of conv1-conv7 at once), a dead network at any
    # MAC budget.
    prune = {"granularity": granularity} | ({"layers": ["conv*"], "scope": "layer"} if granularity == "channel"
                                            else {})
    records, previous, widths = [], start, []
    channels = sum(layer.filters for layer in session(run, files, start).model.layers
                   if hasattr(layer, "filters") and layer.name != "logits")
    for (density, epochs), budget in budgets:
        directory = f"{model}/{key}_{density}"
        current = session(run, files, previous, [*widths, f"prune.granularity={granularity}"])

        def narrowed(pruned):
            narrow = narrow_model(pruned, current.model_spec, current.input_shape(), origin=current.cfg.origin)
            return _effective(narrow if narrow is not None else pruned)
        percent, macs = search(current.model, budget, _effective if granularity == "kernel" else narrowed, **prune)
        tail = [f"system.checkpoint.path={directory}", "trainers/gate_finetune.yaml", "trainers/distill.yaml",
                f"train.distill.teacher={teacher}", f"system.seed={run.seed}", run.epochs(epochs),
                "reset-num-epochs", "train", "eval", "info"]
        if granularity == "kernel":
            arguments = [*files, f"system.checkpoint.load={previous}", f"prune.percent={percent}",
                         f"prune.recalibrate={run.mode['recalibrate']}", "prune", *tail]
            record = run.step(f"{model}/{key}/{density}", arguments, directory)
        else:
            # The search left the model pruned at `percent`: made narrower and saved as a checkpoint of the narrow
            # network, which `my` fine-tunes with the widths on its command line.
            narrow = narrow_model(current.model, current.model_spec, current.input_shape(), origin=current.cfg.origin)
            widths = [f"model.layers.{layer.name}.num_outputs={layer.filters}" for layer in narrow.layers
                      if hasattr(layer, "filters") and layer.name != "logits"]
            path = run.workdir / directory / "narrowed.npz"
            arguments = [*files, *widths, f"system.checkpoint.load={path}", *tail]
            if not run.done(f"{model}/{key}/{density}", arguments):
                shutil.rmtree(run.workdir / directory, ignore_errors=True)
                CheckpointStore(str(path.parent)).save(
                    "narrowed", {f"model/{v.path}": v.numpy() for v in narrow.variables
                                 if "seed_generator" not in v.path},
                    0.0, {"model": model, "dataset": current.dataset.get("name")})
            record = run.step(f"{model}/{key}/{density}", arguments)
        record.update(percent=percent, budget=budget, searched_macs=macs, density_setting=density, widths=widths,
                      epochs=epochs)
        if widths:  # the share of the dense model's channels removed so far
            record["channels_pruned"] = 1 - sum(int(width.split("=")[1]) for width in widths) / channels
        run.save()
        records.append(record)
        previous = checkpoint(run, directory)
    return records


def macs(record):
    return record.get("effective_macs") or record["macs"]


def latency(run, model, rows):
    """Batch-1 CPU latency of every row's model, side by side in this process, on test images."""
    import numpy as np
    from mayo_lite.net import build_model
    from mayo_lite.session.actions.export_model import copy_folded
    from mayo_lite.sparse import SparseGatedModel
    from mayo_lite.sparse.latency import compare_latency
    from mayo_lite.sparse.program import InferenceProgram
    runners, images = {}, None
    for row in rows:
        record = row["record"]
        arguments = [a for a in record["command"] if a.endswith(".yaml")]
        overrides = [a for a in record["command"] if a.startswith("model.layers.") or a.startswith("_gate.")]
        current = session(run, arguments, row["checkpoint"], overrides)
        if images is None:
            batches = current.pipeline("validate").unbatch().take(run.mode["images"])
            images = [image[None].numpy().astype(np.float32) for image, *_ in batches]
        if row["method"].startswith("fbs"):
            runners[row["id"]] = SparseGatedModel(current.model, engine=run.mode["engine"])
        elif current.masked:
            plain = build_model(current.model_spec, current.input_shape(), origin=current.cfg.origin, masked=False)
            copy_folded(current.model, plain)
            runners[row["id"]] = InferenceProgram(plain, engine=run.mode["engine"])
        else:
            runners[row["id"]] = InferenceProgram(current.model, engine=run.mode["engine"])
    import gc
    gc.collect()
    seconds = compare_latency(runners, images, run.mode["repeats"], settle=run.mode["settle"])
    for row in rows:
        row["latency_ms"] = seconds[row["id"]] * 1000


def family(run, model):
    """Every step of one model; returns the table's rows. The steps that do not depend on the FBS recipe come first."""
    dense_epochs = run.mode["dense_epochs"][model]
    base = [f"models/{model}.yaml", *run.data, "trainers/cifarnet.yaml", f"system.seed={run.seed}"]
    dense = run.step(f"{model}/dense", [*base, run.epochs(dense_epochs), "train", "eval", "info"])
    dense_checkpoint = run.workdir / "checkpoints" / model / run.data[0].split("/")[1][:-5] / "latest.npz"
    rows = [{"method": "dense", "setting": "", "record": dense, "checkpoint": dense_checkpoint,
             "epochs": dense_epochs}]
    # Kernel pruning at 30% and one epoch, batch norms recalibrated: the reference's fine-tuning, and the documented
    # recipe's.
    for method, trainer in (("kernel30", "finetune"), ("kernel30_recipe", "prune_finetune")):
        record = run.step(f"{model}/{method}", [
            f"models/{model}.yaml", *run.data, f"system.checkpoint.load={dense_checkpoint}",
            f"system.checkpoint.path={model}/{method}", "prune.percent=0.3",
            f"prune.recalibrate={run.mode['recalibrate']}", "prune", f"trainers/{trainer}.yaml", run.epochs(1),
            "reset-num-epochs", "train", "eval", "info"], f"{model}/{method}")
        rows.append({"method": method, "setting": f"30% of kernels, trainers/{trainer}.yaml", "record": record,
                     "epochs": 1, "checkpoint": checkpoint(run, f"{model}/{method}")})
    slimming = run.step(f"{model}/slimming_dense", [
        *base, "models/override/netslim.yaml", f"system.checkpoint.path={model}/slimming_dense",
        run.epochs(dense_epochs), "train", "eval", "info"])
    rows.append({"method": "slimming", "setting": "L1-trained dense", "record": slimming, "epochs": dense_epochs,
                 "checkpoint": checkpoint(run, f"{model}/slimming_dense")})

    steps = run.mode["steps"]
    cumulative = [sum(epochs for _, epochs in steps[:index + 1]) for index in range(len(steps))]
    fbs_rows = []
    for (density, _), record, epochs in zip(steps, fbs(run, model, dense_checkpoint, True), cumulative):
        fbs_rows.append({"method": "fbs", "setting": f"density {density}", "record": record, "epochs": epochs,
                         "checkpoint": checkpoint(run, f"{model}/fbs_{density}")})
    rows += fbs_rows
    # The static chains prune to the MACs FBS reached below density 1.0, each step with FBS's epochs up to it (the
    # first one's include the density-1.0 step's).
    lowered = [row for row in fbs_rows if row["record"]["density_setting"] < 1.0]
    budgets = [((row["record"]["density_setting"], row["epochs"] - previous), macs(row["record"]))
               for row, previous in zip(lowered, [0] + [r["epochs"] for r in lowered[:-1]])]
    for method, granularity, start in (("kernel", "kernel", dense_checkpoint),
                                       ("slimming", "channel", checkpoint(run, f"{model}/slimming_dense"))):
        for record, twin in zip(static(run, model, start, budgets, granularity, dense_checkpoint), lowered):
            share = record.get("channels_pruned", record["percent"])
            rows.append({"method": method, "setting": f"{share:.1%} of "
                         f"{'kernels' if method == 'kernel' else 'channels'}", "record": record,
                         "epochs": twin["epochs"], "checkpoint": checkpoint(run, f"{model}/{method}_"
                                                                              f"{record['density_setting']}")})
    if model in run.mode["ablation"]:
        for (density, _), record, epochs in zip(steps, fbs(run, model, dense_checkpoint, False), cumulative):
            rows.append({"method": "fbs_plain", "setting": f"density {density}", "record": record,
                         "epochs": epochs, "checkpoint": checkpoint(run, f"{model}/fbs_plain_{density}")})
    for index, row in enumerate(rows):
        row["id"] = f"{row['method']}-{index}"
    latency(run, model, rows)
    return rows


def machine():
    import tensorflow as tf
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} CPU cores ({cpu}), no GPU used, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}")


def _short(row):
    """A point's label on the figure: the density or the share pruned."""
    if row["method"] in ("fbs", "fbs_plain"):
        return row["setting"].split()[-1]
    return "" if row["method"] == "dense" or "dense" in row["setting"] else row["setting"].split()[0]


def figure(results, dataset, path, test):
    """Top-1 against MACs (left) and against measured latency (right), one line per method, a row per model. The
    dense model is a dotted line; the top-1 axis starts at most 8 points below dense, and a point further down is
    drawn on the axis' floor with its value written beside it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    styles = {"fbs": ("tab:red", "o", (5, 4)), "fbs_plain": ("tab:orange", "s", (5, -11)),
              "kernel": ("tab:blue", "^", (-34, 5)), "slimming": ("tab:green", "D", (5, -11)),
              "kernel30": ("tab:purple", "v", (5, 4)), "kernel30_recipe": ("tab:brown", "P", (5, -11))}
    fig, axes = plt.subplots(len(results), 2, figsize=(15, 5.2 * len(results)), squeeze=False)
    for (model, rows), (left, right) in zip(results.items(), axes):
        dense = next(row for row in rows if row["method"] == "dense")
        top = max(row["record"]["top1"] for row in rows) + 0.4
        floor = max(min(row["record"]["top1"] for row in rows) - 0.5, dense["record"]["top1"] - 8)
        for axis, x in ((left, lambda row: macs(row["record"]) / 1e6), (right, lambda row: row["latency_ms"])):
            axis.axhline(dense["record"]["top1"], color="black", linestyle=":", linewidth=1)
            axis.plot([x(dense)], [dense["record"]["top1"]], marker="*", markersize=12, color="black", linestyle="",
                      label=f"dense ({dense['record']['top1']:.2f}%)")
            for method, (color, marker, offset) in styles.items():
                chosen = sorted((row for row in rows if row["method"] == method and "dense" not in row["setting"]),
                                key=lambda row: macs(row["record"]))
                if not chosen:
                    continue
                ys = [max(row["record"]["top1"], floor + 0.15) for row in chosen]
                axis.plot([x(row) for row in chosen], ys, marker=marker, color=color, label=METHODS[method],
                          linestyle="-" if len(chosen) > 1 else "", alpha=0.9)
                for row, y in zip(chosen, ys):
                    text = _short(row) + (f" ({row['record']['top1']:.1f}%, off scale)"
                                          if row["record"]["top1"] < floor else "")
                    below = row["record"]["top1"] < floor
                    axis.annotate(text, (x(row), y), textcoords="offset points", xytext=(6, 3) if below else offset,
                                  fontsize=7, color=color)
            axis.set_ylim(floor, top)
            axis.set_ylabel(f"top-1 on {test} (%)")
            axis.grid(True, alpha=0.3)
        right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="method (label: density or "
                     "share pruned)", title_fontsize=8)
        left.set_xlabel("MACs per image (millions; FBS at measured densities, gates included)")
        right.set_xlabel("batch-1 CPU latency (ms per image, median; FBS on its sparse path)")
        left.set_title(f"{MODELS[model]} on {DATASETS[dataset]}: top-1 against MACs")
        right.set_title(f"{MODELS[model]} on {DATASETS[dataset]}: top-1 against measured latency")
    fig.tight_layout()
    temporary = path.with_name(f".{path.name}")
    fig.savefig(temporary, dpi=110, format="png")
    plt.close(fig)
    os.replace(temporary, path)


def table(model, rows):
    dense = next(row for row in rows if row["method"] == "dense")
    base_top1, base_macs, base_ms = dense["record"]["top1"], macs(dense["record"]), dense["latency_ms"]
    lines = [f"### {MODELS[model]}", "",
             "| method | setting | top-1 | Δ top-1 | top-5 | MACs / image | fewer MACs | latency | speed-up "
             "| epochs¹ |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = list(METHODS)
    for row in sorted(rows, key=lambda row: order.index(row["method"])):  # stable: steps in order within a method
        record = row["record"]
        lines.append(
            f"| {METHODS[row['method']]} | {row['setting']} | {record['top1']:.2f}% | "
            f"{record['top1'] - base_top1:+.2f} | {record['top5']:.2f}% | {macs(record):,} | "
            f"{base_macs / macs(record):.2f}× | {row['latency_ms']:.3f} ms | {base_ms / row['latency_ms']:.2f}× | "
            f"{row['epochs']:g} |")
    return lines


def verdicts(model, rows):
    """The goals, checked on the numbers above."""
    dense = next(row for row in rows if row["method"] == "dense")["record"]
    found = []
    half = [row for row in rows if row["method"] == "fbs" and row["setting"] == "density 0.5"]
    if half:
        record = half[0]["record"]
        drop, ratio = dense["top1"] - record["top1"], macs(dense) / macs(record)
        line = f"- FBS at density 0.5: {record['top1'] - dense['top1']:+.2f} points at {ratio:.2f}× fewer MACs"
        if model == "cifarnet":  # the goal is set for M-CifarNet
            line += (f" — goal: {'met' if drop <= 1.0 and ratio >= 3.9 else 'NOT met'} (within 1.0 point of dense: "
                     f"{'yes' if drop <= 1.0 else 'no'}; within 0.5, the stretch: {'yes' if drop <= 0.5 else 'no'}; "
                     f"at least 3.9× fewer MACs: {'yes' if ratio >= 3.9 else 'no'})")
        found.append(line + ".")
    plain = {row["setting"]: row["record"]["top1"] for row in rows if row["method"] == "fbs_plain"}
    distilled = {row["setting"]: row["record"]["top1"] for row in rows if row["method"] == "fbs"}
    if plain:
        gains = [f"{setting.split()[-1]}: {distilled[setting] - plain[setting]:+.2f}" for setting in plain]
        found.append(f"- Distillation (FBS distilled − FBS without), points per density: {', '.join(gains)}.")
    for method in ("kernel", "slimming"):
        pairs = []
        for row in (r for r in rows if r["method"] == method and "density_setting" in r["record"]):
            twin = next(r for r in rows if r["method"] == "fbs" and
                        r["setting"] == f"density {row['record']['density_setting']}")
            pairs.append((row["record"]["density_setting"], twin["record"]["top1"] - row["record"]["top1"],
                          macs(row["record"]) / macs(twin["record"])))
        if pairs:
            better = sum(1 for _, gap, _ in pairs if gap > 0)
            found.append(f"- FBS against {METHODS[method]} at FBS's MAC budgets: FBS ahead by "
                         + ", ".join(f"{gap:+.2f} points at density {d} ({m:.2f}× FBS's MACs)" for d, gap, m in pairs)
                         + (" — FBS wins at every budget." if better == len(pairs) else
                            f" — FBS does NOT win at every budget: it wins at {better} of {len(pairs)}."))
    same = [row["latency_ms"] for row in rows if row["method"] in ("kernel", "kernel30", "kernel30_recipe")]
    if same:
        base = next(row for row in rows if row["method"] == "dense")["latency_ms"]
        found.append(f"- Timing resolution: the kernel-pruned models run the dense model's computation (a dense "
                     f"runtime multiplies their zeros); their speed-ups against dense span {base / max(same):.2f}–"
                     f"{base / min(same):.2f}×, so latency differences inside that band are noise.")
    for row in rows:
        if row["method"] in ("kernel30", "kernel30_recipe"):
            drop = dense["top1"] - row["record"]["top1"]
            found.append(f"- {METHODS[row['method']]} (one epoch of {row['setting'].split(', ')[1]}, batch norms "
                         f"recalibrated): {-drop:+.2f} points — {'within' if drop <= 0.3 else 'NOT within'} 0.3 "
                         "points of dense.")
    return found


def write(results, dataset, out, command, seed, started, mode):
    out.mkdir(parents=True, exist_ok=True)
    figure(results, dataset, out / "results.png", mode["test"])
    parts = [
        "# Results: dynamic (FBS) against static pruning", "",
        "Written by `benchmarks/results.py`; every number below comes from the run that wrote this page. Do not "
        "edit it: run the command again.", "",
        f"- command: `{command}`",
        f"- data: {DATASETS[dataset]}, trained on the training split, evaluated on {mode['test']}",
        f"- machine: {machine()}",
        f"- seed: {seed} for every training run; run from {started} to "
        f"{datetime.datetime.now().isoformat(timespec='minutes')}",
        "- MACs: multiply-accumulates per image, as `info` counts them (FBS: at the gate densities measured on the "
        "test set, the gates' own predictors included; kernel pruning: the kernels left; slimming: the narrower "
        "network).",
        "- latency: median over test images of one-image inference on the CPU, every model timed side by side in one "
        "process: the dense model and kernel-pruned models folded (batch norms and masks multiplied in) and compiled "
        "by XLA; FBS through its sparse path (only the channels the gates keep are computed); slimmed models as the "
        "narrower networks they are. Speed-up is against the dense model's folded, compiled path.",
        "- epochs: fine-tuning epochs since the dense model (FBS: summed over the density steps; the static chains "
        "get the same epochs at each budget, with the same trainer and distillation).", "",
        "![top-1 against MACs and latency](results.png)", ""]
    for model, rows in results.items():
        parts += table(model, rows) + ["", "¹ dense rows: training epochs from scratch; the others: fine-tuning "
                                       "epochs since the dense model.", ""] + verdicts(model, rows) + [""]
    (out / ".results.md").write_text("\n".join(parts))
    os.replace(out / ".results.md", out / "results.md")
    (out / "results.json").write_text(json.dumps(
        {model: [{k: (str(v) if isinstance(v, Path) else v) for k, v in row.items()} for row in rows]
         for model, rows in results.items()}, indent=1))
    print(f"wrote {out / 'results.md'} and {out / 'results.png'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "results_run")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="fashion_mnist")
    parser.add_argument("--quick", action="store_true", help="a small subset, for tests")
    parser.add_argument("--out", type=Path, help="where results.md and .png go (docs/, or the workdir with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", help="comma-separated, from " + ", ".join(MODELS))
    options = parser.parse_args()
    mode = QUICK if options.quick else FULL
    models = options.models.split(",") if options.models else mode["models"]
    unknown = [name for name in models if name not in MODELS]
    if unknown:
        parser.error(f"--models: unknown model {unknown[0]!r} (known: {', '.join(MODELS)})")
    if options.dataset == "cifar10":
        import tensorflow_datasets as tfds
        if not tfds.builder("cifar10").is_prepared():
            parser.error("--dataset cifar10: TensorFlow Datasets has no prepared cifar10 in "
                         f"{tfds.core.constants.DATA_DIR} (or TFDS_DATA_DIR); prepare it where the internet is "
                         "reachable: python -m tensorflow_datasets.scripts.download_and_prepare --datasets=cifar10")
    workdir = options.workdir.resolve() / options.dataset
    workdir.mkdir(parents=True, exist_ok=True)
    out = (options.out or (workdir if options.quick else ROOT / "docs")).resolve()
    started = datetime.datetime.now().isoformat(timespec="minutes")
    command = "python benchmarks/results.py " + " ".join(sys.argv[1:])
    run = Run(workdir, options.dataset, mode, options.seed)
    results = {}
    for model in models:
        results[model] = family(run, model)
        write(results, options.dataset, out, command, options.seed, started, mode)


if __name__ == "__main__":
    main()
