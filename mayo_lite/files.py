"""Writing a result file (`info.yaml`, `export.yaml`, `eval_all.csv`, ...) so that a failure never leaves a partial
or empty file in place of the previous one: written to a temporary file beside it, then renamed. And where result
files go: on a worker other than the chief of a multi-worker run, to a scratch directory (`output_path`)."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from mayo_lite.errors import UserError


def write_atomically(path, text):
    """Writes `text` (str, or bytes for a binary file) to `path` atomically; a failure (full disk, no permission)
    is one-line UserError, and the previous file, if any, is untouched."""
    path = Path(path)
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
        binary = isinstance(text, bytes)
        with os.fdopen(handle, "wb" if binary else "w", **({} if binary else {"newline": ""})) as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {error.strerror or error} (nothing was changed)") from None


# Set once per process, on a worker other than the chief of a multi-worker run (mayo_lite.distribute.cluster).
_scratch = None


def write_to_scratch(name):
    """From now on `output_path` puts this process's result files under a new scratch directory, removed when the
    process ends: TensorFlow's multi-worker pattern, where every worker runs the same code (saving included, so
    that no worker waits on another) and only the chief's files are kept. Returns the directory."""
    global _scratch
    if _scratch is None:
        _scratch = Path(tempfile.mkdtemp(prefix=f"mayo-lite-{name}-"))
        atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
    return _scratch


def remove_scratch():
    """Removes the scratch directory now, for a process about to leave without running its exit handlers."""
    if _scratch is not None:
        shutil.rmtree(_scratch, ignore_errors=True)


def output_path(path):
    """Where this process writes the result file or directory `path`: `path` itself, or on a worker other than the
    chief, the same absolute path under its scratch directory (its parent created)."""
    if _scratch is None:
        return Path(path)
    absolute = Path(os.path.abspath(path))
    target = _scratch / absolute.relative_to(absolute.anchor)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target
