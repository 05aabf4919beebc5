"""What several actions share: writing their figures as YAML with `system.info.plumbing` (on a worker other than
the chief of a multi-worker run, to its scratch directory)."""

import logging

import yaml

from mayo_lite.files import output_path, write_atomically

log = logging.getLogger("mayo_lite")


def plumbing(runner, name, data):
    if runner.settings.plumbing:
        path = output_path(name)
        write_atomically(path, yaml.safe_dump(data, sort_keys=False))
        log.info("wrote %s", path)

