"""Helpers every test module may use: a scratch directory with config files in it where `my` runs in-process, and
digests of files and directories to prove that nothing changed."""

import hashlib
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
