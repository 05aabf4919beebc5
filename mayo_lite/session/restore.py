"""Loading a checkpoint into a session: every variable by name, the optimizer's state when it fits, a dense
checkpoint's batch norms into a gated model's gates, and the quantizers' state from the loaded weights."""

import logging

import numpy as np

from mayo_lite.errors import CheckpointError
from mayo_lite.fbs.sources import dense_sources
from mayo_lite.quantize import quantizer_layers, update_quantizers
from mayo_lite.session.epochs import epoch_text
from mayo_lite.weights import checkpoint

log = logging.getLogger("mayo_lite")


def assign(session, stored, epoch, meta, path, description):
    """Assigns a checkpoint's values (`stored`: name -> array) to the session's variables, by name; a dense
    checkpoint's batch norms start a gated model's gates. Says what was loaded, new and left out."""
    targets = session.variables()
    model_targets = {k: v for k, v in targets.items() if k.startswith("model/")}
    model_stored = {k: v for k, v in stored.items() if k.startswith("model/")}
    optimizer_stored = {k: v for k, v in stored.items() if k.startswith("optimizer/")}
    pairs, missing, extra = checkpoint.match(model_targets, model_stored, path)
    pairs, missing, extra, translated = _dense_to_gated(session, targets, pairs, missing, extra, model_stored, path)
    if not pairs and model_targets:
        raise CheckpointError(f"{path}: shares no variable with model {session.model.name!r} "
                              f"(checkpoint of {meta.get('model', 'an unknown model')!r})")
    optimizer_pairs = []
    if session.optimizer is not None and optimizer_stored:
        optimizer_targets = {k: v for k, v in targets.items() if k.startswith("optimizer/")}
        try:
            optimizer_pairs, _, _ = checkpoint.match(optimizer_targets, optimizer_stored, path)
        except CheckpointError:
            log.info("optimizer state in %s does not fit this model; it starts afresh", path)
    for variable, value in pairs + optimizer_pairs:
        variable.assign(value)
    # A checkpoint without masks is unpruned: masks a previous load of this session wrote go back to ones
    # (eval-all loads a run's checkpoints one after another, pruned and not).
    for name in missing:
        if name.endswith("/mask"):
            targets[name].assign(np.ones(targets[name].shape, targets[name].dtype))
    session.epoch.assign(epoch)
    session.checkpoint_path = path
    log.info("loaded %s (epoch %s)", description, epoch_text(epoch))
    # A float checkpoint in a quantized model: the weight quantizers' state (a point, a bias) comes from the
    # loaded weights, as Mayo's overriders-update would, rather than from its defaults.
    fresh = {id(targets[name]) for name in missing}
    if any(id(v) in fresh for _, kind, q in quantizer_layers(session.model) if kind != "activation" for v in q.weights):
        update_quantizers(session.model, activations=False)
        log.info("weight quantizers updated from the loaded weights (the checkpoint has no quantizer state)")
    if translated:
        log.info("the gates of %s start from the dense batch norms: predictor bias from the scale, beta from "
                 "the offset, and their moving statistics", ", ".join(translated))
    if missing:
        log.info("%d new variable(s), not in the checkpoint, keep their initial values: %s",
                 len(missing), ", ".join(name.removeprefix("model/") for name in missing))
    if extra:
        log.info("%d variable(s) in the checkpoint are not in this model: %s",
                 len(extra), ", ".join(name.removeprefix("model/") for name in extra))
    if session.optimizer is not None and optimizer_stored and not optimizer_pairs:
        log.info("the checkpoint's optimizer state (%s) does not match %s; it starts afresh",
                 meta.get("optimizer"), type(session.optimizer).__name__)


def _dense_to_gated(session, targets, pairs, missing, extra, stored, path):
    """Pairs the gated layers' variables missing from a dense checkpoint with the dense batch norms'."""
    sources = {f"model/{target}": f"model/{source}" for target, source in dense_sources(session.model).items()}
    found = {name: sources[name] for name in missing if sources.get(name) in stored}
    if not found:
        return pairs, missing, extra, []
    more, _, _ = checkpoint.match({name: targets[name] for name in found},
                                  {name: stored[source] for name, source in found.items()}, path)
    used = set(found.values())
    return (pairs + more, [name for name in missing if name not in found],
            [name for name in extra if name not in used],
            sorted({source.removeprefix("model/").rsplit(".bn/", 1)[0] for source in found.values()}))
