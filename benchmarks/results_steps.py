"""The steps of `benchmarks/results.py`: `my` command lines run once each, their records cached in the workdir.

A step is run again only when its command line, the config files it names or the code changes: the key holds a
digest of the command, of those files (and the files they import) and of every file of the `mayo_lite` package and
`configs/` (the code version). An interrupted run continues where it stopped; a changed mayo-lite reruns everything,
so that a page is always written from one code version.
"""

import datetime
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EVAL = re.compile(r"^top1: ([\d.]+)%, top5: ([\d.]+)%(?:, density: ([\d.]+)%)?$", re.MULTILINE)


def code_version():
    """(digest of the package and the configs, git commit or None, whether git sees them changed)."""
    digest = hashlib.sha256()
    for folder in ("mayo_lite", "configs"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())

    def git(*arguments):
        result = subprocess.run(["git", "-C", str(ROOT), *arguments], capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None
    commit = git("rev-parse", "--short=10", "HEAD")
    changed = bool(git("status", "--porcelain", "--", "mayo_lite", "configs")) if commit else None
    return digest.hexdigest()[:16], commit, changed


def fingerprint(arguments):
    """A digest of the config files a command line names and those they import."""
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

    def __init__(self, workdir, dataset, mode):
        self.workdir, self.data, self.mode = workdir, [f"datasets/{dataset}.yaml"], mode
        self.version, self.commit, self.changed = code_version()
        self.record_path = workdir / "steps.json"
        self.record = json.loads(self.record_path.read_text()) if self.record_path.is_file() else {}

    def epochs(self, epochs):
        return f"system.max_epochs={epochs * self.mode['scale']:g}"

    def step(self, key, arguments, directory=None):
        """Runs `my ARGUMENTS` unless step `key` finished with the same arguments, configs and code; returns its
        record. A step that did not finish starts again from its inputs (`directory` is emptied first)."""
        if self.done(key, arguments):
            print(f"[{key}] done before ({self.record[key]['finished']}), not run again", flush=True)
            return self.record[key]
        arguments = self.full(arguments)
        if directory is not None:
            shutil.rmtree(self.workdir / directory, ignore_errors=True)
        print(f"[{key}] $ my {' '.join(arguments)}", flush=True)
        started = time.monotonic()
        result = (in_process if self.mode.get("in_process") else in_a_process)(arguments, self.workdir)
        if result.returncode != 0:
            sys.stderr.write(result.stderr[-3000:])
            sys.exit(f"results: step {key} failed (status {result.returncode}): my {' '.join(arguments)}")
        done = {"command": arguments, "configs": fingerprint(arguments), "code": self.version,
                "commit": self.commit, "seconds": round(time.monotonic() - started, 1),
                "finished": datetime.datetime.now().isoformat(timespec="seconds")}
        evaluations = EVAL.findall(result.stdout)
        if evaluations:  # on the validation split
            top1, top5, density = evaluations[-1]
            done.update(val_top1=float(top1), val_top5=float(top5),
                        density=float(density) / 100 if density else None)
        for pattern, name in ((r"([\d,]+) MACs \(", "macs"), (r"effective ([\d,]+) MACs", "effective_macs")):
            found = re.findall(pattern, result.stdout)
            if found:
                done[name] = int(found[-1].replace(",", ""))
        print(f"[{key}] {done.get('val_top1', '-')}% validation top-1, {done['seconds']:.0f} s", flush=True)
        self.record[key] = done
        self.save()
        return done

    def full(self, arguments):
        """`arguments` with the mode's overrides before the first action (`my` applies its arguments in order)."""
        first = next((index for index, argument in enumerate(arguments)
                      if "=" not in argument and not argument.endswith(".yaml")), len(arguments))
        return [*arguments[:first], *self.mode["overrides"], *arguments[first:]]

    def done(self, key, arguments):
        record = self.record.get(key)
        return (record is not None and record["command"] == self.full(arguments)
                and record.get("configs") == fingerprint(arguments) and record.get("code") == self.version)

    def save(self):
        temporary = self.record_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.record, indent=1))
        os.replace(temporary, self.record_path)

    def checkpoint(self, directory):
        return self.workdir / directory / "latest.npz"


def in_a_process(arguments, directory):
    """`my ARGUMENTS` run in `directory` by the launcher, as a user runs it."""
    return subprocess.run([str(ROOT / "my"), *arguments], cwd=directory, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def in_process(arguments, directory):
    """`my ARGUMENTS` run in `directory` by the launcher's `main` in this process, its output captured: the same
    command line without starting TensorFlow again (quick mode: most of a step's seconds would be the start)."""
    import contextlib
    import io
    from mayo_lite.cli import main
    stdout, stderr, previous = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(directory)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main(arguments)
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(arguments, status, stdout.getvalue(), stderr.getvalue())


def session(run, files, load, overrides=()):
    """A mayo-lite session of `files` with checkpoint `load`, in this process (for searches, tests and timing)."""
    from mayo_lite.config import Config
    from mayo_lite.session.session import Session
    cfg = Config()
    for name in files:
        cfg.load(str(ROOT / "configs" / name))
    for override in [f"system.checkpoint.load={load}", *run.mode["overrides"], *overrides]:
        cfg.override(override)
    return Session(cfg)


def row_session(run, record):
    """A session of the model a step's record trained, with its checkpoint: its command's config files and the
    overrides that shape the network (widths, gate density)."""
    files = [argument for argument in record["command"] if argument.endswith(".yaml")]
    overrides = [argument for argument in record["command"] if argument.startswith(("model.layers.", "_gate."))]
    return session(run, files, record["checkpoint"], overrides)


def effective_macs(model):
    from mayo_lite.net import model_cost
    return model_cost(model).total["effective_macs"]


def search(model, budget, cost, **prune):
    """The smallest `percent` (to 1/10000) whose pruning of `model` costs at most `budget` MACs; the model is left
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


def fbs_chain(run, model, seed, dense, rate, name="fbs", steps=None):
    """The FBS recipe: the gated model loaded from the dense checkpoint, fine-tuned with distillation step after
    step down the densities; returns the steps' records."""
    records, previous = [], dense
    for density, epochs in steps or run.mode["steps"]:
        directory = f"{model}/s{seed}/{name}_{density}"
        record = run.step(f"{model}/s{seed}/{name}/{density}", [
            f"models/gate/{model}.yaml", *run.data, "trainers/gate_finetune.yaml", "trainers/distill.yaml",
            f"train.distill.teacher={dense}", f"train.learning_rate._initial={rate}", f"system.seed={seed}",
            f"system.checkpoint.load={previous}", f"system.checkpoint.path={directory}", f"_gate.density={density}",
            run.epochs(epochs), "reset-num-epochs", "train", "eval", "info"], directory)
        record.update(density_setting=density, epochs=epochs, checkpoint=str(run.checkpoint(directory)))
        records.append(record)
        previous = run.checkpoint(directory)
    return records


def _widths(model):
    return [f"model.layers.{layer.name}.num_outputs={layer.filters}" for layer in model.layers
            if hasattr(layer, "filters") and layer.name != "logits"]


def slimming_chain(run, model, seed, start, budgets, teacher, rate, name="slimming"):
    """Network slimming step after step down to `budgets` ((density of the FBS twin, epochs), MACs): channels
    pruned by |gamma|, the same share in every convolution (one global threshold emptied whole layers of M-CifarNet),
    the narrower network saved and fine-tuned; returns the records."""
    from mayo_lite.prune import narrow_model
    from mayo_lite.weights.checkpoint import CheckpointStore
    files = [f"models/{model}.yaml", *run.data]
    records, previous, widths, channels = [], start, [], None
    for (density, epochs), budget in budgets:
        directory = f"{model}/s{seed}/{name}_{density}"
        current = session(run, files, previous, [*widths, "prune.granularity=channel"])
        channels = channels or sum(int(width.split("=")[1]) for width in _widths(current.model))

        def narrowed(pruned):
            narrow = narrow_model(pruned)
            return effective_macs(narrow if narrow is not None else pruned)
        percent, macs = search(current.model, budget, narrowed, granularity="channel", layers=["conv*"],
                               scope="layer")
        narrow = narrow_model(current.model)
        widths = _widths(narrow)
        path = run.workdir / directory / "narrowed.npz"
        arguments = [*files, *widths, f"system.checkpoint.load={path}", f"system.checkpoint.path={directory}",
                     "trainers/gate_finetune.yaml", "trainers/distill.yaml", f"train.distill.teacher={teacher}",
                     f"train.learning_rate._initial={rate}", f"system.seed={seed}", run.epochs(epochs),
                     "reset-num-epochs", "train", "eval", "info"]
        key = f"{model}/s{seed}/{name}/{density}"
        if not run.done(key, arguments):
            shutil.rmtree(run.workdir / directory, ignore_errors=True)
            CheckpointStore(str(path.parent)).save(
                "narrowed", {f"model/{v.path}": v.numpy() for v in narrow.variables if "seed_generator" not in v.path},
                0.0, {"model": model, "dataset": current.dataset.get("name")})
        record = run.step(key, arguments)
        record.update(percent=percent, budget=budget, searched_macs=macs, density_setting=density, widths=widths,
                      epochs=epochs, checkpoint=str(run.checkpoint(directory)),
                      channels_kept=sum(int(width.split("=")[1]) for width in widths) / channels)
        run.save()
        records.append(record)
        previous = run.checkpoint(directory)
    return records


def combined_chain(run, model, seed, slimmed, budgets, teacher, rate):
    """Dynamic on top of static: FBS on the network slimming narrowed, each step at the largest density (in
    steps of 0.05) whose MACs, gates included, are within the budget ((FBS twin's density, epochs), MACs)."""
    files = [f"models/gate/{model}.yaml", *run.data]
    records, previous = [], slimmed["checkpoint"]
    for (twin, epochs), budget in budgets:
        density = None
        for candidate in [round(1 - 0.05 * step, 2) for step in range(1, 19)]:
            gated = session(run, files, "null", [*slimmed["widths"], f"_gate.density={candidate}"])
            if effective_macs(gated.model) <= budget:
                density = candidate
                break
        if density is None:
            print(f"[{model}/s{seed}/combined/{twin}] no density reaches {budget:,} MACs: no row", flush=True)
            continue
        directory = f"{model}/s{seed}/combined_{twin}"
        record = run.step(f"{model}/s{seed}/combined/{twin}", [
            *files, *slimmed["widths"], "trainers/gate_finetune.yaml", "trainers/distill.yaml",
            f"train.distill.teacher={teacher}", f"train.learning_rate._initial={rate}", f"system.seed={seed}",
            f"system.checkpoint.load={previous}", f"system.checkpoint.path={directory}", f"_gate.density={density}",
            run.epochs(epochs), "reset-num-epochs", "train", "eval", "info"], directory)
        record.update(density_setting=twin, gate_density=density, budget=budget, widths=slimmed["widths"],
                      epochs=epochs, checkpoint=str(run.checkpoint(directory)))
        run.save()
        records.append(record)
        previous = run.checkpoint(directory)
    return records
