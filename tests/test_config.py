"""Example-based tests of the YAML configuration language (docs/config-language.md) as `mayo_lite.config` implements it."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

import mayo_lite
import mayo_lite.config as config_module
from mayo_lite.config import BUNDLED_CONFIGS, Arith, Config, substitute_module_kwargs
from mayo_lite.config.arith import ArithError, evaluate
from mayo_lite.config.tree import merge
from mayo_lite.errors import ConfigError, UserError

# Guards against blow-up (exponential expansion takes minutes or exhausts memory), not a speed target:
# generous, so a loaded CI machine does not fail it.
FAIL_FAST_SECONDS = 20


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(directory, name, text):
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def loaded(workdir, text, name="c.yaml"):
    write(workdir, name, text)
    cfg = Config()
    cfg.load(name)
    return cfg


def error_of(function, *args):
    with pytest.raises(ConfigError) as caught:
        function(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- defaults, lookup, versions ---------------------------------------------------------------------------------

def test_defaults_are_loaded_first_with_their_origin():
    cfg = Config()
    assert cfg.get("system.batch_size_per_gpu") == 128
    assert cfg.origin("system.batch_size_per_gpu") == "defaults"
    assert cfg.version == 0


def test_config_error_is_a_user_error():
    assert issubclass(ConfigError, UserError)


def test_bundled_configs_is_the_repository_configs_directory():
    assert BUNDLED_CONFIGS == Path(mayo_lite.__file__).resolve().parent.parent / "configs"


def test_load_looks_in_the_current_directory_first(workdir, monkeypatch):
    bundled = workdir / "bundled"
    write(bundled, "models/m.yaml", "where: bundled\n")
    monkeypatch.setattr(config_module, "BUNDLED_CONFIGS", bundled)
    cfg = Config()
    cfg.load("models/m.yaml")
    assert cfg.get("where") == "bundled"
    write(workdir, "models/m.yaml", "where: here\n")
    cfg.load("models/m.yaml")
    assert cfg.get("where") == "here"
    assert cfg.origin("where") == "models/m.yaml"


def test_missing_file_names_it_and_where_it_looked(workdir):
    message = error_of(Config().load, "models/x.yaml")
    assert message.startswith("models/x.yaml: no such config file (looked in ./ and ")
    assert str(BUNDLED_CONFIGS) in message


def test_directory_is_not_a_config_file(workdir):
    (workdir / "d.yaml").mkdir()
    assert "d.yaml: is a directory" in error_of(Config().load, "d.yaml")


def test_version_counts_every_change(workdir):
    write(workdir, "a.yaml", "x: 1\n")
    cfg = Config()
    cfg.load("a.yaml")
    cfg.override("x=2")
    cfg.set("y", 3)
    assert cfg.version == 3


def test_failed_load_changes_nothing(workdir):
    write(workdir, "a.yaml", "_import: missing.yaml\nx: 1\n")
    cfg = Config()
    with pytest.raises(ConfigError):
        cfg.load("a.yaml")
    assert "x" not in cfg and cfg.version == 0


# --- safe loading ---------------------------------------------------------------------------------------------

def test_empty_file_is_an_empty_mapping(workdir):
    cfg = loaded(workdir, "# nothing\n")
    assert list(cfg.raw("system")) == list(Config().raw("system")) and cfg.version == 1


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just text\n", "42\n"])
def test_top_level_must_be_a_mapping(workdir, text):
    write(workdir, "c.yaml", text)
    assert "c.yaml: the top level must be a mapping" in error_of(Config().load, "c.yaml")


def test_syntax_error_names_file_and_line(workdir):
    write(workdir, "c.yaml", "a:\n  b: 1\n c: [1, 2\n")
    message = error_of(Config().load, "c.yaml")
    assert message.startswith("c.yaml: line 3")
    assert "invalid YAML" in message


@pytest.mark.parametrize("tag, reason", [
    ("!exec", "refused: !exec runs code; use !arith"),
    ("!eval", "refused: !eval runs code; use !arith"),
    ("!!python/object/apply:os.system", "refused: !!python/object/apply:os.system builds Python objects"),
    ("!!python/name:os.system", "refused: !!python/name:os.system builds Python objects"),
    ("!whatever", "refused: !whatever is an unknown tag"),
])
def test_code_and_unknown_tags_are_refused(workdir, tag, reason):
    marker = workdir / "ran"
    write(workdir, "c.yaml", f"a:\n  b: {tag} ['touch {marker}']\n")
    message = error_of(Config().load, "c.yaml")
    assert message.startswith("c.yaml: line 2: ")
    assert reason in message
    assert not marker.exists()


def test_arith_tag_on_a_mapping_is_an_error(workdir):
    write(workdir, "c.yaml", "a: !arith {x: 1}\n")
    assert "c.yaml: line 1: !arith takes one expression" in error_of(Config().load, "c.yaml")


def test_anchors_aliases_and_merge_keys(workdir):
    cfg = loaded(workdir, """
        base: &base {a: 1, b: [1, 2]}
        same: *base
        merged: {<<: *base, b: [3]}
    """)
    assert cfg.get("same") == {"a": 1, "b": [1, 2]}
    assert cfg.get("merged") == {"a": 1, "b": [3]}


def test_aliases_are_copies(workdir):
    cfg = loaded(workdir, "base: &base {a: {x: 1}}\none: *base\ntwo: *base\n")
    cfg.override("one.a.x=5")
    assert cfg.get("two.a.x") == 1 and cfg.get("base.a.x") == 1


def test_billion_laughs_fails_fast(workdir):
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]" for level in range(1, 11)]
    write(workdir, "laughs.yaml", "\n".join(lines) + "\n")
    start = time.perf_counter()
    message = error_of(Config().load, "laughs.yaml")
    assert time.perf_counter() - start < FAIL_FAST_SECONDS
    assert message.startswith("laughs.yaml: more than 1,000,000 values")


def test_merge_key_laughs_stay_small(workdir):
    lines = ["m0: &m0 {k0: lol}"]
    for level in range(1, 30):
        lines.append(f"m{level}: &m{level} {{<<: [{', '.join([f'*m{level - 1}'] * 10)}], k{level}: x}}")
    write(workdir, "laughs.yaml", "\n".join(lines) + "\n")
    start = time.perf_counter()
    cfg = Config()
    cfg.load("laughs.yaml")
    assert len(cfg.get("m29")) == 30
    assert time.perf_counter() - start < FAIL_FAST_SECONDS


def test_an_alias_inside_itself_is_an_error(workdir):
    write(workdir, "c.yaml", "a: &a [1, *a]\n")
    assert "c.yaml: a.1: an alias refers to a mapping or list that contains it" in error_of(Config().load, "c.yaml")


def test_nesting_deeper_than_100_is_an_error(workdir):
    write(workdir, "ok.yaml", "a: " + "[" * 99 + "]" * 99 + "\n")
    Config().load("ok.yaml")
    write(workdir, "c.yaml", "a: " + "[" * 150 + "]" * 150 + "\n")
    assert "nested deeper than 100 levels" in error_of(Config().load, "c.yaml")
    write(workdir, "d.yaml", "a: " + "[" * 100000 + "]" * 100000 + "\n")
    start = time.perf_counter()
    assert error_of(Config().load, "d.yaml") == "d.yaml: line 1: nested deeper than 100 levels"
    assert time.perf_counter() - start < FAIL_FAST_SECONDS


def test_dotted_keys_deepen_the_nesting_too(workdir):
    write(workdir, "c.yaml", ".".join(f"k{index}" for index in range(120)) + ": 1\n")
    assert "nested deeper than 100 levels" in error_of(Config().load, "c.yaml")


def test_odd_scalars_are_config_errors(workdir):
    write(workdir, "c.yaml", "a: !!timestamp 2001-13-45\n")
    assert error_of(Config().load, "c.yaml").startswith("c.yaml: ")
    write(workdir, "d.yaml", "? [1]\n: 2\n")
    assert error_of(Config().load, "d.yaml").startswith("d.yaml: ")


# --- dotted keys ----------------------------------------------------------------------------------------------

def test_dotted_keys_are_key_paths(workdir):
    cfg = loaded(workdir, """
        model: {name: m}
        model.layers: {conv0: {type: convolution}}
        model.layers.conv0.num_outputs: 8
    """)
    assert cfg.get("model") == {"name": "m", "layers": {"conv0": {"type": "convolution", "num_outputs": 8}}}


def test_dotted_keys_merge_across_files(workdir):
    write(workdir, "a.yaml", "model: {layers: {conv0: {a: 1}}}\n")
    write(workdir, "b.yaml", "model.layers.conv0.b: 2\n")
    cfg = Config()
    cfg.load("a.yaml")
    cfg.load("b.yaml")
    assert cfg.get("model.layers.conv0") == {"a": 1, "b": 2}
    assert cfg.origin("model.layers.conv0.a") == "a.yaml"
    assert cfg.origin("model.layers.conv0.b") == "b.yaml"


def test_dotted_keys_inside_nested_mappings(workdir):
    cfg = loaded(workdir, "outer: {inner.x: 1, items: [{a.b: 2}]}\n")
    assert cfg.get("outer") == {"inner": {"x": 1}, "items": [{"a": {"b": 2}}]}


def test_escaped_dot_keeps_a_literal_dot(workdir):
    cfg = loaded(workdir, "a\\.b: 1\nc:\n  d\\.e.f: 2\n")
    assert cfg.get("a\\.b") == 1 and "a" not in cfg
    assert cfg.get("c") == {"d.e": {"f": 2}}
    cfg.override("a\\.b=3")
    assert cfg.get("a\\.b") == 3 and "a" not in cfg


def test_empty_key_path_segment_is_an_error(workdir):
    write(workdir, "c.yaml", "top:\n  a..b: 1\n")
    message = error_of(Config().load, "c.yaml")
    assert message.startswith("c.yaml: top: ")
    assert "empty key" in message


# --- _import --------------------------------------------------------------------------------------------------

def test_imports_merge_before_the_file_in_order(workdir):
    write(workdir, "base/one.yaml", "x: one\ny: one\nz: one\n")
    write(workdir, "base/two.yaml", "y: two\nz: two\n")
    write(workdir, "top.yaml", "_import: [base/one.yaml, base/two.yaml]\nz: top\n")
    cfg = Config()
    cfg.load("top.yaml")
    assert (cfg.get("x"), cfg.get("y"), cfg.get("z")) == ("one", "two", "top")
    assert "_import" not in cfg
    assert cfg.origin("x") == "base/one.yaml"
    assert cfg.origin("y") == "base/two.yaml"
    assert cfg.origin("z") == "top.yaml"


def test_imports_are_relative_to_the_importing_file_and_recursive(workdir):
    write(workdir, "models/gate/vgg.yaml", "_import: ../vgg.yaml\nmodel.layers.conv0.type: gated_convolution\n")
    write(workdir, "models/vgg.yaml", """
        _import: ../common/init.yaml
        model: {name: vgg, layers: {conv0: {type: convolution}}}
    """)
    write(workdir, "common/init.yaml", "init: {type: variance_scaling}\n")
    cfg = Config()
    cfg.load("models/gate/vgg.yaml")
    assert cfg.get("model.layers.conv0.type") == "gated_convolution"
    assert cfg.get("init.type") == "variance_scaling"
    assert cfg.origin("init") == "common/init.yaml"
    assert cfg.origin("model.name") == "models/vgg.yaml"


def test_import_cycle_is_named(workdir):
    write(workdir, "a.yaml", "_import: b.yaml\n")
    write(workdir, "b.yaml", "_import: a.yaml\n")
    message = error_of(Config().load, "a.yaml")
    assert message == "b.yaml: _import: import cycle a.yaml -> b.yaml -> a.yaml"


def test_self_import_is_a_cycle(workdir):
    write(workdir, "a.yaml", "_import: [./a.yaml]\n")
    assert "import cycle a.yaml -> a.yaml" in error_of(Config().load, "a.yaml")


def test_missing_import_names_the_importing_file(workdir):
    write(workdir, "a.yaml", "_import: nope.yaml\n")
    message = error_of(Config().load, "a.yaml")
    assert message.startswith("a.yaml: _import: nope.yaml: no such file")


def test_importing_a_directory_is_an_error(workdir):
    (workdir / "dir").mkdir()
    write(workdir, "a.yaml", "_import: dir\n")
    assert error_of(Config().load, "a.yaml").startswith("a.yaml: _import: dir: is a directory")


@pytest.mark.parametrize("value", ["1", "[a.yaml, 2]", "{a: 1}", "['']"])
def test_import_must_name_files(workdir, value):
    write(workdir, "a.yaml", f"_import: {value}\n")
    assert error_of(Config().load, "a.yaml").startswith("a.yaml: _import: expected a file name")


def test_errors_in_imported_files_name_that_file(workdir):
    write(workdir, "sub/b.yaml", "x: !exec 1\n")
    write(workdir, "a.yaml", "_import: sub/b.yaml\n")
    assert error_of(Config().load, "a.yaml").startswith("sub/b.yaml: line 1: refused")


# --- merging --------------------------------------------------------------------------------------------------

def test_merge_is_recursive_for_mappings_and_replaces_the_rest():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1, "e": {"f": 1}}
    overlay = {"a": {"c": [3]}, "d": {"x": 1}, "e": 2}
    assert merge(base, overlay) == {"a": {"b": 1, "c": [3]}, "d": {"x": 1}, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1, "e": {"f": 1}}


def test_merged_values_do_not_alias_the_overlay():
    overlay = {"a": {"b": [1]}}
    merged = merge({}, overlay)
    merged["a"]["b"].append(2)
    assert overlay == {"a": {"b": [1]}}


def test_origins_follow_each_path(workdir):
    write(workdir, "a.yaml", "m: {x: 1, y: {z: 1}}\n")
    write(workdir, "b.yaml", "m: {y: 2}\n")
    cfg = Config()
    cfg.load("a.yaml")
    cfg.load("b.yaml")
    assert cfg.origin("m.x") == "a.yaml"
    assert cfg.origin("m.y") == "b.yaml"
    cfg.override("m.y={z: 3}")
    assert cfg.origin("m.y.z") == "command line (m.y={z: 3})"
    assert cfg.origin("nothing.here") is None


# --- overrides and set ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("0.5", 0.5), ("3", 3), ("null", None), ("[0, 1]", [0, 1]), ("{a: 1}", {"a": 1}),
    ("true", True), ("abc", "abc"), ("", None), ("'a=b'", "a=b"),
])
def test_override_values_are_yaml(text, value):
    cfg = Config()
    cfg.override(f"system.max_epochs={text}")
    assert cfg.get("system.max_epochs") == value
    assert cfg.origin("system.max_epochs") == f"command line (system.max_epochs={text})"


def test_override_replaces_a_mapping_rather_than_merging():
    cfg = Config()
    cfg.override("system.checkpoint={path: p}")
    assert cfg.get("system.checkpoint") == {"path": "p"}


def test_override_creates_keys_and_indexes_lists(workdir):
    cfg = loaded(workdir, "a: {layers: [{x: 0}, {x: 1}]}\n")
    cfg.override("a.layers.1.x=5")
    cfg.override("a.layers.0.y.z=6")
    cfg.override("new.deep.key=7")
    assert cfg.get("a.layers") == [{"x": 0, "y": {"z": 6}}, {"x": 5}]
    assert cfg.get("new") == {"deep": {"key": 7}}
    assert cfg.origin("a.layers.1.x") == "command line (a.layers.1.x=5)"
    assert cfg.origin("a.layers.0.x") == "c.yaml"


@pytest.mark.parametrize("argument, problem", [
    ("a.layers.2.x=1", "a.layers.2: no such index (a.layers is a list of 2 items)"),
    ("a.layers.x=1", "a.layers.x: no such index (a.layers is a list of 2 items)"),
    ("a.name.x=1", "cannot set a.name.x: a.name is a str, not a mapping or list"),
    ("a.none.x=1", "cannot set a.none.x: a.none is null"),
])
def test_override_through_a_scalar_or_past_a_list_names_the_argument(workdir, argument, problem):
    cfg = loaded(workdir, "a: {name: n, none: null, layers: [1, 2]}\n")
    message = error_of(cfg.override, argument)
    assert message == f"command line ({argument}): {problem}"


@pytest.mark.parametrize("argument", ["novalue", "=3", "a..b=1", "a=!exec x", "a=[1", "a=!!python/name:os.system"])
def test_bad_overrides_name_the_argument(argument):
    assert error_of(Config().override, argument).startswith(f"command line ({argument}): ")


def test_override_value_may_be_an_expression():
    cfg = Config()
    cfg.override("x=!arith 2 * $(system.num_gpus)")
    assert cfg.get("x") == 2


def test_set_takes_python_values_and_copies_them():
    cfg = Config()
    value = {"a": [1, 2], "b.c": (3, 4)}
    cfg.set("x", value, origin="test")
    value["a"].append(99)
    assert cfg.get("x") == {"a": [1, 2], "b": {"c": [3, 4]}}
    assert cfg.origin("x.a") == "test"


def test_set_refuses_python_objects():
    assert error_of(Config().set, "x", {"a": object()}).startswith("Config.set: a: a object cannot be held")


# --- reading --------------------------------------------------------------------------------------------------

def test_get_returns_a_resolved_copy(workdir):
    cfg = loaded(workdir, "a: {b: [1, 2]}\nc: $(a)\n")
    value = cfg.get("c")
    value["b"].append(3)
    assert cfg.get("a") == {"b": [1, 2]} and cfg.get("c") == {"b": [1, 2]}
    assert cfg["a.b"] == [1, 2]


def test_get_missing_path_names_what_is_there(workdir):
    cfg = loaded(workdir, "model: {layers: {conv0: {}, conv1: {}}}\n")
    assert error_of(cfg.get, "model.layers.conv9") == \
        "c.yaml: model.layers.conv9: no such key (model.layers has keys: conv0, conv1)"
    assert error_of(cfg.get, "nothing").startswith("nothing: no such key")
    assert cfg.get("model.layers.conv9", None) is None
    assert cfg.get("model.layers.conv0.x.y", "default") == "default"
    assert "model.layers.conv0" in cfg and "model.layers.conv9" not in cfg


def test_get_default_does_not_hide_broken_references(workdir):
    cfg = loaded(workdir, "a: $(missing)\n")
    with pytest.raises(ConfigError):
        cfg.get("a", None)
    with pytest.raises(ConfigError):
        cfg.get("a.b", None)


def test_raw_keeps_references_and_expressions(workdir):
    cfg = loaded(workdir, "a: 2\nb: $(a)\nc: !arith $(a) + 1\n")
    assert cfg.raw("b") == "$(a)"
    assert cfg.raw("c") == Arith("$(a) + 1")
    assert (cfg.get("b"), cfg.get("c")) == (2, 3)


def test_dump_is_yaml_of_the_resolved_config(workdir):
    cfg = loaded(workdir, "model: {name: m, w: !arith 2 ** 3}\ndataset: {name: d}\n")
    dumped = yaml.safe_load(cfg.dump())
    assert dumped == cfg.resolved()
    assert dumped["system"]["checkpoint"]["path"] == "checkpoints/m/d"
    assert dumped["model"]["w"] == 8
    assert list(dumped) == ["system", "model", "dataset"]


def test_copy_is_independent(workdir):
    cfg = loaded(workdir, "a: {b: 1}\n")
    twin = cfg.copy()
    twin.override("a.b=2")
    assert cfg.get("a.b") == 1 and twin.get("a.b") == 2
    assert twin.version == cfg.version + 1
    assert twin.origin("a.b").startswith("command line") and cfg.origin("a.b") == "c.yaml"


@pytest.mark.parametrize("path", ["", "a..b", ".a"])
def test_malformed_key_paths_are_errors(path):
    with pytest.raises(ConfigError):
        Config().get(path)


# --- references -----------------------------------------------------------------------------------------------

def test_whole_reference_keeps_its_type(workdir):
    cfg = loaded(workdir, """
        v: {n: 3, f: 0.5, t: true, z: null, l: [1, {x: 2}], m: {k: v}}
        n: $(v.n)
        f: $(v.f)
        t: $(v.t)
        z: $(v.z)
        l: $(v.l)
        m: $(v.m)
        i: $(v.l.1.x)
    """)
    assert cfg.get("n") == 3 and cfg.get("f") == 0.5 and cfg.get("t") is True and cfg.get("z") is None
    assert cfg.get("l") == [1, {"x": 2}] and cfg.get("m") == {"k": "v"} and cfg.get("i") == 2


def test_partial_references_interpolate_yaml_text(workdir):
    cfg = loaded(workdir, """
        v: {n: 3, t: false, z: null, s: abc, l: [1, true]}
        text: "n=$(v.n) t=$(v.t) z=$(v.z) s=$(v.s) l=$(v.l)"
    """)
    assert cfg.get("text") == "n=3 t=false z=null s=abc l=[1, true]"


def test_references_resolve_recursively(workdir):
    cfg = loaded(workdir, "a: $(b)\nb: {c: $(d)}\nd: [$(e), x$(e)]\ne: 1\n")
    assert cfg.get("a") == {"c": [1, "x1"]}


def test_relative_references(workdir):
    cfg = loaded(workdir, """
        outer:
          size: 10
          inner:
            size: 3
            own: $(.size)
            parent: $(..size)
            sibling: $(..other.name)
            list: [$(..size), 4]
          other: {name: o}
    """)
    assert cfg.get("outer.inner") == {"size": 3, "own": 3, "parent": 10, "sibling": "o", "list": [3, 4]}


def test_relative_reference_in_a_template_follows_each_copy(workdir):
    cfg = loaded(workdir, """
        layers:
          _conv: &conv {num_outputs: 8, label: conv$(.num_outputs)}
          conv0: {<<: *conv, num_outputs: 64}
    """)
    assert cfg.get("layers.conv0.label") == "conv64"
    assert cfg.get("layers._conv.label") == "conv8"


def test_relative_reference_above_the_top_is_an_error(workdir):
    cfg = loaded(workdir, "a: $(...x)\n")
    assert "c.yaml: a: bad reference $(...x): goes above the top" in error_of(cfg.get, "a")


def test_unresolvable_reference_names_placeholder_key_and_file(workdir):
    write(workdir, "configs/models/x.yaml", "model: {layers: {conv0: {num_outputs: $(foo.bar)}}}\nfoo: {baz: 1}\n")
    cfg = Config()
    cfg.load("configs/models/x.yaml")
    message = error_of(cfg.get, "model")
    assert message.startswith(
        "configs/models/x.yaml: model.layers.conv0.num_outputs: unresolvable reference $(foo.bar)")
    assert "foo has keys: baz" in message


def test_reference_used_in_an_override_names_the_override():
    cfg = Config()
    cfg.override("x=$(nope)")
    assert error_of(cfg.get, "x").startswith("command line (x=$(nope)): x: unresolvable reference $(nope)")


@pytest.mark.parametrize("text, cycle", [
    ("a: $(b)\nb: $(a)\n", "a -> b -> a"),
    ("a: $(a)\n", "a -> a"),
    ("a: {b: $(a)}\n", "a -> a.b -> a"),
    ("a: {b: $(.)}\n", "a -> a.b -> a"),
    ("a: x$(b)\nb: [$(a)]\n", "a -> b -> b.0 -> a"),
    ("a: !arith $(b) + 1\nb: !arith $(a) + 1\n", "a -> b -> a"),
])
def test_reference_cycles_are_named(workdir, text, cycle):
    cfg = loaded(workdir, text)
    message = error_of(cfg.get, "a")
    assert message.startswith("c.yaml: a: reference cycle ")
    assert message.endswith(cycle)


def test_long_reference_chains_end_in_a_config_error(workdir):
    lines = [f"k{index}: $(k{index + 1})" for index in range(2000)] + ["k2000: 1"]
    cfg = loaded(workdir, "\n".join(lines) + "\n")
    assert cfg.get("k1990") == 1
    assert "nested more than" in error_of(cfg.get, "k0")


def test_references_that_multiply_are_bounded(workdir):
    lines = ["r0: lol"] + [f"r{level}: [{', '.join([f'$(r{level - 1})'] * 10)}]" for level in range(1, 11)]
    cfg = loaded(workdir, "\n".join(lines) + "\n")
    start = time.perf_counter()
    assert "more than 1,000,000 values" in error_of(cfg.get, "r10")
    assert time.perf_counter() - start < FAIL_FAST_SECONDS


def test_references_are_lazy_and_see_later_overrides(workdir):
    cfg = loaded(workdir, """
        _gate: {density: 1.0, policy: threshold}
        model.layers:
          conv0: {type: gated_convolution, gate_params: $(_gate)}
          conv1: {type: gated_convolution, gate_params: $(_gate)}
    """)
    assert cfg.get("model.layers.conv1.gate_params.density") == 1.0
    cfg.override("_gate.density=0.5")
    assert cfg.get("model.layers.conv0.gate_params") == {"density": 0.5, "policy": "threshold"}
    assert cfg.get("model.layers.conv1.gate_params.density") == 0.5


def test_path_through_a_reference_to_a_scalar_is_missing(workdir):
    cfg = loaded(workdir, "a: $(b)\nb: 1\n")
    assert cfg.get("a.x", "none") == "none"


def test_module_placeholders_are_left_for_later(workdir):
    cfg = loaded(workdir, "m: {depth: ^(depth), name: ^(shortcut)_shortcut}\n")
    assert cfg.get("m") == {"depth": "^(depth)", "name": "^(shortcut)_shortcut"}


# --- !arith ---------------------------------------------------------------------------------------------------

def test_trainer_scales_the_learning_rate(workdir):
    cfg = loaded(workdir, """
        _initial: 0.01
        _default_batch_size: 128
        train.learning_rate: !arith >-
          $(_initial) * math.sqrt($(system.batch_size_per_gpu) * $(system.num_gpus) / $(_default_batch_size))
    """)
    assert cfg.get("train.learning_rate") == pytest.approx(0.01)
    cfg.override("system.num_gpus=4")
    assert cfg.get("train.learning_rate") == pytest.approx(0.02)


@pytest.mark.parametrize("expression, value", [
    ("1 + 2 * 3 - 4", 3), ("7 / 2", 3.5), ("7 // 2", 3), ("7 % 3", 1), ("2 ** 10", 1024), ("-3 + +1", -2),
    ("not 0", True), ("1 < 2 <= 2 != 3", True), ("1 < 2 > 3", False), ("0 or 5", 5), ("1 and 0", 0),
    ("'a' if 1 > 2 else 'b'", "b"), ("[1, 2, 3][1]", 2), ("[1, 2, 3][-1]", 3), ("[1, 2, 3][1:]", [2, 3]),
    ("(1, 2)", [1, 2]), ("'ab' + 'c'", "abc"), ("[1] * 3", [1, 1, 1]), ("2 in [1, 2]", True),
    ("math.sqrt(16)", 4.0), ("math.ceil(1.2)", 2), ("math.floor(1.8)", 1), ("math.log(1)", 0.0),
    ("math.exp(0)", 1.0), ("min(3, 1, 2)", 1), ("max([3, 9])", 9), ("abs(-2)", 2), ("int('7')", 7),
    ("float(3)", 3.0), ("round(2.567, 2)", 2.57), ("true and null", None), ("None", None), ("false", False),
])
def test_arith_language(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize("expression, problem", [
    ("__import__('os').system('true')", "`__import__('os').system` is not allowed"),
    ("__import__('os')", "`__import__` is not allowed"),
    ("(1).__class__", "`(1).__class__` is not allowed"),
    ("math.pi", "`math.pi` is not allowed (no attribute access"),
    ("open('/etc/passwd')", "`open` is not allowed"),
    ("lambda: 1", "is not allowed"),
    ("[x for x in [1]]", "is not allowed"),
    ("{'a': 1}", "is not allowed"),
    ("f'{1}'", "is not allowed"),
    ("round(1.5, ndigits=1)", "only positional arguments"),
    ("max(*[1, 2])", "only positional arguments"),
    ("1 << 3", "is not allowed"),
    ("~1", "is not allowed"),
    ("1j", "is not allowed"),
    ("b'x'", "is not allowed"),
    ("1 +", "syntax error"),
    ("", "empty expression"),
    ("1 / 0", "ZeroDivisionError"),
    ("math.sqrt(-1)", "ValueError"),
    ("'a' + 1", "TypeError"),
    ("[1][5]", "IndexError"),
    ("'%s' % 1", "`%` on a string"),
    ("9 ** 99999", "is too large"),
    ("10 ** 5000", "is too large"),
    ("(-8) ** 0.5", "complex"),
    ("2.0 ** 99999", "OverflowError"),
    ("'x' * 10 ** 9", "more than 1,000,000"),
    ("[[0] * 1000] * 1000 * 1000", "more than 1,000,000"),
    ("int('9' * 4000) * int('9' * 4000)", "too large"),
    ("(" * 300 + "1" + ")" * 300, "too many nested parentheses"),
    ("1" + "+1" * 20000, ""),
])
def test_arith_refuses_everything_else(expression, problem):
    with pytest.raises(ArithError) as caught:
        evaluate(expression)
    assert problem in str(caught.value)


def test_arith_errors_name_file_and_key(workdir):
    cfg = loaded(workdir, "a: {b: !arith __import__('os')}\n")
    assert error_of(cfg.get, "a") == "c.yaml: a.b: !arith __import__('os'): `__import__` is not allowed (functions: " \
        "math.sqrt, math.ceil, math.floor, math.log, math.exp, min, max, abs, int, float, round, len)"


@pytest.mark.parametrize("expression, value", [
    ("valid", "valid"),                                  # Mayo reads a bare name as its text
    ("'same' if 2 == 1 else valid", "valid"),
    ("__import__", "__import__"),                        # text, never looked up
    ("len([1, 2, 3]) * 2", 6),
])
def test_arith_reads_bare_names_as_text_and_has_len_as_mayo_does(expression, value):
    assert evaluate(expression) == value


def test_arith_substitutes_references_as_literals(workdir):
    cfg = loaded(workdir, """
        v: {s: "it's", l: [1, 2.5], n: null, t: true, big: .inf}
        s: !arith $(v.s) + '!'
        l: !arith $(v.l) + [3]
        n: !arith $(v.n) == None
        t: !arith not $(v.t)
        big: !arith $(v.big) > 10
        quoted: !arith "'$(v.s)'"
    """)
    assert cfg.get("s") == "it's!" and cfg.get("l") == [1, 2.5, 3]
    assert cfg.get("n") is True and cfg.get("t") is False and cfg.get("big") is True


def test_arith_refuses_code_hidden_in_referenced_strings(workdir):
    cfg = loaded(workdir, "evil: \"__import__('os')\"\nx: !arith $(evil)\n")
    assert cfg.get("x") == "__import__('os')"


def test_arith_on_a_mapping_reference_is_an_error(workdir):
    cfg = loaded(workdir, "m: {a: 1}\nx: !arith $(m) + 1\n")
    assert "c.yaml: x: !arith $(m) + 1: a mapping cannot be used in an expression" in error_of(cfg.get, "x")


def test_arith_results_are_referenceable(workdir):
    cfg = loaded(workdir, "a: !arith 2 * 3\nb: $(a)\nc: size$(a)\n")
    assert (cfg.get("b"), cfg.get("c")) == (6, "size6")


def test_arith_waiting_for_module_arguments_stays_an_expression(workdir):
    cfg = loaded(workdir, "_width: 2\nm: {n: !arith ^(depth) * $(_width)}\nmodel.name: x\ndataset.name: y\n")
    pending = cfg.get("m.n")
    assert isinstance(pending, Arith) and pending.expr.strip() == "^(depth) * 2"
    assert "Arith(" in repr(pending)
    assert "n: !arith '^(depth) * 2'" in cfg.dump()
    assert substitute_module_kwargs(cfg.get("m"), {"depth": 64}, "m") == {"n": 128}


def test_pending_expression_cannot_be_interpolated_into_text(workdir):
    cfg = loaded(workdir, "a: !arith ^(d) + 1\nb: x$(a)\nc: $(a)\n")
    assert "cannot be interpolated" in error_of(cfg.get, "b")
    assert isinstance(cfg.get("c"), Arith)


# --- ^() module arguments -------------------------------------------------------------------------------------

def test_substitute_module_kwargs():
    tree = {
        "conv": {"num_outputs": "^(depth)", "stride": "^(stride)", "with": "^(shortcut)_shortcut"},
        "list": ["^(stride)", {"n": Arith("^(depth) // 2 + ^(stride)[0]")}],
        "plain": [1, None, "text"],
    }
    kwargs = {"depth": 128, "stride": [2, 2], "shortcut": "identity"}
    result = substitute_module_kwargs(tree, kwargs, "models/r.yaml: model.layers.b21")
    assert result == {
        "conv": {"num_outputs": 128, "stride": [2, 2], "with": "identity_shortcut"},
        "list": [[2, 2], {"n": 66}],
        "plain": [1, None, "text"],
    }
    result["conv"]["stride"].append(9)
    assert kwargs["stride"] == [2, 2]


def test_substitute_module_kwargs_evaluates_expressions():
    tree = {"n": Arith("^(depth) // 2"), "m": Arith("^(depth) * ^(width)"), "s": Arith("^(name) + '_x'")}
    result = substitute_module_kwargs(tree, {"depth": 128, "width": 0.5, "name": "it's"}, "m")
    assert result == {"n": 64, "m": 64.0, "s": "it's_x"}


def test_substitute_module_kwargs_keeps_expressions_waiting_for_outer_modules():
    result = substitute_module_kwargs({"n": Arith("^(depth) * 2")}, {"depth": Arith("^(outer) + 1")}, "m")
    assert result == {"n": Arith("(^(outer) + 1) * 2")}
    assert substitute_module_kwargs(result, {"outer": 3}, "m") == {"n": 8}


def test_substitute_module_kwargs_names_unknown_arguments():
    where = "models/r.yaml: model.layers.b21"
    message = error_of(substitute_module_kwargs, {"a": "^(depht)"}, {"depth": 1, "stride": 2}, where)
    assert message == f"{where}: ^(depht) is not a keyword argument of this module (has: depth, stride)"
    assert "(has: none)" in error_of(substitute_module_kwargs, ["^(x)"], {}, "m")


def test_substitute_module_kwargs_reports_expression_errors():
    message = error_of(substitute_module_kwargs, {"a": Arith("^(d) / 0")}, {"d": 1}, "m.layers")
    assert message.startswith("m.layers: !arith: ZeroDivisionError")


def test_substitute_module_kwargs_accepts_no_tree():
    assert substitute_module_kwargs(None, {}, "m") is None


# --- a Mayo-style model end to end ----------------------------------------------------------------------------

MAYO_MODEL = """
    _import: ../base.yaml
    _gate: {density: 1.0, policy: threshold}
    model:
      name: tiny_gated
      layers:
        _conv: &conv
          type: convolution
          kernel_size: 3
          padding: same
          weights_initializer: {type: variance_scaling, scale: 2.0}
          weights_regularizer: {type: l2, scale: $(_decay)}
        conv0: {<<: *conv, num_outputs: 64}
        conv1: {<<: *conv, num_outputs: 128, type: gated_convolution, gate_params: $(_gate)}
        _block: &block
          type: module
          kwargs: {depth: null, shortcut: identity}
          layers:
            conv: {<<: *conv, num_outputs: ^(depth), half: !arith ^(depth) // 2}
          graph: {from: input, with: [conv, ^(shortcut)_shortcut], to: output}
        block: {<<: *block, kwargs: {depth: 32, shortcut: downsample}}
        logits: {type: fully_connected, num_outputs: $(dataset.task.num_classes)}
      graph:
        from: input
        with: [conv0, conv1, block, logits]
        to: output
"""


def test_mayo_style_model_file(workdir):
    write(workdir, "configs/base.yaml", "_decay: 0.0001\n")
    write(workdir, "configs/models/tiny.yaml", MAYO_MODEL)
    write(workdir, "configs/datasets/d.yaml", "dataset: {name: d, task: {num_classes: 10}}\n")
    cfg = Config()
    cfg.load("configs/models/tiny.yaml")
    cfg.load("configs/datasets/d.yaml")
    layers = cfg.get("model.layers")
    assert layers["conv0"] == {
        "type": "convolution", "kernel_size": 3, "padding": "same",
        "weights_initializer": {"type": "variance_scaling", "scale": 2.0},
        "weights_regularizer": {"type": "l2", "scale": 0.0001}, "num_outputs": 64,
    }
    assert layers["conv1"]["gate_params"] == {"density": 1.0, "policy": "threshold"}
    assert layers["logits"]["num_outputs"] == 10
    cfg.override("_gate.density=0.5")
    assert cfg.get("model.layers.conv1.gate_params.density") == 0.5
    block = cfg.get("model.layers.block")
    instance = substitute_module_kwargs(block["layers"], block["kwargs"], "tiny.yaml: model.layers.block")
    assert instance["conv"]["num_outputs"] == 32 and instance["conv"]["half"] == 16
    graph = substitute_module_kwargs(block["graph"], block["kwargs"], "model.layers.block.graph")
    assert graph["with"] == ["conv", "downsample_shortcut"]
    assert cfg.get("system.checkpoint.path") == "checkpoints/tiny_gated/d"
    assert cfg.origin("model.layers.conv0") == "configs/models/tiny.yaml"
    assert cfg.origin("_decay") == "configs/base.yaml"
    assert yaml.safe_load(cfg.dump().replace("!arith", ""))["model"]["layers"]["conv0"]["num_outputs"] == 64


def test_bundled_configs_combine_and_resolve():
    def names(kind):
        return [str(path.relative_to(BUNDLED_CONFIGS)) for path in sorted((BUNDLED_CONFIGS / kind).glob("*.yaml"))]

    models, datasets, trainers = names("models"), names("datasets"), names("trainers")
    for index in range(max(len(models), len(datasets), len(trainers))):
        cfg = Config()
        for files in (models, datasets, trainers):
            cfg.load(files[index % len(files)])
        assert yaml.safe_load(cfg.dump().replace("!arith", ""))["model"]


# --- the rule of the house ------------------------------------------------------------------------------------

def test_config_imports_no_tensorflow():
    code = "import sys, mayo_lite.config; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(mayo_lite.__file__).resolve().parent.parent)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("text, value", [("1e-3", 0.001), ("1e30", 1e30), ("-2.5E+2", -250.0), ("1.0e-4", 1e-4),
                                         ("1e", "1e"), ("e5", "e5"), ("12", 12)])
def test_scientific_notation_without_a_dot_is_a_float(text, value):
    cfg = Config()
    cfg.override(f"train.learning_rate={text}")
    assert cfg.get("train.learning_rate") == value
    assert type(cfg.get("train.learning_rate")) is type(value)
