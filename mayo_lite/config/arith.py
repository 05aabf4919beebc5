"""`!arith` expressions: a restricted evaluator over Python's `ast`, in place of Mayo's `eval`.

The references module substitutes `$()` placeholders as literals before calling `evaluate`; an expression that
still waits for a module's `^()` arguments stays an `Arith` until `substitute_module_kwargs` supplies them.
"""

import ast
import math
import operator
import warnings

import yaml

MAX_EXPRESSION_LENGTH = 100_000
# About 3,900 decimal digits: below Python's 4,300-digit limit on int/str conversion, so any result can be printed.
MAX_INT_BITS = 13_000
MAX_EXPONENT = 10_000
MAX_SEQUENCE_LENGTH = 1_000_000


class Arith:
    """An `!arith` expression not evaluated yet; `expr` is its text. Dumped back as `!arith EXPR`."""

    __slots__ = ("expr",)

    def __init__(self, expr):
        object.__setattr__(self, "expr", expr)

    def __setattr__(self, name, value):
        raise AttributeError("Arith is immutable")

    def __eq__(self, other):
        return isinstance(other, Arith) and other.expr == self.expr

    # Unhashable on purpose: PyYAML then refuses `? !arith ...` as a mapping key.
    __hash__ = None

    def __repr__(self):
        return f"Arith({self.expr!r})"

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


class Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, writing an unevaluated `Arith` back as `!arith EXPR`."""


Dumper.add_representer(Arith, lambda dumper, arith: dumper.represent_scalar("!arith", arith.expr))


class ArithError(ValueError):
    """An expression that cannot be evaluated; the caller adds the file and key path."""


def literal(value):
    """The Python literal that stands for a resolved config value inside an expression."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "-float('inf')"
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal(item) for item in value) + "]"
    if isinstance(value, Arith):
        return f"({value.expr})"
    kind = "mapping" if isinstance(value, dict) else type(value).__name__
    raise ArithError(f"a {kind} cannot be used in an expression (numbers, strings, lists and booleans can)")


def _nested_size(value, cap):
    """Items in a list counting nested lists and string characters; stops counting past `cap`."""
    if isinstance(value, str):
        return len(value)
    size, pending = 0, [value]
    while pending and size <= cap:
        items = pending.pop()
        size += len(items)
        for item in items:
            if isinstance(item, list):
                pending.append(item)
            elif isinstance(item, str):
                size += len(item)
    return size


def _is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _power(base, exponent):
    # 9 ** 10**9 would run for minutes; estimate the size from the operands instead.
    if _is_integer(base) and _is_integer(exponent) and exponent > 0 and abs(base) > 1:
        if exponent > MAX_EXPONENT or exponent * (abs(base).bit_length() - 1) > MAX_INT_BITS:
            raise ArithError(f"`{base} ** {exponent}` is too large")
    return base**exponent


def _modulo(left, right):
    # On strings `%` is printf formatting (`"%999999999d" % 1`), not arithmetic.
    if isinstance(left, str):
        raise ArithError("`%` on a string (formatting) is not allowed")
    return left % right


_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: _modulo,
    ast.Pow: _power,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda item, container: item in container,
    ast.NotIn: lambda item, container: item not in container,
}
_NAMES = {"True": True, "False": False, "None": None, "true": True, "false": False, "null": None}
_FUNCTIONS = {"min": min, "max": max, "abs": abs, "int": int, "float": float, "round": round, "len": len}
_MATH_FUNCTIONS = {"sqrt": math.sqrt, "ceil": math.ceil, "floor": math.floor, "log": math.log, "exp": math.exp}
_ALLOWED_CALLS = ", ".join([f"math.{name}" for name in _MATH_FUNCTIONS] + list(_FUNCTIONS))
_CONSTANT_TYPES = (bool, int, float, str, type(None))


class _Evaluator:
    """Walks the syntax tree of one expression; a table maps each allowed node type to its method."""

    def __init__(self, text):
        self.text = text
        # Lists can share items (`[x] * 1000`), so what the expression builds is charged by its expanded size,
        # which is what resolving and dumping the config will have to copy.
        self.budget = MAX_SEQUENCE_LENGTH

    def evaluate(self, node):
        method = self._METHODS.get(type(node))
        if method is None:
            raise self._refuse(node)
        return self._charge(method(self, node))

    def _charge(self, value):
        if isinstance(value, complex):
            raise ArithError("result is a complex number")
        if _is_integer(value) and value.bit_length() > MAX_INT_BITS:
            raise ArithError(f"result too large (more than {MAX_INT_BITS:,} bits)")
        if isinstance(value, (str, list)):
            self.budget -= _nested_size(value, self.budget)
            if self.budget < 0:
                raise ArithError(f"expression builds more than {MAX_SEQUENCE_LENGTH:,} list items or characters")
        return value

    def _refuse(self, node, hint=""):
        source = ast.get_source_segment(self.text, node) or type(node).__name__
        if len(source) > 40:
            source = source[:37] + "..."
        return ArithError(f"`{source}` is not allowed{hint}")

    def _constant(self, node):
        if not isinstance(node.value, _CONSTANT_TYPES):
            raise self._refuse(node)
        return node.value

    def _name(self, node):
        # Mayo reads any other bare name as its own text (`'same' if ^(stride) == 1 else valid`).
        return _NAMES.get(node.id, node.id)

    def _attribute(self, node):
        raise self._refuse(node, " (no attribute access; call math functions as math.sqrt(x))")

    def _sequence(self, node):
        return [self.evaluate(item) for item in node.elts]

    def _binary(self, node):
        function = _BINARY.get(type(node.op))
        if function is None:
            raise self._refuse(node)
        left, right = self.evaluate(node.left), self.evaluate(node.right)
        if isinstance(node.op, ast.Mult):
            self._check_repetition(left, right)
        return function(left, right)

    def _check_repetition(self, left, right):
        # `"x" * 10**9` would allocate before the result could be charged, so repetition is sized first.
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, (str, list)) and isinstance(count, int):
                if _nested_size(sequence, self.budget) * max(count, 0) > self.budget:
                    raise ArithError(f"expression builds more than {MAX_SEQUENCE_LENGTH:,} list items or characters")

    def _unary(self, node):
        function = _UNARY.get(type(node.op))
        if function is None:
            raise self._refuse(node)
        return function(self.evaluate(node.operand))

    def _compare(self, node):
        left = self.evaluate(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            function = _COMPARE.get(type(op))
            if function is None:
                raise self._refuse(node)
            right = self.evaluate(right_node)
            if not function(left, right):
                return False
            left = right
        return True

    def _boolean(self, node):
        is_and = isinstance(node.op, ast.And)
        value = None
        for operand in node.values:
            value = self.evaluate(operand)
            if bool(value) != is_and:
                return value
        return value

    def _conditional(self, node):
        return self.evaluate(node.body) if self.evaluate(node.test) else self.evaluate(node.orelse)

    def _subscript(self, node):
        container = self.evaluate(node.value)
        if not isinstance(container, (list, str)):
            raise ArithError(f"cannot index a {type(container).__name__}; only lists and strings")
        if isinstance(node.slice, ast.Slice):
            parts = (node.slice.lower, node.slice.upper, node.slice.step)
            bounds = [None if part is None else self.evaluate(part) for part in parts]
            if not all(bound is None or _is_integer(bound) for bound in bounds):
                raise ArithError("slice bounds must be integers")
            return container[slice(*bounds)]
        index = self.evaluate(node.slice)
        if not _is_integer(index):
            raise ArithError(f"an index must be an integer, got {type(index).__name__}")
        return container[index]

    def _call(self, node):
        function = self._function(node.func)
        if node.keywords or any(isinstance(argument, ast.Starred) for argument in node.args):
            raise self._refuse(node, ": only positional arguments")
        return function(*[self.evaluate(argument) for argument in node.args])

    def _function(self, node):
        if isinstance(node, ast.Name) and node.id in _FUNCTIONS:
            return _FUNCTIONS[node.id]
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "math"
            and node.attr in _MATH_FUNCTIONS
        ):
            return _MATH_FUNCTIONS[node.attr]
        raise self._refuse(node, f" (functions: {_ALLOWED_CALLS})")

    _METHODS = {
        ast.Constant: _constant,
        ast.Name: _name,
        ast.Attribute: _attribute,
        ast.List: _sequence,
        ast.Tuple: _sequence,
        ast.BinOp: _binary,
        ast.UnaryOp: _unary,
        ast.Compare: _compare,
        ast.BoolOp: _boolean,
        ast.IfExp: _conditional,
        ast.Subscript: _subscript,
        ast.Call: _call,
    }


def evaluate(text):
    """Evaluate one expression whose placeholders are already substituted; raise ArithError on anything else."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ArithError(f"expression longer than {MAX_EXPRESSION_LENGTH:,} characters")
    if not text.strip():
        raise ArithError("empty expression")
    try:
        with warnings.catch_warnings():
            # Python warns about spellings like `1if x else 2` on stderr; a config is not Python source.
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ArithError(f"syntax error in `{_shorten(text)}`: {error.msg}") from None
    except (ValueError, RecursionError, MemoryError) as error:
        raise ArithError(f"cannot parse `{_shorten(text)}`: {error}") from None
    try:
        return _Evaluator(text.strip()).evaluate(tree.body)
    except ArithError:
        raise
    except RecursionError:
        raise ArithError("expression nested too deeply") from None
    except (ArithmeticError, TypeError, ValueError, IndexError) as error:
        raise ArithError(f"{type(error).__name__}: {error}") from None


def _shorten(text):
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."
