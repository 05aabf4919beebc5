"""Writing a result file (`info.yaml`, `export.yaml`, `eval_all.csv`, ...) so that a failure never leaves a partial
or empty file in place of the previous one: written to a temporary file beside it, then renamed."""

import os
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
