"""Lazy resolution of `$()` references and `!arith` expressions, and the later `^()` module substitution.

The Config makes one Resolver per read, so what is read always reflects the latest merge or override.
"""

import copy
import re

import yaml

from mayo_lite.config.arith import Arith, ArithError, Dumper, evaluate, literal
from mayo_lite.config.keys import describe, find_key, format_path, list_index, located_error, parse_path
from mayo_lite.config.loader import MAX_NODES

REFERENCE = re.compile(r"\$\(([^()]*)\)")


def _inside_placeholder(text, position):
    """Whether `position` of `text` lies inside an unclosed `$(` (the inner part of `$(a.$(b))`)."""
    depth, index = 0, 0
    while index < position:
        if text.startswith("$(", index):
            depth, index = depth + 1, index + 2
            continue
        if text[index] == ")" and depth:
            depth -= 1
        index += 1
    return depth > 0
MODULE_ARGUMENT = re.compile(r"\^\(([^()]*)\)")
# Each step of a reference chain costs a few Python frames; stopping here keeps well inside Python's
# recursion limit with a message that says what happened.
MAX_RESOLUTION_DEPTH = 150


class MissingPath(LookupError):
    """A key path that does not exist; `found` is the longest prefix that does, `detail` says what is there."""

    def __init__(self, path, found, detail):
        super().__init__(f"{format_path(path)}: {detail}")
        self.path = path
        self.found = found
        self.detail = detail


def as_text(value):
    """How a value reads when interpolated into a string: YAML spelling (`true`, `null`, `[1, 2]`)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (dict, list)):
        return yaml.dump(value, Dumper=Dumper, default_flow_style=True, width=float("inf")).strip()
    if isinstance(value, Arith):
        raise ArithError("an expression that waits for a module's ^() arguments cannot be interpolated into text")
    return str(value)


def child(node, segment, path, depth):
    """Step from `node` (reached by `path[:depth]`) into `segment`; return (key, value) or raise MissingPath."""
    if isinstance(node, dict):
        key = find_key(node, segment)
    elif isinstance(node, list):
        key = list_index(node, segment)
    else:
        key = None
    if key is None:
        holder = format_path(path[:depth]) if depth else "the top level"
        raise MissingPath(path[: depth + 1], path[:depth], f"{holder} {describe(node)}")
    return key, node[key]


class Resolver:
    """Resolves values of one config tree, detecting reference cycles and bounding the work.

    Every value being resolved is on a stack under its location (its key path in the tree); meeting a location
    again is a cycle. The value of each referenced path is computed once per read and reused; a budget on the
    size of what is produced, reused values counted in full, stops references that multiply
    (`a: [$(b), $(b)]`, `b: [$(c), $(c)]`, ...) before they are expanded.
    """

    def __init__(self, tree, origins):
        self._tree = tree
        self._origins = origins
        self._stack = []
        self._active = set()
        self._budget = MAX_NODES
        self._cache = {}
        self._reused = False

    def where(self, location):
        """The `file: key.path` prefix of a message about the value at `location`."""
        return self._origins.lookup(location), format_path(location)

    def locate(self, path):
        """The raw value at `path` and its location, following no reference; raise MissingPath."""
        node, location = self._tree, ()
        for depth, segment in enumerate(path):
            key, node = child(node, segment, path, depth)
            location += (key,)
        return node, location

    def read(self, path):
        """The resolved value at `path`, a tree of its own; raise MissingPath."""
        return self._unshared(self._lookup(path))

    def read_all(self):
        """The whole config resolved, a tree of its own."""
        return self._unshared(self.resolve(self._tree, ()))

    def _unshared(self, value):
        # Reused values appear in several places of the result; the caller must be free to change one place.
        return _copy_tree(value) if self._reused else value

    def _lookup(self, path):
        """The resolved value at `path`, following references met on the way; raise MissingPath."""
        cached = self._cache.get(path)
        if cached is not None:
            value, size = cached
            self._reused = True
            self._spend(size, path)
            return value
        budget = self._budget
        node, location = self._tree, ()
        for depth, segment in enumerate(path):
            if isinstance(node, (str, Arith)):
                # `gate_params: $(_gate)` makes `gate_params.density` a path too.
                node = self.resolve(node, location)
                for inner_depth in range(depth, len(path)):
                    _, node = child(node, path[inner_depth], path, inner_depth)
                break
            key, node = child(node, segment, path, depth)
            location += (key,)
        else:
            node = self.resolve(node, location)
        self._cache[path] = (node, budget - self._budget)
        return node

    def _spend(self, size, location):
        self._budget -= size
        if self._budget < 0:
            problem = f"resolving it produces more than {MAX_NODES:,} values (references that multiply?)"
            raise located_error(*self.where(location), problem)

    def resolve(self, node, location):
        """The fully resolved value of the raw `node` found at `location`."""
        self._spend(1, location)
        if isinstance(node, dict):
            self._enter(location)
            resolved = {key: self.resolve(value, location + (key,)) for key, value in node.items()}
        elif isinstance(node, list):
            self._enter(location)
            resolved = [self.resolve(value, location + (index,)) for index, value in enumerate(node)]
        elif isinstance(node, str) and "$(" in node:
            self._enter(location)
            resolved = self._resolve_text(node, location)
        elif isinstance(node, Arith):
            self._enter(location)
            resolved = self._resolve_arith(node, location)
        elif isinstance(node, set):
            return set(node)
        else:
            return node
        self._leave(location)
        return resolved

    def _enter(self, location):
        if location in self._active:
            cycle = self._stack[self._stack.index(location):] + [location]
            names = " -> ".join(format_path(entry) for entry in cycle)
            raise located_error(*self.where(location), f"reference cycle {names}")
        if len(self._stack) >= MAX_RESOLUTION_DEPTH:
            raise located_error(*self.where(location), f"references nested more than {MAX_RESOLUTION_DEPTH} deep")
        self._stack.append(location)
        self._active.add(location)

    def _leave(self, location):
        self._stack.pop()
        self._active.discard(location)

    def _resolve_text(self, text, location):
        # Innermost placeholders first, again until none is left: `$(a.$(b))` reads `b`, then `a.<b's value>`.
        for _ in range(MAX_RESOLUTION_DEPTH):
            whole = REFERENCE.fullmatch(text)
            if whole:
                return self._reference(whole.group(1), location)
            try:
                text, count = REFERENCE.subn(lambda match: as_text(self._reference(match.group(1), location)), text)
            except ArithError as error:
                raise located_error(*self.where(location), error) from None
            if not count or not REFERENCE.search(text):
                return text
        raise located_error(*self.where(location), f"references nested more than {MAX_RESOLUTION_DEPTH} deep")

    def _resolve_arith(self, arith, location):
        try:
            text = arith.expr
            for _ in range(MAX_RESOLUTION_DEPTH):
                if not REFERENCE.search(text):
                    break
                # A placeholder inside another is text in it; the outermost ones become literals.
                text = REFERENCE.sub(lambda match: (as_text if _inside_placeholder(text, match.start()) else literal)(
                    self._reference(match.group(1), location)), text)
            if MODULE_ARGUMENT.search(text):
                return Arith(text)
            return evaluate(text)
        except ArithError as error:
            raise located_error(*self.where(location), f"!arith {arith.expr.strip()}: {error}") from None

    def _reference(self, body, location):
        """The resolved value of the placeholder `$(body)` written at `location`."""
        path = self._reference_path(body, location)
        try:
            return self._lookup(path)
        except MissingPath as missing:
            raise located_error(*self.where(location), f"unresolvable reference $({body}) ({missing.detail})") from None

    def _reference_path(self, body, location):
        body = body.strip()
        try:
            if not body.startswith("."):
                return parse_path(body)
            # One dot is the mapping (or list) that holds the string; each further dot goes one level up.
            relative = body.lstrip(".")
            ups = len(body) - len(relative)
            if ups > len(location):
                raise ValueError("goes above the top of the config")
            return location[: len(location) - ups] + (parse_path(relative) if relative else ())
        except ValueError as error:
            raise located_error(*self.where(location), f"bad reference $({body}): {error}") from None


def _copy_tree(value):
    if isinstance(value, dict):
        return {key: _copy_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_tree(item) for item in value]
    if isinstance(value, set):
        return set(value)
    return value


def substitute_module_kwargs(tree, kwargs, where):
    """A copy of the `$()`-resolved `tree` with each `^(name)` replaced by `kwargs[name]`.

    A string that is exactly `^(name)` takes the argument's value and type; inside other text the argument is
    interpolated; an `Arith` gets the arguments as literals and is evaluated once none is left.
    """

    def argument(name):
        name = name.strip()
        if name not in kwargs:
            known = ", ".join(str(key) for key in kwargs) or "none"
            raise located_error(where, f"^({name}) is not a keyword argument of this module (has: {known})")
        return kwargs[name]

    def substitute(node):
        if isinstance(node, dict) and node.get("type") == "module" and isinstance(node.get("kwargs") or {}, dict):
            # An inner module: only the values it is given for its own arguments see this module's; its body's
            # `^()` are its own arguments, substituted when it is expanded in turn (Mayo's scoping).
            inner = node.get("kwargs") or {}
            return {key: substitute(value) if key in inner else copy.deepcopy(value) for key, value in node.items()}
        if isinstance(node, dict):
            return {key: substitute(value) for key, value in node.items()}
        if isinstance(node, list):
            return [substitute(value) for value in node]
        if isinstance(node, str) and "^(" in node:
            whole = MODULE_ARGUMENT.fullmatch(node)
            if whole:
                return copy.deepcopy(argument(whole.group(1)))
            return MODULE_ARGUMENT.sub(lambda match: as_text(argument(match.group(1))), node)
        if isinstance(node, Arith):
            text = MODULE_ARGUMENT.sub(lambda match: literal(argument(match.group(1))), node.expr)
            return Arith(text) if MODULE_ARGUMENT.search(text) else evaluate(text)
        return copy.deepcopy(node)

    try:
        return substitute(tree)
    except ArithError as error:
        raise located_error(where, f"!arith: {error}") from None
    except RecursionError:
        raise located_error(where, "nested too deeply") from None


def expand_modules(node, path, where):
    """`node` with the `^()` arguments of every `type: module` spec in it substituted (a module's `kwargs`, with the
    values its use gives), inner modules after outer ones, as the model builder needs them. `where(path)` names
    the file and key for errors."""
    if isinstance(node, list):
        return [expand_modules(item, path + (index,), where) for index, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    if node.get("type") == "module" and isinstance(node.get("kwargs", {}) or {}, dict):
        kwargs = node.get("kwargs") or {}
        values = {**kwargs, **{key: value for key, value in node.items() if key in kwargs}}
        node = dict(node)
        place = where(path)
        node["layers"] = substitute_module_kwargs(node.get("layers") or {}, values, f"{place}.layers")
        if "graph" in node:
            node["graph"] = substitute_module_kwargs(node["graph"], values, f"{place}.graph")
        node["layers"] = expand_modules(node["layers"], path + ("layers",), where)
        return node
    # Private keys (`_block: &block {type: module, ...}`) are templates, never built: their arguments stay open.
    return {key: value if str(key).startswith("_") else expand_modules(value, path + (key,), where)
            for key, value in node.items()}
