"""The `eval-all` action: every checkpoint of the run evaluated, and `eval_all.csv` (top-1, top-5, dense and effective
MACs per checkpoint, which `plot` draws)."""

import csv
import io
import logging

from mayo_lite.errors import CheckpointError
from mayo_lite.files import output_path, write_atomically
from mayo_lite.net import model_cost
from mayo_lite.session.epochs import epoch_text
from mayo_lite.weights.checkpoint import CheckpointStore

log = logging.getLogger("mayo_lite")


def check_eval_all(cfg, settings):
    """Checkpoints to evaluate, before the model is built."""
    store = CheckpointStore(settings.checkpoint_path)
    if not store.available():
        raise CheckpointError(f"eval-all: no checkpoints in {store.directory}")


def eval_all(runner):
    session = runner.session()
    paths = session.saved_checkpoints()
    rows = []
    for path in paths:
        session.load(path)
        result = session.loops.evaluate(progress=False, split=runner.settings.eval_split)
        # What this checkpoint costs: its masks' weight densities and its gates' densities on the same images.
        cost = model_cost(session.model, gate_densities=result.get("layer_densities"))
        rows.append({"checkpoint": path.stem, "epoch": session.epoch.value,
                     "top1": round(result["top1"], 6), "top5": round(result["top5"], 6),
                     "macs": cost.total["macs"], "effective_macs": round(cost.total["effective_macs"])})
        print(f"{path.stem}: epoch {epoch_text(session.epoch.value)}, top1: {result['top1']:.2%}, "
              f"top5: {result['top5']:.2%}", flush=True)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path = output_path("eval_all.csv")
    write_atomically(path, table.getvalue())
    log.info("wrote %s", path)
    # The session now holds the last checkpoint's weights, not the selected one: build afresh next time.
    runner.discard_session()
