"""Saving a session's checkpoints while it trains."""

from mayo_lite.session.stopping import LoopCallback
from mayo_lite.weights.checkpoint import epoch_name


class Checkpoints(LoopCallback):
    """`latest` after every epoch and on a stop request; `epoch-N` every `interval` epochs, the newest `keep` kept.

    Args:
        session: the `mayo_lite.session.session.Session` whose variables are saved (`save`, `keep_numbered`).
        interval: epochs between numbered checkpoints (`system.checkpoint.save.interval`), or None for none.
        keep: how many numbered checkpoints to keep (`system.checkpoint.save.keep`), or None for all.
    """

    def __init__(self, session, interval, keep):
        super().__init__()
        self.session, self.interval, self.keep = session, interval, keep

    def on_epoch_end(self, epoch, logs=None):
        counter = logs["epoch"]
        if self.interval and float(counter).is_integer() and int(counter) % int(self.interval) == 0:
            self.session.save(epoch_name(counter))
            if self.keep:
                self.session.keep_numbered(int(self.keep))
        self.session.save("latest")

    def on_stop_request(self, logs=None):
        self.session.save("latest")
