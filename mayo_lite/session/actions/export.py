"""The `export` action: the merged, resolved config as `export.yaml`."""

import logging

from mayo_lite.files import output_path, write_atomically

log = logging.getLogger("mayo_lite")


def export(runner):
    path = output_path("export.yaml")
    write_atomically(path, runner.cfg.dump())
    log.info("wrote %s", path)
