"""The page of `benchmarks/results.py`: rows averaged over seeds, the verdicts, the figure, docs/results.md."""

import datetime
import json
import os
import platform
import statistics
from pathlib import Path

MODELS = {"cifarnet_slim": "slim M-CifarNet", "cifarnet": "M-CifarNet"}
DATASETS = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
METHODS = {"dense": "dense", "fbs": "FBS (distilled)", "slimming": "network slimming",
           "combined": "slimming + FBS"}


def macs(record):
    return record.get("effective_macs") or record["macs"]


def spread(values):
    """(mean, sample standard deviation or None for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def rows_of(seeded):
    """One row per (method, density setting): its records over the seeds, in order."""
    rows = {}
    for records in seeded.values():
        for method, chain in records.items():
            for record in chain:
                rows.setdefault((method, record["density_setting"]), []).append(record)
    return rows


def setting(method, records):
    record = records[0]
    if method == "dense":
        return f"{record['epochs']} epoch{'s' if record['epochs'] != 1 else ''} from scratch"
    if method == "fbs":
        return f"density {record['density_setting']}"
    if method == "slimming":
        if record["density_setting"] == 1.0:
            return "L1 epoch, full width"
        kept = statistics.mean(r["channels_kept"] for r in records)
        return f"{kept:.0%} of channels kept (FBS {record['density_setting']}'s MACs)"
    return f"slimmed to FBS 0.5's MACs, then density {record['gate_density']}"


def latency_of(latency, method, density):
    """(ms on the path the method runs: sparse for dynamic, XLA for static; ms in TensorFlow Lite or None)."""
    ms = latency["ms"] if latency else {}
    if method in ("fbs", "combined"):
        return ms.get(f"{method} {density}"), None
    return ms.get(f"{method} {density} XLA"), ms.get(f"{method} {density} TFLite")


def _pm(mean, deviation, unit="%"):
    return f"{mean:.2f}{unit}" + (f" ± {deviation:.2f}" if deviation is not None else "")


def table(rows, latency):
    dense = rows[("dense", None)]
    base_test, _ = spread([r["test_top1"] for r in dense])
    base_macs = statistics.mean(macs(r) for r in dense)
    base_ms, _ = latency_of(latency, "dense", None)
    lines = ["| method | setting | validation top-1 | test top-1 | Δ test | test top-5 | MACs / image | fewer MACs "
             "| epochs¹ | latency² | ×dense | TFLite² | seeds | commit, finished |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (method, density), records in rows.items():
        val, test, top5 = (spread([r[key] for r in records]) for key in ("val_top1", "test_top1", "test_top5"))
        mean_macs = statistics.mean(macs(r) for r in records)
        ms, lite = latency_of(latency, method, density)
        epochs = records[0]["epochs"] if method == "dense" else _cumulative(rows, method, density)
        finished = max(r["finished"] for r in records)[:16].replace("T", " ")
        commits = ", ".join(sorted({r["commit"] or "?" for r in records}))
        lines.append(
            f"| {METHODS[method]} | {setting(method, records)} | {_pm(*val)} | {_pm(*test)} | "
            f"{test[0] - base_test:+.2f} | {_pm(*top5)} | {mean_macs:,.0f} | {base_macs / mean_macs:.2f}× | "
            f"{epochs:g} | {f'{ms:.3f} ms' if ms else '—'} | "
            f"{f'{base_ms / ms:.2f}×' if ms and base_ms else '—'} | {f'{lite:.3f} ms' if lite else '—'} | "
            f"{len(records)} | {commits}, {finished} |")
    return lines


def _cumulative(rows, method, density):
    """Fine-tuning epochs since the dense model: the steps' epochs summed down the chain (slimming + FBS: its
    slimming step's, then its own)."""
    if method == "combined":
        return _cumulative(rows, "slimming", 0.5) + sum(
            records[0]["epochs"] for (other, step), records in rows.items() if other == method and step >= density)
    return sum(records[0]["epochs"] for (other, step), records in rows.items()
               if other == method and step >= density)


def verdicts(rows, latency):
    dense, _ = spread([r["test_top1"] for r in rows[("dense", None)]])
    found = []
    if ("fbs", 0.5) in rows:
        mean, deviation = spread([r["test_top1"] for r in rows[("fbs", 0.5)]])
        ratio = statistics.mean(macs(r) for r in rows[("dense", None)]) / statistics.mean(
            macs(r) for r in rows[("fbs", 0.5)])
        found.append(f"- **FBS at density 0.5 against dense**: {mean - dense:+.2f} points (test, mean over "
                     f"{len(rows[('fbs', 0.5)])} seed{'s' if len(rows[('fbs', 0.5)]) > 1 else ''}; FBS's spread ±{deviation or 0:.2f}) at {ratio:.2f}× fewer "
                     f"MACs — goal (within 1.0 point): **{'met' if dense - mean <= 1.0 else 'NOT met'}**.")
    wins, leads, budgets = 0, [], [d for (m, d) in rows if m == "slimming" and d != 1.0]
    for density in budgets:
        static, static_dev = spread([r["test_top1"] for r in rows[("slimming", density)]])
        contenders = [m for m in ("fbs", "combined") if (m, density) in rows]
        best = max(contenders, key=lambda m: statistics.mean(r["test_top1"] for r in rows[(m, density)]))
        mean, deviation = spread([r["test_top1"] for r in rows[(best, density)]])
        if deviation is None or static_dev is None:
            word = "one seed, no spread: no verdict"
        else:
            noise = max(deviation, static_dev)
            word = ("**ahead**" if mean - static > noise else "**behind**" if static - mean > noise
                    else "**within noise**") + f" (spread ±{noise:.2f})"
            wins += mean - static > noise
        leads.append(mean - static)
        others = "; ".join(f"{METHODS[m]} {statistics.mean(r['test_top1'] for r in rows[(m, density)]):.2f}%"
                           for m in contenders)
        found.append(f"- At FBS {density}'s MACs ({statistics.mean(macs(r) for r in rows[('fbs', density)]):,.0f}):"
                     f" best dynamic, {METHODS[best]}, {mean:.2f}% against network slimming's {static:.2f}%: "
                     f"{mean - static:+.2f} points, {word} ({others}).")
    if budgets:
        found.append(f"- **A dynamic method ahead of network slimming by more than the seeds' spread at {wins} of "
                     f"{len(budgets)} budgets** — goal (2 of 3): **{'met' if wins >= 2 else 'NOT met'}**."
                     + ("" if wins >= 2 else " Network slimming, a static network of the same MACs, is as accurate"
                        " or more at every budget." if max(leads) <= 0 else " Where a dynamic method's mean is "
                        "ahead, the seeds' spread is larger than the lead: no win."))
    if latency:
        base, lite = latency_of(latency, "dense", None)
        for (method, density) in rows:
            if method not in ("fbs", "combined"):
                continue
            ms, _ = latency_of(latency, method, density)
            static_ms, static_lite = latency_of(latency, "slimming", density)
            against = [("folded dense", base), ("dense in TensorFlow Lite", lite)]
            if static_ms:
                against += [("slimming's network of the same MACs, folded", static_ms),
                            ("that network in TensorFlow Lite", static_lite)]
            slower = [name for name, other in against if other < ms]
            found.append(f"- Latency, {METHODS[method]} at {density}: {ms:.3f} ms; speed-up against "
                         + ", ".join(f"{name} {other / ms:.2f}×" for name, other in against)
                         + (f" — **slower than {'; '.join(slower)}**." if slower else " — faster than each."))
    return found


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


def figure(rows, latency, path, title):
    """Test top-1 (mean, bars: one standard deviation over the seeds) against MACs (left) and against seed 0's
    latency (right); dense a dotted line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    styles = {"fbs": ("tab:red", "o"), "slimming": ("tab:green", "D"), "combined": ("tab:purple", "s")}
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.2))
    dense = spread([r["test_top1"] for r in rows[("dense", None)]])
    cost = {key: statistics.mean(macs(r) for r in rs) for key, rs in rows.items()}
    for axis, x in ((left, lambda m, d, rs: cost[(m, d)] / 1e6),
                    (right, lambda m, d, rs: latency_of(latency, m, d)[0])):
        axis.axhline(dense[0], color="black", linestyle=":", linewidth=1, label=f"dense ({dense[0]:.2f}%)")
        if x("dense", None, None):
            axis.plot([x("dense", None, None)], [dense[0]], marker="*", markersize=12, color="black", linestyle="")
        lite = latency_of(latency, "dense", None)[1]
        if axis is right and lite:
            axis.axvline(lite, color="grey", linestyle="--", linewidth=1, label=f"dense in TFLite ({lite:.3f} ms)")
        for method, (color, marker) in styles.items():
            # In the order of MACs on both panels: a line joins a method's budgets, not its latencies.
            points = [(x(m, d, rs), *spread([r["test_top1"] for r in rs]), d) for (m, d), rs in
                      sorted(rows.items(), key=lambda item: -cost[item[0]])
                      if m == method and not (m == "slimming" and d == 1.0)]
            points = [point for point in points if point[0]]
            if points:
                axis.errorbar([p[0] for p in points], [p[1] for p in points], [p[2] or 0 for p in points],
                              marker=marker, color=color, capsize=3, label=METHODS[method])
                for px, py, _, d in points:
                    axis.annotate(f"{d}", (px, py), textcoords="offset points", xytext=(5, 4), fontsize=7,
                                  color=color)
        axis.set_ylabel("test top-1 (%), mean ± std over seeds")
        axis.grid(True, alpha=0.3)
    left.set_xlabel("MACs per image (millions; gates included)")
    right.set_xlabel("batch-1 CPU latency, seed 0 (ms; FBS on its sparse path, dense and slimming folded)")
    left.set_title(f"{title}: top-1 against MACs (label: FBS density of the budget)")
    right.set_title(f"{title}: top-1 against measured latency")
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    temporary = path.with_name(f".{path.name}")
    fig.savefig(temporary, dpi=110, format="png")
    plt.close(fig)
    os.replace(temporary, path)


def write(run, model, dataset, seeded, latency, out, command):
    """docs/results.md and results.png from every finished seed of `model`."""
    out.mkdir(parents=True, exist_ok=True)
    rows = rows_of(seeded)
    title = f"{MODELS[model]} on {DATASETS[dataset]}"
    figure(rows, latency, out / "results.png", title)
    mode, dirty = run.mode, " (with changes git had not committed)" if run.changed else ""
    choices = [f"| {method} | " + ", ".join(f"{rate}: {score:.2f}%" for rate, score in choice["scores"].items())
               + f" | {choice['chosen']} |" for method, choice in run.choices.items()]
    parts = [
        "# Results: dynamic (FBS) against static pruning, over seeds", "",
        "Written by `benchmarks/results.py`; every number below comes from the steps of one code version listed here. "
        "Do not edit it: run the command again.", "",
        f"- command: `{command}`",
        f"- model and data: {title}; seeds {', '.join(map(str, seeded))} (each row: mean ± sample standard "
        f"deviation over them){'; M-CifarNet not run: it takes about 5× as long' if model == 'cifarnet_slim' else ''}",
        f"- splits: trained on the training images less the validation split ({mode['validate']}, "
        f"`dataset.validate_from_train`), every choice scored on that validation split; the test columns on "
        f"{mode['test']}, evaluated once per row after the choices",
        f"- code version: {run.version} (digest of `mayo_lite/` and `configs/`), commit {run.commit}{dirty}; "
        f"page written {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- machine: {machine()}",
        "- MACs: multiply-accumulates per image as `info` counts them (FBS: at the gate densities measured on the "
        "validation split, the gates' predictors included; slimming: the narrower network).", "",
        "Choices on the validation split (seed 0, validation top-1 at FBS 0.5's budget, fine-tuning learning rate):",
        "", "| method | rate: validation top-1 | chosen |", "| --- | --- | --- |", *choices, "",
        "![test top-1 against MACs and latency](results.png)", "", *table(rows, latency), "",
        "¹ dense: training epochs from scratch; the others: fine-tuning epochs since the dense model, summed down "
        "the chain (each method gets the same epochs at each budget).",
        "² median batch-1 latency of seed 0's model"
        + (f" over {latency['images']} test images × {latency['repeats']} passes, every model timed side by side in"
           f" one process ({latency['measured']}): dense and slimming folded (batch norms into the kernels) on the "
           "faster of XLA and the native runtime, as the tuning chose on this machine, FBS and "
           "slimming + FBS on the sparse path (only the channels the gates keep are computed); TFLite: the same "
           "network converted to TensorFlow Lite (XNNPACK)." if latency else ": not measured."), "",
        "## Verdicts", "", *verdicts(rows, latency), ""]
    (out / ".results.md").write_text("\n".join(parts))
    os.replace(out / ".results.md", out / "results.md")
    (out / "results.json").write_text(json.dumps(
        {"choices": run.choices, "latency": latency,
         "rows": [{"method": m, "density": d, "records": rs} for (m, d), rs in rows.items()]}, indent=1))
    print(f"wrote {out / 'results.md'} and {out / 'results.png'}", flush=True)
