"""The YAML configuration language of mayo-lite (docs/config-language.md): `Config` and module substitution.

`Config` merges the built-in defaults, YAML files and command-line overrides, and resolves `$()` references and
`!arith` expressions lazily, when a value is read. The `cli` feeds it arguments, the `session` reads it; like
them it never sees TensorFlow. `loader`, `tree`, `references`, `arith` and `keys` each hold one part of the language.
"""

import copy
import functools
import logging
import math
import os
import re
from pathlib import Path

import yaml

import mayo_lite
from mayo_lite.config.arith import Arith, Dumper
from mayo_lite.config.keys import format_path, located_error, parse_path, shorten
from mayo_lite.errors import did_you_mean, interval
from mayo_lite.config.loader import MAX_DEPTH, load_file, parse_value, to_tree
from mayo_lite.config.references import MissingPath, Resolver, expand_modules, substitute_module_kwargs
from mayo_lite.config.tree import Origins, PathError, merge_into, set_path

__all__ = ["Config", "substitute_module_kwargs", "BUNDLED_CONFIGS", "Arith"]

log = logging.getLogger("mayo_lite")

_PACKAGE_DIR = Path(mayo_lite.__file__).resolve().parent
# An installed wheel carries the configs inside the package; a source checkout has them beside it.
BUNDLED_CONFIGS = (
    _PACKAGE_DIR / "configs" if (_PACKAGE_DIR / "configs").is_dir() else _PACKAGE_DIR.parent / "configs"
)
DEFAULTS = Path(__file__).resolve().parent / "defaults.yaml"

_REQUIRED = object()
SAFE_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,99}")


def _no_recursion_error(method):
    # Limits on nesting and reference depth keep resolution well inside Python's stack, but a caller that is
    # itself deep in the stack could still hit the ceiling; that must read as a config error, not a crash.
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except RecursionError:
            subject = repr(args[0])[:80] if args else ""
            raise located_error(f"Config.{method.__name__}({subject})", "nested too deeply to process") from None

    return guarded


@functools.lru_cache(maxsize=1)
def _defaults():
    tree = {}
    for layer, _ in load_file(DEFAULTS, "defaults"):
        merge_into(tree, layer)
    return tree


def _nest(keys, value):
    for key in reversed(keys):
        value = {key: value}
    return value


# Sections whose every key the built-in defaults list: a key there that the defaults lack is a typo, since nothing
# reads it (`system.max_epoch=2` would otherwise train toward the default number of epochs).
CLOSED_SECTIONS = ("system",)


def _older_mayo_dataset(tree):
    """Mayo's older files (its input-gated and Hadamard models) set `dataset.preprocess` and
    `dataset.background_class`, which later Mayo moved under `dataset.task`: moved there, where a file of the new
    layout would have them (a key the file also sets there stays as that file sets it)."""
    dataset = tree.get("dataset") if isinstance(tree, dict) else None
    if not isinstance(dataset, dict):
        return
    for key in ("preprocess", "background_class"):
        if isinstance(dataset.get(key), dict):
            task = dataset.setdefault("task", {})
            if isinstance(task, dict):
                moved = dataset.pop(key)
                task[key] = {**moved, **task.get(key, {})} if isinstance(task.get(key), dict) else moved


def _check_known_keys(tree, path, defaults, origin):
    """Raises for a key of a closed section that the defaults do not have, with the closest known key."""
    for key, value in tree.items():
        here = path + (key,)
        if not path and key not in CLOSED_SECTIONS:
            continue
        if not isinstance(defaults, dict):
            return
        if key not in defaults:
            known = [str(name) for name in defaults]
            hint = (did_you_mean(key, known, prefix=format_path(path) + ".")
                    or f"known: {', '.join(known)}")
            raise located_error(origin, format_path(here), f"unknown key; {hint}")
        if isinstance(value, dict) and isinstance(defaults[key], dict):
            _check_known_keys(value, here, defaults[key], origin)


class Config:
    """A configuration: defaults, then every file and override merged in order, read through `get`.

    Every `load`, `override` and `set` increments `version`, so holders of derived state (the session)
    can tell that the config changed.
    """

    def __init__(self):
        self._tree = {}
        self._origins = Origins()
        self.version = 0
        self._reads = set()  # key paths read through `get`, for `unread_overrides`
        self._overrides = []
        for tree, name in load_file(DEFAULTS, "defaults"):
            merge_into(self._tree, tree, self._origins, name)

    @_no_recursion_error
    def load(self, path):
        """Merge a YAML file and what it imports; looked up in the current directory, then in the bundled configs."""
        found, name = self._find(path)
        layers = load_file(found, name)
        for tree, layer_name in layers:
            _older_mayo_dataset(tree)
            _check_known_keys(tree, (), _defaults(), layer_name)
        for tree, layer_name in layers:
            merge_into(self._tree, tree, self._origins, layer_name)
        self.version += 1

    @staticmethod
    def _find(path):
        text = os.fspath(path)
        candidate = Path(text)
        if candidate.exists():
            return candidate, text
        bundled = BUNDLED_CONFIGS / candidate
        if not candidate.is_absolute() and bundled.exists():
            relative = os.path.relpath(bundled)
            return bundled, relative if not relative.startswith("..") else str(bundled)
        raise located_error(text, f"no such config file (looked in ./ and {BUNDLED_CONFIGS})")

    @_no_recursion_error
    def override(self, argument):
        """Apply a command-line `key.path=VALUE`, VALUE read as YAML."""
        origin = f"command line ({argument})"
        key, separator, text = argument.partition("=")
        if not separator or not key.strip():
            raise located_error(origin, "expected KEY.PATH=VALUE")
        keys = self._parse(key.strip(), origin)
        value = parse_value(text, origin)
        _check_known_keys(_nest(keys, value), (), _defaults(), origin)
        self._set(key.strip(), value, origin)
        self._overrides.append((keys, origin))

    def unread_overrides(self):
        """The command-line overrides (`origin` texts) that set a key no `get` has read since: probably typos.
        Private keys (`_gate.density`) are read through references, so they are not listed."""
        def read(keys):
            return any(keys[:len(path)] == path or path[:len(keys)] == keys for path in self._reads)
        return [origin for keys, origin in self._overrides
                if not any(str(key).startswith("_") for key in keys) and not read(keys)]

    @_no_recursion_error
    def set(self, path, value, origin="Config.set"):
        """Set a key path to a plain Python value (replacing what was there), creating mappings on the way."""
        self._set(path, to_tree(value, origin), origin)

    def _set(self, path, value, origin):
        keys = self._parse(path, origin)
        if len(keys) > MAX_DEPTH:
            raise located_error(origin, f"key path deeper than {MAX_DEPTH} levels")
        try:
            set_path(self._tree, keys, value, self._origins, origin)
        except PathError as error:
            raise located_error(origin, error) from None
        self.version += 1

    @_no_recursion_error
    def get(self, path, default=_REQUIRED):
        """The fully resolved value at a key path (a copy); `default` if given and the path does not exist."""
        keys = self._parse(path)
        self._reads.add(keys)
        try:
            value = Resolver(self._tree, self._origins).read(keys)
            if isinstance(value, (dict, list)) and "^(" in repr(value):
                value = expand_modules(value, keys, lambda at: self.where(format_path(at)))
            return value
        except MissingPath as missing:
            if default is not _REQUIRED:
                return default
            raise self._missing(missing) from None

    # -- typed readers: the value at a key path, checked; a bad one is a ConfigError naming the file and key ------

    def _bad(self, path, expected, value):
        return located_error(self.origin(path), path, f"expected {expected}, got {shorten(repr(value), 120)}")

    def integer(self, path, low=None, high=None, optional=False, default=_REQUIRED):
        """An integer in [low, high] (None: unbounded); None too when `optional`."""
        value = self.get(path, default) if default is not _REQUIRED else self.get(path)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) or (
                high is not None and value > high):
            bounds = {(None, None): "an integer", (1, None): "a positive integer", (0, None): "an integer ≥ 0"}
            expected = bounds.get((low, high), f"an integer in {interval(low, high)}")
            raise self._bad(path, expected + (" or null" if optional else ""), value)
        return value

    def number(self, path, low=-math.inf, high=math.inf, low_open=False, optional=False, default=_REQUIRED):
        """A finite number in [low, high] (`(low, high]` when `low_open`); None too when `optional`."""
        value = self.get(path, default) if default is not _REQUIRED else self.get(path)
        if value is None and optional:
            return None
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value < low or value > high or (low_open and value == low)):
            positive = (low, high, low_open) == (0, math.inf, True)
            expected = ("a positive number" if positive else "a number" if (low, high) == (-math.inf, math.inf)
                        else f"a number in {interval(low, high, low_open)}")
            raise self._bad(path, expected + (" or null" if optional else ""), value)
        return float(value) if isinstance(value, float) else value

    def fraction(self, path, default=_REQUIRED):
        """A number in (0, 1]."""
        return self.number(path, 0, 1, low_open=True, default=default)

    def choice(self, path, choices, default=_REQUIRED):
        """One of `choices` (a table or a sequence)."""
        value = self.get(path, default) if default is not _REQUIRED else self.get(path)
        try:
            known = value in choices
        except TypeError:
            known = False
        if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
            known = False
        if not known:
            suggestion = did_you_mean(value, choices)
            hint = f" ({suggestion})" if suggestion else ""
            raise self._bad(path, "one of " + ", ".join(str(c) for c in choices) + hint, value)
        return value

    def boolean(self, path, default=_REQUIRED):
        value = self.get(path, default) if default is not _REQUIRED else self.get(path)
        if not isinstance(value, bool):
            raise self._bad(path, "true or false", value)
        return value

    def name(self, path, default=_REQUIRED):
        """A name that is also a safe file-name component (checkpoint and plot directories are named after it)."""
        value = self.get(path, default) if default is not _REQUIRED else self.get(path)
        if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or value in (".", ".."):
            raise self._bad(path, "a name of letters, digits, '_', '-', '.' and '+' (at most 100 characters, "
                                  "no '/'), used in file paths", value)
        return value

    def __getitem__(self, path):
        return self.get(path)

    def __contains__(self, path):
        absent = object()
        return self.get(path, absent) is not absent

    @_no_recursion_error
    def raw(self, path):
        """The value at a key path as merged, references and expressions not resolved (a copy)."""
        try:
            node, _ = Resolver(self._tree, self._origins).locate(self._parse(path))
        except MissingPath as missing:
            raise self._missing(missing) from None
        return copy.deepcopy(node)

    @_no_recursion_error
    def resolved(self):
        """The whole config, fully resolved, as plain Python data."""
        self._reads.add(())
        return Resolver(self._tree, self._origins).read_all()

    def dump(self):
        """The fully resolved config as YAML text."""
        return yaml.dump(self.resolved(), Dumper=Dumper, sort_keys=False, allow_unicode=True)

    def origin(self, path):
        """The file or override that last set a key path or its nearest ancestor (None if none did)."""
        return self._origins.lookup(self._parse(path))

    def where(self, path):
        """`file: key.path` for error messages, or just the key path when nothing set it."""
        origin = self.origin(path)
        return f"{origin}: {path}" if origin else path

    def copy(self):
        """An independent copy: changing one never changes the other."""
        twin = Config.__new__(Config)
        twin._tree = copy.deepcopy(self._tree)
        twin._origins = self._origins.copy()
        twin.version = self.version
        twin._reads, twin._overrides = set(), []
        return twin

    @staticmethod
    def _parse(path, origin=None):
        if not isinstance(path, str):
            raise located_error(origin, f"a key path must be a string, not {type(path).__name__}")
        try:
            return parse_path(path)
        except ValueError as error:
            raise located_error(origin, error) from None

    def _missing(self, missing):
        origin = self._origins.lookup(missing.found)
        return located_error(origin, format_path(missing.path), f"no such key ({missing.detail})")
