"""mayo-lite as a pip package: `pip install .` and a wheel give the `my` command and the bundled configs from any
directory, `python -m mayo_lite` is the same command, and the version is written once.

The fresh virtual environment borrows the test environment's installed dependencies (a `.pth` file) instead of
downloading TensorFlow again; what is installed and checked is mayo-lite itself, built from a copy of the tracked
files."""

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tracked_copy(target):
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the fresh environment's bin directory, the source copy) after `pip install` of the copy."""
    base = tmp_path_factory.mktemp("package")
    source = tracked_copy(base / "source")
    environment = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(environment)], check=True)
    python = environment / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    str(source)], check=True, capture_output=True)
    return environment / "bin", source


def run(command, cwd):
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_the_installed_command_works_from_another_directory_with_the_bundled_configs(installed, tmp_path):
    bin_directory, _ = installed
    my = str(bin_directory / "my")
    assert "usage: my" in run([my, "--help"], tmp_path).stdout
    version = run([my, "--version"], tmp_path).stdout.strip()
    assert version == f"mayo-lite {read_version()}"
    assert run([str(bin_directory / "python"), "-m", "mayo_lite", "--version"], tmp_path).stdout.strip() == version
    result = run([my, "models/lenet5.yaml", "datasets/synthetic.yaml", "system.info.density_batches=0", "info"],
                 tmp_path)
    assert result.returncode == 0, result.stderr
    assert "model lenet5 on synthetic: 657,080 parameters" in result.stdout  # from the bundled configs
    imported = run([str(bin_directory / "python"), "-c", "import mayo_lite; print(mayo_lite.__file__)"], tmp_path)
    assert "site-packages" in imported.stdout  # the installed copy, not the repository


def test_the_wheel_holds_the_package_and_its_configs(installed, tmp_path):
    bin_directory, source = installed
    subprocess.run([str(bin_directory / "python"), "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(source)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("mayo_lite-*.whl"))
    assert wheel.name.startswith(f"mayo_lite-{read_version()}-")
    names = zipfile.ZipFile(wheel).namelist()
    bundled = {Path(name).relative_to("mayo_lite/configs").as_posix() for name in names
               if name.startswith("mayo_lite/configs/")}
    shipped = {path.relative_to(ROOT / "configs").as_posix() for path in (ROOT / "configs").rglob("*.yaml")}
    assert bundled == shipped
    assert "mayo_lite/config/defaults.yaml" in names
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "my = mayo_lite.cli:main_exit" in zipfile.ZipFile(wheel).read(entry_points).decode()


def read_version():
    """The version, read from the one place it is written."""
    tree = ast.parse((ROOT / "mayo_lite/__init__.py").read_text())
    return next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and node.targets[0].id == "__version__")


def test_the_package_pins_what_requirements_txt_pins():
    requirements = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if match:
            requirements[match[1].lower()] = match[2]
    declared = re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    for name, version in declared:
        assert requirements.get(name.lower()) == version, name
        assert importlib.metadata.version(name) == version, name  # and it is what this environment runs
