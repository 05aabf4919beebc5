"""The shape of the code the architecture asks for: small modules in every room, dependencies that point one way
with no loop between rooms, one layer class per module, one vocabulary for argument errors, Keras' public API only,
and nothing that points outside the repository."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mayo_lite"
MOST_LINES = 350  # "no module over about 400 lines, with room to spare"


def imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            if node.module == "mayo_lite":  # `from mayo_lite import files`: the room is the name imported
                yield from (f"mayo_lite.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def room_of(path):
    """The room a module of the package is in: its sub-package, or for a top-level module its own name."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def room_graph():
    """{room: {rooms it imports}} over every module of the package."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        source = room_of(path)
        for name in imports(path):
            parts = name.split(".")
            if parts[0] == "mayo_lite" and len(parts) > 1 and parts[1] != source and not parts[1].startswith("__"):
                graph.setdefault(source, set()).add(parts[1])
    return graph


@pytest.mark.parametrize("folder", ["mayo_lite", "benchmarks", "scripts"])
def test_no_module_is_over_350_lines(folder):
    long = {path.relative_to(ROOT).as_posix(): count for path in (ROOT / folder).rglob("*.py")
            if (count := len(path.read_text().splitlines())) > MOST_LINES}
    assert long == {}


def test_no_loop_between_rooms():
    graph = room_graph()

    def reaches(start, goal, seen=()):
        return any(room == goal or (room not in seen and reaches(room, goal, (*seen, room)))
                   for room in graph.get(start, ()))

    loops = sorted(f"{a} -> {b} -> ... -> {a}" for a, targets in graph.items() for b in targets if reaches(b, a))
    assert loops == []


def test_the_graph_finds_a_loop_when_there_is_one(tmp_path, monkeypatch):
    """The loop check is not vacuous: two rooms that import each other are a loop."""
    for room, other in (("alpha", "beta"), ("beta", "alpha")):
        (tmp_path / room).mkdir()
        (tmp_path / room / "__init__.py").write_text(f"from mayo_lite.{other} import thing\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    assert room_graph() == {"alpha": {"beta"}, "beta": {"alpha"}}


def test_nothing_below_the_session_and_the_command_line_imports_them():
    upward = sorted(f"{room} -> {target}" for room, targets in room_graph().items()
                    for target in targets & {"session", "cli"} if room not in ("session", "cli", "__main__"))
    assert upward == []


@pytest.mark.parametrize("room, forbidden", [
    ("config", ("tensorflow", "keras", "mayo_lite.net", "mayo_lite.session", "mayo_lite.layers")),
    ("distribute", ("mayo_lite.session", "mayo_lite.cli", "mayo_lite.net", "mayo_lite.layers", "mayo_lite.data")),
    ("net", ("mayo_lite.config", "mayo_lite.session")),
    ("layers", ("mayo_lite.session", "mayo_lite.net", "mayo_lite.config", "mayo_lite.models", "mayo_lite.quantize")),
    ("cli", ("tensorflow", "keras")),
    ("prune", ("mayo_lite.session", "mayo_lite.config", "mayo_lite.fbs", "mayo_lite.net")),
    ("fbs", ("mayo_lite.session", "mayo_lite.config", "mayo_lite.prune", "mayo_lite.net")),
    ("quantize", ("mayo_lite.session", "mayo_lite.config", "mayo_lite.prune", "mayo_lite.fbs", "mayo_lite.sparse",
                  "mayo_lite.net")),
    ("models", ("mayo_lite.session", "mayo_lite.config", "mayo_lite.net", "mayo_lite.prune", "mayo_lite.fbs",
                "mayo_lite.quantize", "mayo_lite.sparse", "yaml")),
])
def test_dependencies_point_one_way(room, forbidden):
    found = sorted({f"{path.relative_to(ROOT)}: {name}" for path in (PACKAGE / room).rglob("*.py")
                    for name in imports(path) if name.startswith(forbidden)})
    assert found == []


def test_settings_and_the_cli_start_without_tensorflow():
    """`my --help` and config errors answer at once: what they import imports no TensorFlow or Keras."""
    for module in ("settings.py", "distribute/checks.py", "distribute/cluster.py", "distribute/__init__.py"):
        assert not [name for name in imports(PACKAGE / module) if name.split(".")[0] in ("tensorflow", "keras")]


def test_one_layer_class_per_module_of_the_layers_room():
    def layer_classes(path):
        return [node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.ClassDef)
                and any("Layer" in ast.unparse(base) or "Conv2D" in ast.unparse(base) or "Dense" in ast.unparse(base)
                        for base in node.bases)]
    crowded = {path.name: names for path in (PACKAGE / "layers").glob("*.py") if len(names := layer_classes(path)) > 1}
    assert crowded == {}


def test_callbacks_are_one_per_module_with_their_arguments_documented():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and any("Callback" in ast.unparse(base) for base in node.bases):
                found.setdefault(path.relative_to(ROOT).as_posix(), []).append(node)
    assert {name: len(nodes) for name, nodes in found.items() if len(nodes) > 1} == {}
    undocumented = sorted(node.name for nodes in found.values() for node in nodes
                          if "Args:" not in (ast.get_docstring(node) or "")
                          and any(item.name == "__init__" and len(item.args.args) > 1 for item in node.body
                                  if isinstance(item, ast.FunctionDef)))
    assert undocumented == []


def test_no_private_keras_or_tensorflow_module_is_imported():
    private = sorted(f"{path.relative_to(ROOT)}: {name}" for path in PACKAGE.rglob("*.py") for name in imports(path)
                     if name.startswith(("keras.src", "tensorflow.python.keras")))
    assert private == []


def test_argument_errors_have_one_class_and_one_formatter():
    """Keras' wording is written once (mayo_lite.errors), and no module defines an argument error of its own."""
    typed = sorted(path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*.py")
                   if "nvalid value received" in path.read_text() and path.name != "errors.py")
    assert typed == []
    classes = sorted(node.name for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
                     if isinstance(node, ast.ClassDef) and node.name.endswith("ArgumentError"))
    assert classes == ["ArgumentError"]


def test_nothing_in_the_repository_points_outside_it():
    files = [path for pattern in ("*.py", "*.md", "*.yaml", "*.toml", "*.txt")
             for path in ROOT.rglob(pattern) if ".venv" not in path.parts and ".git" not in path.parts]
    outside = ("../" + "shared", "shared/" + "design")  # spelled apart, so this file does not match itself
    assert [str(path.relative_to(ROOT)) for path in files if any(text in path.read_text() for text in outside)] == []


def test_the_package_list_of_pyproject_is_every_package_of_the_tree():
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(mayo_lite[a-z_.]*)"', text.split("packages = [", 1)[1].split("]", 1)[0]))
    found = {".".join(path.parent.relative_to(ROOT).parts) for path in PACKAGE.rglob("__init__.py")}
    assert listed == found | {"mayo_lite.configs"}
