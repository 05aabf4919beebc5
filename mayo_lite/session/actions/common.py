"""What several actions share: writing their figures as YAML with `system.info.plumbing`, and reading
`system.max_epochs`."""

import logging

import yaml

from mayo_lite.files import write_atomically

log = logging.getLogger("mayo_lite")


def plumbing(runner, name, data):
    if runner.cfg.get("system.info.plumbing", False):
        write_atomically(name, yaml.safe_dump(data, sort_keys=False))
        log.info("wrote %s", name)


def max_epochs(cfg):
    return float(cfg.number("system.max_epochs", 0, low_open=True))
