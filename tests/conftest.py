"""Helpers every test module may use: a scratch directory with config files in it where `my` runs in-process, and
digests of files and directories to prove that nothing changed."""

import hashlib
import os
import signal
from pathlib import Path

import pytest

from mayo_lite.cli import main


def digest_file(path):
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def digest_directory(directory):
    """File name -> SHA-256 of every file directly in `directory`."""
    return {path.name: digest_file(path) for path in sorted(Path(directory).glob("*")) if path.is_file()}


@pytest.fixture(autouse=True, scope="session")
def tuning_cache(tmp_path_factory):
    """The sparse programs' tuning cache in a scratch directory, not the user's home."""
    path = tmp_path_factory.mktemp("tuning") / "tuning.json"
    previous = os.environ.get("MAYO_LITE_TUNING_CACHE")
    os.environ["MAYO_LITE_TUNING_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("MAYO_LITE_TUNING_CACHE", None)
    else:
        os.environ["MAYO_LITE_TUNING_CACHE"] = previous


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """`workspace(files)` writes `files` (name -> YAML text) into a scratch directory, makes it the current one and
    returns a function that runs `my ARGUMENTS` in-process there and returns its exit status. SIGINT behaves as in
    an interactive shell, whatever the test runner inherited (a background job ignores it)."""
    monkeypatch.chdir(tmp_path)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def prepare(files):
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        return lambda *arguments: main(list(arguments))
    yield prepare
    signal.signal(signal.SIGINT, previous)


# The test files that take longest, in that order, before the others: with one process per core, each taking a file
# at a time (pytest-xdist's `--dist loadfile`), a long file started last would leave the other cores idle at the end.
LONGEST_FIRST = ("test_results.py", "test_sparse.py", "test_replica_equivalence.py", "test_cli.py",
                 "test_keras_doc.py", "test_tutorial.py", "test_tuning.py", "test_keras_api.py", "test_doc_recipes.py",
                 "test_export_model.py")


def pytest_collection_modifyitems(items):
    order = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(LONGEST_FIRST)))  # stable: a file keeps its order
