"""What several actions share: writing their figures as YAML with `system.info.plumbing`, and reading
`system.max_epochs`."""

import logging
import math

import yaml

from mayo_lite.errors import ConfigError
from mayo_lite.files import write_atomically

log = logging.getLogger("mayo_lite")


def plumbing(runner, name, data):
    if runner.cfg.get("system.info.plumbing", False):
        write_atomically(name, yaml.safe_dump(data, sort_keys=False))
        log.info("wrote %s", name)


def max_epochs(cfg):
    value = cfg.get("system.max_epochs")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{cfg.where('system.max_epochs')}: expected a positive number, "
                          f"got {value!r}")
    return float(value)
