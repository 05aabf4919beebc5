"""The shape of the code the architecture asks for: small modules in the rooms that grow, dependencies that point
one way, and nothing that points outside the repository."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mayo_lite"


def imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


@pytest.mark.parametrize("room", ["session", "net", "layers", "weights", "sparse", "quantize"])
def test_no_module_of_a_growing_room_is_over_400_lines(room):
    long = {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
            for path in (PACKAGE / room).rglob("*.py") if len(path.read_text().splitlines()) > 400}
    assert long == {}


@pytest.mark.parametrize("room, forbidden", [
    ("config", ("tensorflow", "keras", "mayo_lite.net", "mayo_lite.session", "mayo_lite.layers")),
    ("net", ("mayo_lite.config", "mayo_lite.session")),
    ("layers", ("mayo_lite.session", "mayo_lite.net", "mayo_lite.config")),
    ("cli", ("tensorflow", "keras")),
    ("prune", ("mayo_lite.session", "mayo_lite.config", "mayo_lite.fbs")),
    ("fbs", ("mayo_lite.session", "mayo_lite.config", "mayo_lite.prune")),
    ("quantize", ("mayo_lite.session", "mayo_lite.config", "mayo_lite.prune", "mayo_lite.fbs", "mayo_lite.sparse",
                  "mayo_lite.net")),
    ("models", ("mayo_lite.session", "mayo_lite.config", "mayo_lite.net", "mayo_lite.prune", "mayo_lite.fbs",
                "mayo_lite.quantize", "mayo_lite.sparse")),
])
def test_dependencies_point_one_way(room, forbidden):
    found = sorted({f"{path.relative_to(ROOT)}: {name}" for path in (PACKAGE / room).rglob("*.py")
                    for name in imports(path) if name.startswith(forbidden)})
    assert found == []


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
