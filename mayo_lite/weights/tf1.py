"""Mayo's own checkpoints (`tf1:PATH`, or a path to one): TF1 name-based checkpoints (`PREFIX.index` +
`PREFIX.data-*`), read with `tf.train.load_checkpoint` and mapped by variable name onto this project's models.

Mayo names a variable `<model>/<modules...>/<layer>/<slim name>` (mayo/net/tf/transform.py: the variable scope is
the module path, the layer's scope its name); this project flattens modules into `<module>.<layer>`, so the Mayo
scope of a YAML layer is its name with dots as slashes. Checked before anything is returned: the files exist, the
index is a TF1 checkpoint, every mapped tensor is numeric and fits its variable (nothing is assigned otherwise).
"""

import glob
import logging
import re
from collections import namedtuple
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mayo_lite.errors import CheckpointError
from mayo_lite.layers import GatedConv2D
from mayo_lite.fbs.sources import dense_sources
from mayo_lite.weights.architectures import BN_ROLES, PREFIX, SHOWN
from mayo_lite.weights.checkpoint import SUFFIX
from mayo_lite.weights.fitting import first_line, listed

log = logging.getLogger("mayo_lite")

SELECTOR = "tf1:"
STATE_FILE = "checkpoint"  # TF1's CheckpointState file, naming a directory's latest checkpoint
_SHARD = re.compile(r"\.data-(\d{5})-of-(\d{5})$")
_PREFIX_NAME = re.compile(r"\.ckpt(-\d+)?$")
# Mayo's pruning overriders keep a boolean mask beside the variable they prune (mayo/override/base.py names
# their state `<variable>/<class>.<parameter>`); the pruned weight is `variable * mask` while `.enable` holds.
_PRUNER_MASK = re.compile(r"(\w*Pruner|NetworkSlimmer)\.mask")

# This project's variable name -> Mayo's (slim's), under the layer's scope, for each kind of layer.
WEIGHTED = {"kernel": "weights", "bias": "biases"}
DEPTHWISE = {"kernel": "depthwise_weights", "bias": "biases"}
POINTWISE = {"kernel": "pointwise_weights", "bias": "biases"}  # slim.separable_conv2d's 1×1 half
BATCH_NORM = {role: role for role in BN_ROLES}
# mayo/net/tf/gate: the gate predictor is a 1×1 slim convolution `gate` (`gate/factor` before it with a factor),
# the parametric beta predictor `gate/beta`, the constant beta `gate/shift`, the threshold `gate/threshold`; the
# batch norm keeps slim's `BatchNorm` scope (moving statistics only under the parametric policy).
GATED = {"kernel": "weights", **{role: f"BatchNorm/{role}" for role in BN_ROLES},
         "gate_kernel": "gate/weights", "gate_bias": "gate/biases",
         "gate_hidden_kernel": "gate/factor/weights", "gate_hidden_bias": "gate/factor/biases",
         "beta_kernel": "gate/beta/weights", "beta_bias": "gate/beta/biases",
         "beta_hidden_kernel": "gate/beta/factor/weights", "beta_hidden_bias": "gate/beta/factor/biases",
         "threshold": "gate/threshold"}
_PREDICTOR_KERNELS = ("gate_kernel", "gate_hidden_kernel", "beta_kernel", "beta_hidden_kernel")

# One variable of the model: its name (`variable.path`), the Mayo names that may hold it relative to the model's
# scope (the first present is taken), and how the tensor becomes the variable's value.
Entry = namedtuple("Entry", "name candidates kind shape")


def _converted_shape(kind, source, target):
    """The shape a source tensor of shape `source` has once converted for a variable of shape `target`."""
    if kind == "predictor" and len(source) == 4 and source[:2] == (1, 1):
        return source[2:]  # a 1×1 convolution's kernel is this project's (in, out) predictor matrix
    if kind == "mask":
        try:
            return target if np.broadcast_shapes(source, target) == target else source
        except ValueError:
            return source
    return source


def _convert(kind, array, target):
    if kind == "predictor":
        return array.reshape(target)
    if kind == "mask":
        return np.broadcast_to(array.astype(bool), target)
    return array


def names_tf1(text):
    """Whether a plain `system.checkpoint.load` path names a TF1 checkpoint (its prefix, one of its files, or a
    directory with a TF1 state file and no checkpoint of this project's)."""
    if not isinstance(text, str) or not text or text.endswith(SUFFIX):
        return False
    path = Path(text).expanduser()
    if path.is_dir():
        return (path / STATE_FILE).is_file() and not (path / f"latest{SUFFIX}").is_file()
    # Other words name this project's checkpoints (latest, epoch-3) or another model's run (CheckpointStore).
    return bool(text.endswith(".index") or _SHARD.search(text) or _PREFIX_NAME.search(path.name)
                or "/" in text and Path(f"{path}.index").is_file())


def _latest(selector, directory):
    """The prefix a directory's TF1 state file names (also where the directory was moved since)."""
    if not (directory / STATE_FILE).is_file():
        raise CheckpointError(f"{selector}: {directory} is a directory without a TF1 `{STATE_FILE}` state file; "
                              "name the checkpoint's prefix (e.g. model.ckpt-100)")
    state = tf.train.get_checkpoint_state(str(directory))
    if state is None or not state.model_checkpoint_path:
        raise CheckpointError(f"{selector}: {directory / STATE_FILE} is not a TF1 checkpoint state file (no "
                              "model_checkpoint_path)")
    prefix = Path(state.model_checkpoint_path)
    moved = directory / prefix.name
    return moved if not Path(f"{prefix}.index").exists() and Path(f"{moved}.index").exists() else prefix


def resolve(selector):
    """The checkpoint prefix `tf1:PATH` names, its files checked: the index and every data shard exist."""
    text = selector.removeprefix(SELECTOR).strip()
    if not text:
        raise CheckpointError(f"{selector}: no checkpoint named; the selector is tf1:PATH (a TF1 checkpoint's "
                              "prefix, e.g. model.ckpt-100, or its directory)")
    path = Path(text).expanduser()
    if path.is_dir():
        path = _latest(selector, path)
    elif path.name.endswith(".index"):
        path = path.with_name(path.name.removesuffix(".index"))
    elif _SHARD.search(path.name):
        path = path.with_name(_SHARD.sub("", path.name))
    index = Path(f"{path}.index")
    if not index.is_file():
        raise CheckpointError(f"{selector}: no TF1 checkpoint at {path}: {index} does not exist")
    shards = [_SHARD.search(found.name) for found in path.parent.glob(f"{glob.escape(path.name)}.data-*-of-*")]
    counts = {int(match.group(2)) for match in shards if match}
    expected = [f"{path.name}.data-{i:05d}-of-{count:05d}" for count in counts or {1} for i in range(count)]
    absent = [name for name in expected if not (path.parent / name).is_file()]
    if absent:
        raise CheckpointError(f"{selector}: TF1 checkpoint {path} lacks its data file "
                              f"{listed(str(path.parent / name) for name in absent)}")
    return path


def open_checkpoint(selector):
    """(prefix, reader, {name: shape}, {name: tf.DType}) of a checked TF1 checkpoint."""
    prefix = resolve(selector)
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}
        dtypes = dict(reader.get_variable_to_dtype_map())
    except Exception as error:  # TensorFlow raises OpError, DataLossError, IndexError ... for a damaged file
        raise CheckpointError(f"{prefix}: not a readable TF1 checkpoint ({first_line(error)})") from None
    if "_CHECKPOINTABLE_OBJECT_GRAPH" in shapes:
        raise CheckpointError(f"{prefix}: a TF2 object-based checkpoint (tf.train.Checkpoint), not a TF1 "
                              "name-based one such as Mayo writes")
    return prefix, reader, shapes, dtypes


def _layer_table(layer, group, separable):
    """{variable name: Mayo name under the layer's scope} for one Keras layer, or None."""
    if layer.name == f"{group}.bn":
        return {role: f"BatchNorm/{mayo}" for role, mayo in BATCH_NORM.items()}
    if layer.name == f"{group}.depthwise" or isinstance(layer, keras.layers.DepthwiseConv2D):
        return DEPTHWISE
    if isinstance(layer, GatedConv2D):
        return {**GATED, "beta": "gate/shift"} if layer.policy == "parametric" else GATED
    if isinstance(layer, keras.layers.BatchNormalization):
        return BATCH_NORM
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return POINTWISE if separable else WEIGHTED
    return None


def entries(model):
    """Every variable of `model` that a Mayo checkpoint can hold, as Entry, plus the dense batch-norm names that
    start a gated layer (`Session`'s dense-to-gated rule) as further entries."""
    groups = {layer.name: getattr(layer, "mayo_group", layer.name) for layer in model.layers}
    found = []
    for layer in model.layers:
        group = groups[layer.name]
        table = _layer_table(layer, group, f"{group}.depthwise" in groups)
        scope = group.replace(".", "/")
        module = scope.rpartition("/")[0]
        for variable in layer.variables if table is not None else ():
            name, shape = variable.path, tuple(variable.shape)
            role = name.removeprefix(f"{layer.name}/")
            if name == role and getattr(layer, "threshold", None) == "global" and role.endswith("/threshold"):
                found.append(Entry(name, (f"{module}/gate/threshold".lstrip("/"),), "same", shape))
            elif role == "mask":
                found.append(Entry(name, (f"{scope}/{table['kernel']}",), "mask", shape))
            elif role in table:
                kind = "predictor" if isinstance(layer, GatedConv2D) and role in _PREDICTOR_KERNELS else "same"
                found.append(Entry(name, (f"{scope}/{table[role]}",), kind, shape))
    shapes = {entry.name: entry.shape for entry in found}
    direct = {candidate for entry in found for candidate in entry.candidates}
    for target, source in dense_sources(model).items():
        layer, _, role = source.rpartition("/")
        scope = groups.get(layer.removesuffix(".bn"), layer.removesuffix(".bn")).replace(".", "/")
        # A name the gated layer reads itself (its moving statistics) is not read twice.
        if source not in shapes and layer.endswith(".bn") and f"{scope}/BatchNorm/{role}" not in direct:
            found.append(Entry(source, (f"{scope}/BatchNorm/{role}",), "same", shapes[target]))
    return found


def _tensor(reader, prefix, name):
    try:
        return reader.get_tensor(name)
    except Exception as error:  # a truncated data file raises IndexError, a damaged one DataLossError
        raise CheckpointError(f"{prefix}: cannot read variable {name} ({first_line(error)})") from None


def _masks(variable, shapes, reader, prefix):
    """The names of the pruning masks Mayo applies to `variable` (those whose `.enable` is not false)."""
    masks = []
    for name in sorted(shapes):
        tail = name.removeprefix(f"{variable}/")
        if tail != name and _PRUNER_MASK.fullmatch(tail):
            enable = f"{name.removesuffix('.mask')}.enable"
            if enable not in shapes or bool(np.all(_tensor(reader, prefix, enable))):
                masks.append(name)
    return masks


def _root(model_entries, shapes):
    """Mayo's model scope (the first name component) under which most of the model's variables are found."""
    roots = {name.split("/", 1)[0] for name in shapes if "/" in name} | {""}

    def found(root):
        return sum(any(f"{root}/{c}".lstrip("/") in shapes for c in entry.candidates) for entry in model_entries)
    return max(sorted(roots), key=found)


def _merged(found):
    """One Entry per variable: the global threshold is found from every gated layer that shares it, and Mayo keeps
    it in the scope of the first one (`<module>/gate/threshold`)."""
    merged = {}
    for entry in found:
        known = merged.get(entry.name)
        merged[entry.name] = entry if known is None else known._replace(
            candidates=known.candidates + tuple(c for c in entry.candidates if c not in known.candidates))
    return list(merged.values())


def _misfit(source, entry, shapes, dtypes, kind=None):
    """Why the tensor `source` cannot become the variable of `entry` (as `kind`), or None."""
    kind = kind or entry.kind
    dtype = dtypes[source]
    if not (dtype.is_floating or dtype.is_integer or kind == "mask" and dtype.is_bool):
        return f"{source} holds {dtype.name} values, not {'a mask' if kind == 'mask' else 'weights'}"
    if _converted_shape(kind, shapes[source], entry.shape) != entry.shape:
        return f"{source} {shapes[source]} does not fit {entry.name} {entry.shape}"
    return None


def read_tf1(selector, model):
    """The weights of the TF1 checkpoint `tf1:PATH` names, by this project's variable name: (values, description).
    A pruning mask fills the model's mask, or, where the model has none, is folded into the weights it prunes."""
    prefix, reader, shapes, dtypes = open_checkpoint(selector)
    model_entries = _merged(entries(model))
    root = _root(model_entries, shapes)

    def qualified(name):
        return f"{root}/{name}" if root else name
    pairs = []  # (entry, the tensors that make its value: one, or the masks to combine)
    for entry in model_entries:
        names = [qualified(candidate) for candidate in entry.candidates]
        sources = (_masks(names[0], shapes, reader, prefix) if entry.kind == "mask"
                   else [name for name in names if name in shapes][:1])
        if sources:
            pairs.append((entry, sources))
    wrong = [problem for entry, sources in pairs for source in sources
             if (problem := _misfit(source, entry, shapes, dtypes)) is not None]
    mapped_masks = {source for entry, sources in pairs if entry.kind == "mask" for source in sources}
    folds = {}  # variable name -> the masks folded into it
    for entry, sources in pairs:
        masks = [] if entry.kind == "mask" else [
            mask for mask in _masks(sources[0], shapes, reader, prefix) if mask not in mapped_masks]
        wrong += [problem for mask in masks if (problem := _misfit(mask, entry, shapes, dtypes, "mask"))]
        if masks:
            folds[entry.name] = masks
    if wrong:
        raise CheckpointError(f"{prefix}: the checkpoint does not fit model {model.name!r}: {listed(wrong)}")
    if not pairs and model_entries:
        expected = [qualified(entry.candidates[0]) for entry in model_entries[:SHOWN]]
        raise CheckpointError(f"{prefix}: shares no variable with model {model.name!r} (it would hold "
                              f"{listed(expected)}; the checkpoint has {listed(sorted(shapes)) or 'nothing'})")
    values = {}
    for entry, sources in pairs:
        arrays = [_convert(entry.kind, _tensor(reader, prefix, source), entry.shape) for source in sources]
        arrays += [_convert("mask", _tensor(reader, prefix, mask), entry.shape) for mask in folds.get(entry.name, ())]
        values[PREFIX + entry.name] = np.array(np.prod(arrays, axis=0), dtype=np.float32)  # scalars stay 0-d
    log.info("%d variable(s) of the checkpoint match by name: %s", len(pairs),
             ", ".join(f"{sources[0]} as {entry.name}" for entry, sources in pairs))
    if folds:
        log.info("the pruning masks of %s are folded into the weights, as model %r has none (with a prune: "
                 "section it has masks, and they take them)", ", ".join(folds), model.name)
    used = {source for _, sources in pairs for source in sources} | {m for ms in folds.values() for m in ms}
    used |= {f"{name.removesuffix('.mask')}.enable" for name in used if _PRUNER_MASK.search(name)}
    extra = sorted(set(shapes) - used)
    if extra:
        log.info("%d variable(s) in the checkpoint are not in this model: %s", len(extra), ", ".join(extra))
    return values, f"TF1 checkpoint {prefix} of Mayo model {root or '(unscoped)'}"
