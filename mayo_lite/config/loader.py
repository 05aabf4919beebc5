"""Reading YAML into config trees: a safe loader with `!arith`, size limits, dotted keys and `_import`.

What this returns is plain data (plus `Arith` nodes) for the Config to merge; `$()` references stay text
until the references module resolves them.
"""

import datetime
import os
import re
import stat
from pathlib import Path

import yaml

from mayo_lite.config.arith import Arith
from mayo_lite.config.keys import format_path, is_dotted, located_error, parse_path
from mayo_lite.config.tree import merge_into
from mayo_lite.errors import ConfigError

MAX_NODES = 1_000_000
MAX_DEPTH = 100

_CORE_TAG_PREFIX = "tag:yaml.org,2002:"
_CODE_TAGS = ("!exec", "!eval")
# What the safe loader can build besides mappings and lists; anything else (a Python object handed to
# `Config.set`) has no YAML form and would break `export`.
_SCALAR_TYPES = (str, int, float, bool, type(None), bytes, datetime.date, Arith)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader plus `!arith`; every other tag that is not core YAML is refused."""

    def __init__(self, stream, name):
        super().__init__(stream)
        self.name = name
        self.depth = 0

    def compose_node(self, parent, index):
        # PyYAML composes recursively; stopping at the config's own depth limit fails fast with a line number
        # instead of a slow RecursionError thousands of brackets deep.
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH + 1:
                line = self.peek_event().start_mark.line + 1
                raise located_error(self.name, f"line {line}", f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _construct_mapping(loader, node, deep=False):
    """PyYAML's mapping constructor, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key; the constructor below says so
                continue
            if first is not key_node:
                raise located_error(loader.name, f"line {key_node.start_mark.line + 1}",
                                    f"duplicate key {str(key)[:80]!r} (first given on line "
                                    f"{first.start_mark.line + 1})")
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _construct_arith(loader, node):
    if not isinstance(node, yaml.ScalarNode):
        line = f"line {node.start_mark.line + 1}"
        raise located_error(loader.name, line, "!arith takes one expression, not a mapping or list")
    return Arith(loader.construct_scalar(node))


def _refuse_tag(loader, node):
    tag = node.tag
    shown = "!!" + tag[len(_CORE_TAG_PREFIX):] if tag.startswith(_CORE_TAG_PREFIX) else tag
    if tag in _CODE_TAGS:
        reason = "runs code; use !arith"
    elif tag.startswith(_CORE_TAG_PREFIX + "python/"):
        reason = "builds Python objects; a config holds plain data"
    else:
        reason = "is an unknown tag (the only tag beyond core YAML is !arith)"
    raise located_error(loader.name, f"line {node.start_mark.line + 1}", f"refused: {shown} {reason}")


_Loader.add_constructor("!arith", _construct_arith)
_Loader.construct_mapping = _construct_mapping
# YAML 1.1 reads `1e-3` (no dot) as a string; researchers write learning rates and decays that way, so it is a
# float here, as in YAML 1.2 and JSON.
_Loader.add_implicit_resolver(
    _CORE_TAG_PREFIX + "float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))
_Loader.add_constructor(None, _refuse_tag)


def parse_yaml(text, name):
    """The document in `text` (str or bytes) as Python data; every failure is a one-line ConfigError."""
    loader = None
    try:
        # The reader checks the first characters as soon as the loader is made, so that is inside the `try` too.
        loader = _Loader(text, name)
        return loader.get_single_data()
    except ConfigError:
        raise
    except yaml.reader.ReaderError as error:
        raise located_error(name, f"character {error.position + 1}", f"invalid YAML: {error.reason}") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        place = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = "; ".join(part for part in (error.context, error.problem) if part)
        raise located_error(name, place, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as error:
        raise located_error(name, f"invalid YAML: {error}") from None
    except RecursionError:
        raise located_error(name, "invalid YAML: nested too deeply") from None
    except Exception as error:
        # PyYAML's constructors let plain Python errors through on odd input (`!!timestamp 2001-13-45` is a
        # ValueError, `!!timestamp x` an AttributeError, a 5,000-digit int a ValueError); a file is user input.
        raise located_error(name, f"invalid YAML value: {type(error).__name__}: {error}") from None
    finally:
        if loader is not None:
            loader.dispose()


def to_tree(document, name):
    """Check the size of a loaded document, then copy it into a config tree with dotted keys expanded.

    PyYAML builds an aliased node once and shares it, so a "billion laughs" loads in microseconds; it is the
    copy that would explode. Sizes are therefore measured first, once per shared node.
    """
    _measure(document, (), name, {}, set())
    return _convert(document, (), name)


def _measure(value, path, name, sizes, active):
    """(expanded node count, height) of `value`, counting a shared node every time it is reached."""
    if not isinstance(value, (dict, list, tuple)):
        return 1, 0
    known = sizes.get(id(value))
    if known is None:
        if len(path) >= MAX_DEPTH:
            raise located_error(name, format_path(path), f"nested deeper than {MAX_DEPTH} levels")
        if id(value) in active:
            raise located_error(name, format_path(path), "an alias refers to a mapping or list that contains it")
        active.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        size, height = 1, 0
        for key, child in items:
            child_size, child_height = _measure(child, path + (key,), name, sizes, active)
            size += child_size
            height = max(height, child_height + 1)
            if size > MAX_NODES:
                raise located_error(name, f"more than {MAX_NODES:,} values once aliases are expanded")
        active.discard(id(value))
        known = sizes[id(value)] = (size, height)
    if len(path) + known[1] > MAX_DEPTH:
        raise located_error(name, format_path(path), f"nested deeper than {MAX_DEPTH} levels")
    return known


def _convert(value, path, name):
    if len(path) > MAX_DEPTH:
        raise located_error(name, format_path(path), f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        tree = {}
        for key, child in value.items():
            keys = _key_path(key, path, name)
            _insert(tree, keys, _convert(child, path + keys, name))
        return tree
    if isinstance(value, (list, tuple)):
        return [_convert(item, path + (index,), name) for index, item in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return set(value)
    if isinstance(value, _SCALAR_TYPES):
        return value
    raise located_error(name, format_path(path), f"a {type(value).__name__} cannot be held in a config; use plain data")


def _key_path(key, path, name):
    if not is_dotted(key):
        return (key,)
    try:
        return parse_path(key)
    except ValueError as error:
        raise located_error(name, format_path(path), error) from None


def _insert(tree, keys, value):
    # Within one file `a.b: 1` and `a: {c: 2}` merge exactly as they would across files.
    node = tree
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if isinstance(value, dict) and isinstance(node.get(keys[-1]), dict):
        merge_into(node[keys[-1]], value)
    else:
        node[keys[-1]] = value


# A config file is a few kilobytes; reading stops here, so a device (/dev/zero) or a huge file fails at once.
MAX_FILE_BYTES = 16 * 1024 * 1024


def read_file(path, name):
    """The tree of one YAML file, `_import` still in it."""
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise located_error(name, "is a directory, not a config file")
        if not stat.S_ISREG(info.st_mode):
            # Opening a FIFO would wait for a writer forever; a device may never end.
            raise located_error(name, "is not a regular file (a pipe, socket or device), not a config file")
        with open(path, "rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise located_error(name, f"cannot read: {error.strerror or error}") from None
    if len(data) > MAX_FILE_BYTES:
        raise located_error(name, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; not a config file")
    document = parse_yaml(data, name)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise located_error(name, f"the top level must be a mapping, not a {type(document).__name__}")
    return to_tree(document, name)


def parse_value(text, name):
    """An override's VALUE: YAML through the same safe loader and limits as a file."""
    return to_tree(parse_yaml(text, name), name)


def load_file(path, name):
    """The trees to merge for one config file, imported files first, each paired with the name it came from."""
    layers = []
    _load_with_imports(Path(path), name, (), layers)
    return layers


def _load_with_imports(path, name, chain, layers):
    real = os.path.realpath(path)
    seen = [entry_real for entry_real, _ in chain]
    if real in seen:
        cycle = [entry_name for _, entry_name in chain[seen.index(real):]] + [name]
        raise located_error(chain[-1][1], "_import", "import cycle " + " -> ".join(cycle))
    tree = read_file(path, name)
    imports = tree.pop("_import", None)
    chain = chain + ((real, name),)
    for imported in _import_names(imports, name):
        target = path.parent / imported
        if not target.is_file():
            problem = "is a directory, not a config file" if target.is_dir() else "no such file"
            raise located_error(name, "_import", f"{imported}: {problem} (looked for {target})")
        target_name = os.path.normpath(os.path.join(os.path.dirname(name), imported))
        _load_with_imports(target, target_name, chain, layers)
    layers.append((tree, name))


def _import_names(imports, name):
    if imports is None:
        return []
    names = [imports] if isinstance(imports, str) else imports
    if not isinstance(names, list) or not all(isinstance(entry, str) and entry for entry in names):
        raise located_error(name, "_import", "expected a file name or a list of file names")
    return names
