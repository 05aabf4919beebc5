"""The actions of the `my` command, one module each, in one table with their help text.

Nothing here imports TensorFlow: the command line reads the table for `my --help` and for its checks of the
arguments, and imports an action's module only when the action runs. The README's table of actions is tested
against this one.
"""

import functools
import importlib
from typing import NamedTuple, Optional

from mayo_lite.files import remove_scratch
from mayo_lite.distribute.cluster import lost_worker


class Action(NamedTuple):
    module: str  # under mayo_lite.session.actions
    function: str
    help: str
    check: Optional[str] = None  # a function of the config in the same module, run before any work
    # The splits the action cannot do without ("eval": system.eval.split): the session reads their files before it
    # loads a checkpoint, so a broken data file is the first line. Actions that fall back to other images (bench,
    # export-model) or to nominal figures (info, prune's report) read their data when they need it.
    reads: tuple = ()


ACTIONS = {
    "train": Action("train", "train", "train until system.max_epochs, saving checkpoints", "check_train",
                    ("train",)),
    "eval": Action("evaluate", "evaluate", "evaluate on the validation split (top-1, top-5, gate density)",
                   reads=("eval",)),
    "info": Action("info", "info", "per-layer shapes, parameters and MACs; gate and weight densities"),
    "reset-num-epochs": Action("reset_num_epochs", "reset_num_epochs",
                               "set the epoch counter to 0 (fine-tune a loaded checkpoint for a full schedule)"),
    "save": Action("save", "save", "save the session as checkpoint `latest`"),
    "export": Action("export", "export", "write the merged, resolved config to export.yaml"),
    "eval-all": Action("eval_all", "eval_all", "evaluate every saved checkpoint of the run and write eval_all.csv",
                       "check_eval_all", reads=("eval",)),
    "prune": Action("prune", "prune", "prune convolution weights as the prune: section says (kernel level by "
                                      "default), report accuracy before and after, save checkpoint `pruned`",
                    "check_prune"),
    "export-model": Action("export_model", "export_model",
                           "write a deployable model in every format of system.export.formats (.keras, SavedModel, "
                           "TensorFlow Lite, int8, ONNX) with masks and batch norms folded and channel-pruned channels "
                           "removed, each checked against Keras; a gated model also as its sparse SavedModel and "
                           "native program", "check_export_model"),
    "bench": Action("bench", "bench", "time one-image inference side by side: dense Keras, folded and compiled, "
                                      "TensorFlow Lite, and for a gated model its sparse execution (on the engine "
                                      "timed fastest here) and the static network of the same width; print the "
                                      "ratios (system.bench.profile: per layer)",
                    "check_bench"),
    "plot": Action("plot", "plot", "draw PNG figures under system.plot.path: per-class gate heatmaps, per-layer "
                                   "costs, training curves, top-1 against MACs", "check_plot", ("validate",)),
}


def load(name):
    """(the action's function, its check or None), imported now."""
    action = ACTIONS[name]
    module = importlib.import_module(f"{__name__}.{action.module}")
    check = getattr(module, action.check) if action.check else None
    return _as_a_worker(getattr(module, action.function)), check


def _as_a_worker(function):
    """The action, as one worker of a multi-worker run needs it: a worker that stopped answering is reported in one
    line (TensorFlow raises it from whatever collective step was running when it noticed, in any action), and the
    scratch directory is removed when the action fails."""
    @functools.wraps(function)
    def run(runner):
        try:
            return function(runner)
        except BaseException as error:
            # The command line ends at a failed or interrupted action, and after an interruption it leaves at once,
            # without exit handlers: a worker's scratch directory goes now.
            remove_scratch()
            lost = lost_worker(error) if isinstance(error, Exception) else None
            if lost is None:
                raise
            raise lost from error
    return run
