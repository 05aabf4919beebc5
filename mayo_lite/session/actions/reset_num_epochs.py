"""The `reset-num-epochs` action: the epoch counter back to 0, so a loaded checkpoint trains a full schedule."""

import logging

from mayo_lite.session.epochs import epoch_text

log = logging.getLogger("mayo_lite")


def reset_num_epochs(runner):
    session = runner.session()
    log.info("epoch counter reset from %s to 0", epoch_text(session.epoch.value))
    session.epoch.assign(0.0)
