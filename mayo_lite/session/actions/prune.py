"""The `prune` action: prune the model's convolutions as the `prune:` section says (the reference's kernel-level
pruning by default), report as the reference does, and save checkpoint `pruned`."""

import logging

import keras
import yaml

from mayo_lite.errors import DataError
from mayo_lite.files import output_path, write_atomically
from mayo_lite.layers import GatedConv2D
from mayo_lite.prune import prune_model
from mayo_lite.session.pruning import check_layers, prune_arguments
from mayo_lite.session.pruning import settings as prune_settings

log = logging.getLogger("mayo_lite")


def prune(runner):
    """Evaluates, prunes as the `prune` section says, evaluates again, prints the report and saves the checkpoint."""
    cfg = runner.cfg
    values = prune_settings(cfg)
    session = runner.session()
    arguments = prune_arguments(values, check_layers(cfg, session.model, values))
    before = _accuracy(session)
    report = prune_model(session.model, **arguments)
    after = _accuracy(session)
    print(report.text())
    if before is not None:
        print(f"accuracy before pruning: top1: {before['top1']:.2%}, top5: {before['top5']:.2%}")
        print(f"accuracy after pruning:  top1: {after['top1']:.2%}, top5: {after['top5']:.2%}", flush=True)
    if values["recalibrate"]:
        examples = recalibrate_batch_norms(session, values["recalibrate"])
        recalibrated = _accuracy(session)
        if recalibrated is not None:
            print(f"accuracy after recalibrating the batch norms on {examples} training images: "
                  f"top1: {recalibrated['top1']:.2%}, top5: {recalibrated['top5']:.2%}", flush=True)
    path = session.save(values["name"])
    session.measured_densities = None
    if runner.settings.plumbing:
        figures = {"model": session.model.name, "dataset": session.dataset.get("name"), "checkpoint": str(path),
                   **{key: values[key] for key in ("percent", "granularity", "saliency", "scope", "layers")},
                   "layers": [{"name": name, "total": layer.total, "remaining": layer.remaining}
                              for name, layer in report.layers.items()],
                   "total": report.total, "pruned": report.pruned, "ratio": round(report.ratio, 6),
                   "empty_layers": report.empty_layers}
        if before is not None:
            figures.update({"before": {k: round(before[k], 6) for k in ("top1", "top5")},
                            "after": {k: round(after[k], 6) for k in ("top1", "top5")}})
        written = output_path("prune.yaml")
        write_atomically(written, yaml.safe_dump(figures, sort_keys=False))
        log.info("wrote %s", written)
    return report


def recalibrate_batch_norms(session, batches):
    """Re-estimates every batch norm's moving mean and variance (gated layers' included) as the plain average of
    their batch statistics over `batches` training batches; no weight changes. Returns the number of images."""
    model = session.model
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
              or (isinstance(layer, GatedConv2D) and layer.norm == "batch")]
    momenta = [layer.momentum for layer in layers]
    examples = 0
    try:
        for number, (images, *_) in enumerate(session.pipeline("train").take(batches), start=1):
            for layer in layers:  # a running average: after n batches each batch weighs 1/n
                layer.momentum = 1.0 - 1.0 / number
            model(images, training=True)  # eagerly, so the momenta are read at every call
            examples += int(images.shape[0])
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    log.info("recalibrated %d batch norms on %d training images", len(layers), examples)
    return examples


def _accuracy(session):
    try:
        return session.loops.evaluate(progress=False)
    except DataError as error:
        log.info("no accuracy before and after pruning: %s", error)
        return None


def check_prune(cfg, settings):
    """The `prune:` section, checked before the session is built."""
    prune_settings(cfg)
