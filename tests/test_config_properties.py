"""Property tests of the configuration language: merging, overrides, reference resolution and hostile input."""

import math
import re
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mayo_lite.config import Arith, Config
from mayo_lite.config.arith import ArithError, evaluate
from mayo_lite.config.keys import find_key, list_index
from mayo_lite.config.tree import merge
from mayo_lite.errors import ConfigError

# Guards against blow-up (exponential expansion takes minutes or exhausts memory), not a speed target:
# generous, so a loaded CI machine does not fail it.
FAIL_FAST_SECONDS = 20

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = st.sampled_from(["a", "b", "c", "d", "0", "1"]) | st.integers(0, 2)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="$"), max_size=8)
)
VALUES = st.recursive(
    SCALARS | st.lists(SCALARS, max_size=3),
    lambda children: st.dictionaries(KEYS, children, max_size=4) | st.lists(children, max_size=3),
    max_leaves=12,
)
DOCUMENTS = st.dictionaries(KEYS, VALUES, max_size=4)


def yaml_text(value):
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf, allow_unicode=True)


def contains_text(value, text):
    if isinstance(value, dict):
        return any(contains_text(item, text) for item in value.values())
    if isinstance(value, list):
        return any(contains_text(item, text) for item in value)
    return isinstance(value, str) and text in value


# --- (a) merging ----------------------------------------------------------------------------------------------

# Merging is associative only where no key path holds a mapping in one document and a scalar or list in another:
# a scalar that replaces a mapping forgets it, so which side it is grouped with matters (see the last test of
# this section). Such documents keep every key to one kind: BRANCH_KEYS always hold mappings, LEAF_KEYS never do.
BRANCH_KEYS = st.sampled_from(["a", "b"])
LEAF_KEYS = st.sampled_from(["c", "d", "0"]) | st.integers(0, 2)
LEAVES = SCALARS | st.lists(SCALARS | st.dictionaries(KEYS, SCALARS, max_size=2), max_size=3)
CONSISTENT_DOCUMENTS = st.recursive(
    st.dictionaries(LEAF_KEYS, LEAVES, max_size=3),
    lambda children: st.builds(
        lambda leaves, branches: {**leaves, **branches},
        st.dictionaries(LEAF_KEYS, LEAVES, max_size=3),
        st.dictionaries(BRANCH_KEYS, children, max_size=2),
    ),
    max_leaves=6,
)


@SETTINGS
@given(CONSISTENT_DOCUMENTS, CONSISTENT_DOCUMENTS, CONSISTENT_DOCUMENTS)
def test_merge_is_associative(first, second, third):
    before = yaml_text([first, second, third])
    assert merge(merge(first, second), third) == merge(first, merge(second, third))
    assert yaml_text([first, second, third]) == before


def test_merge_is_a_left_fold_when_a_scalar_replaces_a_mapping():
    first, second, third = {"x": {"p": 1}}, {"x": 5}, {"x": {"q": 2}}
    assert merge(merge(first, second), third) == {"x": {"q": 2}}
    assert merge(first, merge(second, third)) == {"x": {"p": 1, "q": 2}}


@SETTINGS
@given(DOCUMENTS, DOCUMENTS)
def test_merge_keeps_every_key_and_the_overlay_wins_at_leaves(base, overlay):
    merged = merge(base, overlay)
    assert set(merged) == set(base) | set(overlay)
    for key, value in overlay.items():
        if not (isinstance(value, dict) and isinstance(base.get(key), dict)):
            assert merged[key] == value


# --- (b) overrides --------------------------------------------------------------------------------------------

PATH_SEGMENTS = st.lists(st.sampled_from(["a", "b", "c", "d", "0", "1", "2"]), min_size=1, max_size=4)


def settable(tree, path):
    """Whether `Config.set` can reach `path`: each step on the way is a mapping (missing keys are created) or
    an existing list index."""
    node = tree
    for depth, segment in enumerate(path):
        if isinstance(node, dict):
            key = find_key(node, segment)
            if key is None:
                return True
        elif isinstance(node, list):
            key = list_index(node, segment)
            if key is None:
                return False
        else:
            return False
        node = node[key]
    return True


def merged_documents(documents):
    tree = {}
    for document in documents:
        tree = merge(tree, document)
    return tree


@SETTINGS
@given(st.lists(DOCUMENTS, max_size=3), PATH_SEGMENTS, VALUES)
def test_an_override_always_wins(documents, path, value):
    text = yaml_text(value)
    assume(yaml.safe_load(text) == value)
    # By design this loader reads `1e-3` and `0E0` as floats, as YAML 1.2 does (PyYAML keeps them strings).
    assume(not (isinstance(value, str) and re.fullmatch(r"[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+", value)))
    cfg = Config()
    with tempfile.TemporaryDirectory() as directory:
        for index, document in enumerate(documents):
            file = Path(directory) / f"{index}.yaml"
            file.write_text(yaml_text(document))
            cfg.load(str(file))
    dotted = ".".join(path)
    try:
        cfg.override(f"{dotted}={text}")
    except ConfigError as error:
        assert "\n" not in str(error)
        assert not settable(merged_documents(documents), path)
        return
    assert settable(merged_documents(documents), path)
    assert cfg.get(dotted) == value
    assert cfg.origin(dotted) == f"command line ({dotted}={text})"


# --- (c) resolution terminates --------------------------------------------------------------------------------

def reference_values(count):
    target = st.integers(0, count - 1).map(lambda index: f"k{index}")
    return st.one_of(
        st.integers(-5, 5),
        target.map(lambda key: f"$({key})"),
        target.map(lambda key: f"x$({key})y"),
        st.lists(target.map(lambda key: f"$({key})"), max_size=3),
        st.tuples(target, target).map(lambda keys: {"v": f"$({keys[0]})", "w": f"$(..{keys[1]})", "s": "$(.v)"}),
        target.map(lambda key: f"$({key}.v)"),
        target.map(lambda key: f"$({key}.0)"),
        target.map(lambda key: Arith(f"$({key}) + 1")),
        st.just("$(.)"),
    )


@st.composite
def reference_graphs(draw):
    count = draw(st.integers(1, 12))
    return [draw(reference_values(count)) for _ in range(count)]


@SETTINGS
@given(reference_graphs())
def test_resolution_terminates_with_a_value_or_a_config_error(values):
    cfg = Config()
    for index, value in enumerate(values):
        cfg.set(f"k{index}", value)
    start = time.perf_counter()
    for index in range(len(values)):
        try:
            resolved = cfg.get(f"k{index}")
        except ConfigError as error:
            assert "\n" not in str(error)
        else:
            assert not contains_text(resolved, "$(")
    assert time.perf_counter() - start < FAIL_FAST_SECONDS


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 400), st.integers(0, 399))
def test_long_chains_and_loops_end(length, loop_to):
    cfg = Config()
    for index in range(length):
        cfg.set(f"k{index}", f"$(k{index + 1})")
    cfg.set(f"k{length}", f"$(k{min(loop_to, length)})" if loop_to < length else 1)
    try:
        assert cfg.get("k0") == 1
    except ConfigError as error:
        assert "reference cycle" in str(error) or "nested more than" in str(error)


# --- (d) hostile input ----------------------------------------------------------------------------------------

YAML_TOKENS = st.sampled_from([
    "a", "b.c", "a\\.b", "_import", "_x", ":", ": ", "\n", "\n  ", "- ", "[", "]", "{", "}", ",", "&x ", "*x", "<<: ",
    "!arith ", "$(a)", "$(.b)", "$(..a.0)", "^(c)", "!!python/object/apply:os.system ", "!exec ", "!!set ",
    "!!omap ", "!!binary ", "!!timestamp ", "!!float ", "!!int ", "2001-01-01", "0x1F", ".inf", ".nan", "1e400",
    "'", '"', "1", "-1", "null", "true", "?", "|", ">", "#", "---", "...", "%YAML 1.1\n", "!<tag:x>", "~",
    "9" * 5000, "\t", "\\", "\x00", "\ufeff",
])
GARBAGE = st.text(max_size=200) | st.lists(YAML_TOKENS, max_size=40).map("".join)


def exercise(cfg):
    """Read everything back in every way; only ConfigError may come out."""
    for key in ("a", "b", "_x", "model", "0"):
        try:
            cfg.get(key, None)
        except ConfigError:
            pass
    cfg.set("model.name", "m")
    cfg.set("dataset.name", "d")
    try:
        cfg.dump()
    except ConfigError:
        pass


@SETTINGS
@given(GARBAGE | st.binary(max_size=200))
def test_garbage_files_raise_only_config_errors(content):
    with tempfile.TemporaryDirectory() as directory:
        file = Path(directory) / "garbage.yaml"
        file.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        cfg = Config()
        try:
            cfg.load(str(file))
        except ConfigError as error:
            assert "\n" not in str(error)
            return
    exercise(cfg)


@SETTINGS
@given(GARBAGE)
def test_garbage_overrides_raise_only_config_errors(argument):
    cfg = Config()
    try:
        cfg.override(argument)
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    exercise(cfg)


ARITH_TOKENS = st.sampled_from([
    "1", "0", "2.5", "9999999999", "-", "+", "*", "/", "//", "%", "**", "(", ")", "[", "]", ",", ":", " ", "not ",
    " and ", " or ", " if ", " else ", "<", "==", " in ", "math.sqrt", "math.log", "min", "max", "int", "round",
    "'s'", "true", "null", "x", "__import__", ".", "lambda", "$(a)", "$(b.0)", "^(k)", "@", "\\", "'", "{", "}",
])
ARITH_GARBAGE = st.text(max_size=60) | st.lists(ARITH_TOKENS, max_size=30).map("".join)


@SETTINGS
@given(ARITH_GARBAGE)
def test_garbage_expressions_raise_only_arith_errors(expression):
    try:
        evaluate(expression)
    except ArithError as error:
        assert str(error)


@SETTINGS
@given(ARITH_GARBAGE)
def test_garbage_expressions_in_a_config_raise_only_config_errors(expression):
    cfg = Config()
    cfg.set("a", [1, 2.5])
    cfg.set("b", [3, "s"])
    cfg.set("x", Arith(expression))
    try:
        value = cfg.get("x")
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    assert isinstance(value, (int, float, str, list, type(None), Arith))


@pytest.mark.parametrize("expression", ["9 ** 9 ** 9", "[[[0] * 100] * 100] * 100 * 100", "'a' * 10 ** 7 + 'b'"])
def test_hostile_expressions_fail_fast(expression):
    start = time.perf_counter()
    with pytest.raises(ArithError):
        evaluate(expression)
    assert time.perf_counter() - start < FAIL_FAST_SECONDS
