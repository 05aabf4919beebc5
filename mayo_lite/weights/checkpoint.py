"""Checkpoints of a run: model weights, optimizer state and the epoch counter, matched by variable name.

Keras' own `.weights.h5` files restore by position and refuse partial matches, and `tf.train.Checkpoint` matches
by object graph; Mayo's workflow needs name matching instead (a dense checkpoint loads into a gated or masked
model, listing the new variables), so a checkpoint is a plain `.npz` archive keyed by variable path. It is written
to a temporary file and renamed into place, so a crash during saving never leaves a half-written checkpoint. A
worker other than the chief of a multi-worker run reads the chief's checkpoints and writes its own to scratch
(`mayo_lite.files.output_path`).
"""

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mayo_lite.errors import CheckpointError
from mayo_lite.files import output_path

log = logging.getLogger("mayo_lite")

SUFFIX = ".npz"
_EPOCH_NAME = re.compile(r"^epoch-(\d+)$")


def epoch_name(epoch):
    return f"epoch-{int(epoch)}"


class CheckpointStore:
    """The checkpoints of one run, in one directory (`checkpoints/<model>/<dataset>/` by default)."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def locate(self, selector):
        """The file `system.checkpoint.load` names: `latest`, a name, an epoch number, or a path."""
        if isinstance(selector, bool) or selector is None:
            raise CheckpointError(f"system.checkpoint.load: expected latest, a name, an epoch or a path, "
                                  f"got {selector!r}")
        if isinstance(selector, (int, float)):
            if selector < 0 or selector != int(selector):
                raise CheckpointError(f"system.checkpoint.load: an epoch must be a whole number, got {selector!r}")
            return self.directory / f"{epoch_name(selector)}{SUFFIX}"
        text = str(selector)
        if text.isdigit():
            return self.directory / f"{epoch_name(int(text))}{SUFFIX}"
        path = Path(text).expanduser()
        if "/" in text or text.endswith(SUFFIX):
            return path / f"latest{SUFFIX}" if path.is_dir() else path
        return self.directory / f"{text}{SUFFIX}"

    def available(self):
        """Every checkpoint of the run, numbered ones by epoch, then named ones by name."""
        if not self.directory.is_dir():
            return []
        files = [p for p in self.directory.iterdir() if p.suffix == SUFFIX and not p.name.startswith(".")]

        def order(path):
            match = _EPOCH_NAME.match(path.stem)
            return (0, int(match.group(1)), "") if match else (1, 0, path.stem)
        return sorted(files, key=order)

    def save(self, name, variables, epoch, meta):
        """Writes `name`.npz atomically; `variables` maps names to arrays."""
        directory = output_path(self.directory)
        target = directory / f"{name}{SUFFIX}"
        arrays = dict(variables)
        arrays["__epoch__"] = np.float64(epoch)
        # The names are listed in the metadata too: a damaged archive directory that renamed or lost a member
        # would otherwise load as a checkpoint with a variable missing.
        arrays["__meta__"] = np.array(json.dumps({**meta, "variables": sorted(variables)}))
        try:
            directory.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        except OSError as error:
            raise CheckpointError(f"cannot write checkpoint {target}: {error.strerror or error} (the previous "
                                  "checkpoints are untouched)") from None
        try:
            with os.fdopen(handle, "wb") as stream:
                np.savez(stream, **arrays)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except OSError as error:
            Path(temporary).unlink(missing_ok=True)
            raise CheckpointError(f"cannot write checkpoint {target}: {error.strerror or error} (the previous "
                                  f"{target.name} is untouched)") from None
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return target

    def prune_numbered(self, keep):
        """Deletes the oldest numbered checkpoints beyond the newest `keep` (of those this process writes)."""
        numbered = [p for p in CheckpointStore(output_path(self.directory)).available() if _EPOCH_NAME.match(p.stem)]
        for path in numbered[:max(len(numbered) - keep, 0)]:
            path.unlink(missing_ok=True)


def digest(variables):
    """A short SHA-256 of the arrays `variables` maps names to, in name order: equal for equal weights."""
    hashed = hashlib.sha256()
    for name in sorted(variables):
        value = np.ascontiguousarray(variables[name])
        hashed.update(f"{name}:{value.dtype.str}:{value.shape}".encode())
        hashed.update(value.tobytes())
    return hashed.hexdigest()[:16]


def _check_members(archive, path):
    """Reads every member's array header and refuses one whose declared size exceeds what the file holds (a
    corrupt or hostile header could otherwise make NumPy allocate 40 GB) or whose type is not numeric."""
    for info in archive.infolist():
        with archive.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            reader = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f"member {info.filename}: unknown array format {version}")
            shape, _, dtype = reader(stream, max_header_size=10000)
            if dtype.hasobject or dtype.kind not in "fiubU":
                raise ValueError(f"member {info.filename}: unsupported type {dtype}")
            declared = math.prod(shape) * dtype.itemsize
            if declared > info.file_size:
                raise ValueError(f"member {info.filename}: declares {declared:,} bytes, holds {info.file_size:,}")


def read(path):
    """Reads a checkpoint file: (variables, epoch, meta). Any defect is a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with zipfile.ZipFile(path) as archive:
            _check_members(archive, path)
        with np.load(path, allow_pickle=False) as archive:
            variables = {key: archive[key] for key in archive.files if not key.startswith("__")}
            missing = [name for name in ("__epoch__", "__meta__") if name not in archive.files]
            if missing:
                raise KeyError(f"no {' and no '.join(missing)} member")
            epoch, meta = archive["__epoch__"], archive["__meta__"]
        if epoch.shape != () or epoch.dtype.kind not in "fiu":
            raise ValueError(f"__epoch__ is {epoch.dtype} {epoch.shape}, not a number")
        if meta.shape != () or meta.dtype.kind != "U":
            raise ValueError(f"__meta__ is {meta.dtype} {meta.shape}, not text")
        epoch, meta = float(epoch), json.loads(str(meta))
        if not isinstance(meta, dict):
            raise ValueError("__meta__ is not a mapping")
        listed = meta.pop("variables", None)
        if listed is not None and sorted(variables) != sorted(listed):
            raise ValueError(f"the variables do not match the checkpoint's own list of {len(listed)}")
        for name, value in variables.items():
            if value.dtype.kind not in "fiub":
                raise ValueError(f"variable {name} is {value.dtype}, not numeric")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, json.JSONDecodeError, RuntimeError,
            NotImplementedError, OverflowError, MemoryError, UnicodeDecodeError, zlib.error) as error:
        text = str(error).splitlines()[0] if str(error) else "corrupt"
        raise CheckpointError(f"{path}: not a readable mayo-lite checkpoint ({type(error).__name__}: "
                              f"{text[:200]})") from None
    if not math.isfinite(epoch) or epoch < 0:
        raise CheckpointError(f"{path}: corrupt epoch counter {epoch}")
    return variables, epoch, meta


def has_masks(path):
    """Whether the checkpoint at `path` holds pruning masks (it was pruned, so its model must be masked)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return any(key.endswith("/mask") for key in archive.files)
    except Exception:  # noqa: BLE001 - whatever is wrong, `read` reports it when the checkpoint is loaded
        return False


def match(targets, stored, path):
    """Pairs `targets` (name -> variable) with `stored` arrays by name.

    Returns (pairs, missing, extra). A shape mismatch is an error naming the variable and both shapes; it is
    checked for every pair before anything is assigned, so a failed load changes nothing.
    """
    pairs, missing = [], []
    for name, variable in targets.items():
        if name not in stored:
            missing.append(name)
            continue
        value = stored[name]
        if value.dtype.kind not in "fiub":
            raise CheckpointError(f"{path}: variable {name} holds {value.dtype} values, not numbers")
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{path}: variable {name} has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(variable.shape)} in the model")
        pairs.append((variable, value))
    extra = sorted(set(stored) - set(targets))
    return pairs, missing, extra
