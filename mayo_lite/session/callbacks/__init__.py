"""The Keras callbacks that drive a session's training loop, one module each: the progress bar, divergence,
checkpoints, TensorBoard and the CSV history, beside gradual pruning, the quantizers' updates and any callback a
trainer lists in `train.callbacks`; `from_config` puts a `train` action's together.

The loop is the session's own distributed step (`mayo_lite.session.loop`), not `Model.fit`, but it calls a
`keras.callbacks.CallbackList` exactly as `fit` does — `on_train_begin`, `on_epoch_begin`, `on_train_batch_end`
with the step's logs, `on_epoch_end` with the epoch's — so any Keras callback works with it. Batch logs hold the
running means of the epoch so far; `step` (global, from 1) and `epoch` (the float counter) come with them.
"""

from mayo_lite import registry
from mayo_lite.errors import ConfigError
from mayo_lite.files import output_path
from mayo_lite.quantize import QuantizerUpdate, quantizer_layers
from mayo_lite.session.callbacks.checkpoints import Checkpoints
from mayo_lite.session.callbacks.divergence import DivergedError, Divergence
from mayo_lite.session.callbacks.history import History
from mayo_lite.session.callbacks.progress import ProgressBar
from mayo_lite.session.callbacks.tensorboard import TensorBoard

__all__ = ["Checkpoints", "DivergedError", "Divergence", "History", "ProgressBar", "TensorBoard", "from_config",
           "user_callbacks"]


def from_config(cfg, settings, session, gradual=None):
    """The callbacks of a `train` action, in the order they run: the progress bar, divergence, gradual pruning,
    the quantizers' updates (Mayo's overriders-update, when the model has quantizers), the config's own
    (`train.callbacks`), checkpoints, TensorBoard (`system.log.tensorboard`) and the CSV history
    (`system.log.history`); on a worker other than the chief of a multi-worker run, these write to its scratch
    directory (`mayo_lite.files.output_path`)."""
    callbacks = [ProgressBar(), Divergence()]
    if gradual is not None:
        callbacks.append(gradual)
    if any(quantizer_layers(session.model)):
        callbacks.append(QuantizerUpdate())
    callbacks += user_callbacks(cfg)
    callbacks.append(Checkpoints(session, settings.save_interval, settings.save_keep))
    if settings.tensorboard is not None:
        callbacks.append(TensorBoard(str(output_path(settings.tensorboard))))
    if settings.history is not None:
        callbacks.append(History(output_path(settings.history)))
    return callbacks


def user_callbacks(cfg):
    """`train.callbacks`: a list of callback specs (`{type: EarlyStopping, monitor: loss, patience: 2}`)."""
    specs = cfg.get("train.callbacks", None) or []
    if not isinstance(specs, list):
        raise ConfigError(f"{cfg.where('train.callbacks')}: expected a list of callback specs, got {specs!r}")
    return [registry.build("callback", spec, f"{cfg.where('train.callbacks')}.{index}")
            for index, spec in enumerate(specs)]
