"""The `eval` action: top-1 and top-5 (and the gates' density) on the validation split (or `system.eval.split`)."""

import logging

from mayo_lite.session.actions.common import plumbing as _plumbing

log = logging.getLogger("mayo_lite")


def evaluate(runner):
    session = runner.session()
    split = runner.settings.eval_split
    result = session.loops.evaluate(split=split)
    density = f", density: {result['density']:.2%}" if "density" in result else ""
    print(f"top1: {result['top1']:.2%}, top5: {result['top5']:.2%}{density}", flush=True)
    if "layer_densities" in result:
        session.measured_densities = (result["layer_densities"], result["examples"])
    figures = {"model": session.model.name, "dataset": session.dataset.get("name"), "split": split,
               "epoch": session.epoch.value,
               "top1": round(result["top1"], 6), "top5": round(result["top5"], 6), "loss": round(result["loss"], 6),
               "examples": result["examples"]}
    if "density" in result:
        figures["density"] = round(result["density"], 6)
        figures["layer_densities"] = {name: round(value, 6) for name, value in result["layer_densities"].items()}
    _plumbing(runner, "eval.yaml", figures)
    return result
