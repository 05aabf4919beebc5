"""torchvision state dicts (`torchvision:[arch:]file.pth`), read with `torch.load(weights_only=True)` and mapped onto
this project's models: torch layouts to Keras layouts, the architecture recognised from the tensor names."""

import math
from pathlib import Path

from mayo_lite.errors import CheckpointError
from mayo_lite.weights.architectures import CONVOLUTIONS, TORCH_NAMES, TORCHVISION
from mayo_lite.weights.fitting import ModelSide, check_layout, first_line, fit, listed


def _parse_torchvision(selector):
    """torchvision:[ARCH:]PATH -> (architecture or None, path)."""
    rest = selector[len("torchvision:"):]
    name, separator, path = rest.partition(":")
    if separator and name.strip().lower() in TORCHVISION:
        return TORCHVISION[name.strip().lower()], path
    if separator and name and "/" not in name and "." not in name and not Path(rest).expanduser().exists():
        raise CheckpointError(f"{selector}: unknown torchvision architecture {name!r} (known: "
                              f"{', '.join(TORCHVISION)}); the selector is torchvision:[ARCH:]PATH")
    return None, rest


def expected_keys(architecture):
    return {f"{entry.source}.{TORCH_NAMES[role]}" for entry in architecture.entries for role in entry.roles}


def _state_dict(selector, path):
    if not path.strip():
        raise CheckpointError(f"{selector}: no file named; the selector is torchvision:[ARCH:]PATH")
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{selector}: no such file {path}")
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{selector}: reading a PyTorch state dict needs the `torch` package "
                              "(pip install torch)") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike
        raise CheckpointError(f"{selector}: not a readable PyTorch state dict ({first_line(error)})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{selector}: expected a state dict (tensors by name), got {type(state).__name__}")
    if all(str(key).startswith("module.") for key in state):
        state = {str(key)[len("module."):]: value for key, value in state.items()}
    arrays = {}
    for key, value in state.items():
        if str(key).endswith("num_batches_tracked"):
            continue
        if not torch.is_tensor(value):
            raise CheckpointError(f"{selector}: {key} is a {type(value).__name__}, not a tensor")
        arrays[str(key)] = value.detach().to("cpu", torch.float32).numpy()
    return arrays


def _recognise(selector, arrays, named):
    """The architecture whose tensor names the state dict has: exactly, or the named one (or closest) in error."""
    keys = set(arrays)
    candidates = [named] if named else list(TORCHVISION.values())
    for architecture in candidates:
        if expected_keys(architecture) == keys:
            return architecture
    closest = named or max(candidates, key=lambda a: len(expected_keys(a) & keys) / len(expected_keys(a) | keys))
    expected = expected_keys(closest)
    missing = sorted(expected - keys, key=_natural)
    unexpected = sorted(keys - expected, key=_natural)
    parts = ([f"lacks {listed(missing)}"] if missing else []) + (
        [f"has unexpected {listed(unexpected)}"] if unexpected else [])
    what = (f"not a torchvision {named.name} state dict" if named else
            f"not a torchvision {', '.join(TORCHVISION)} state dict (closest: {closest.name})")
    raise CheckpointError(f"{selector}: {what}: it {' and '.join(parts)}")


def _natural(key):
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in key.split(".")]


def _torch_layout(entry, role, array, where):
    """A torch tensor of one layer in Keras layout."""
    if role != "kernel":
        return array
    if entry.kind in CONVOLUTIONS:
        if array.ndim != 4:
            raise CheckpointError(f"{where}: {entry.source}.weight has shape {tuple(array.shape)}, expected a "
                                  "convolution weight (out, in, kh, kw)")
        return array.transpose(2, 3, 1, 0)
    if array.ndim != 2:
        raise CheckpointError(f"{where}: {entry.source}.weight has shape {tuple(array.shape)}, expected a "
                              "Linear weight (out, in)")
    if entry.kind == "dense_nchw":
        outputs, inputs = array.shape
        side = math.isqrt(inputs // entry.channels) if inputs % entry.channels == 0 else 0
        if side * side * entry.channels != inputs:
            raise CheckpointError(f"{where}: {entry.source}.weight has shape {tuple(array.shape)}, expected "
                                  f"(out, {entry.channels}·H·W) after a square {entry.channels}-channel map")
        # torch flattens (C, H, W), Keras (H, W, C).
        array = array.reshape(outputs, entry.channels, side, side).transpose(0, 2, 3, 1).reshape(outputs, inputs)
    return array.T


def read_torchvision(selector, model):
    named, path = _parse_torchvision(selector)
    arrays = _state_dict(selector, path)
    architecture = _recognise(selector, arrays, named)
    target = ModelSide(model)
    check_layout(selector, architecture, target, strides=False)
    sources = {}
    for entry in architecture.entries:
        layer, names = {}, {}
        for role in entry.roles:
            key = f"{entry.source}.{TORCH_NAMES[role]}"
            layer[role] = _torch_layout(entry, role, arrays[key], selector)
            names[role] = (key, tuple(arrays[key].shape))
        sources[entry.source] = (layer, names, architecture.epsilon)
    values = fit(selector, architecture, sources, target)
    check_layout(selector, architecture, target)  # strides: the names and shapes agree, does the layout?
    return values, f"{architecture.title} state dict {Path(path).expanduser()}"
