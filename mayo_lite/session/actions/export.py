"""The `export` action: the merged, resolved config as `export.yaml`."""

import logging

from mayo_lite.files import write_atomically

log = logging.getLogger("mayo_lite")


def export(runner):
    write_atomically("export.yaml", runner.cfg.dump())
    log.info("wrote export.yaml")
