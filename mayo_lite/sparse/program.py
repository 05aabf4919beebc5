"""A Keras model turned into one compiled inference function for a single image: `InferenceProgram`.

The model's graph is walked once: each layer becomes a step (`steps.py`) holding its weights folded for inference,
batch norms that follow a convolution disappear into it, and the steps are traced into one `tf.function`. With
only static shapes (every gate online, or no gates) the function is compiled whole by XLA (`jit_compile=True`):
without it the gathers and transposes around each small convolution cost more than the channels they save.

Keras cannot express a convolution whose channel set changes with every input, hence this hand-written program;
for a model without gates it is the fastest dense path this project makes (folded batch norms, XLA or the native
runtime), the fair baseline for the sparse one.

The same steps can also run on the native runtime (`native.py`, `native_runtime.py`: NumPy's BLAS and Numba
kernels), which at batch 1 is faster than TensorFlow on small maps. Which engine runs, and how each gated layer
computes there, is decided by timing them on the machine (`tuning.py`) at the first call, and cached.
"""

import logging

import keras
import numpy as np
import tensorflow as tf

from mayo_lite.errors import ArgumentError
from mayo_lite.layers import GatedConv2D
from mayo_lite.sparse import tuning
from mayo_lite.sparse.features import Feature, materialize
from mayo_lite.sparse.folding import UnsupportedModel, batch_norm_affine
from mayo_lite.sparse.native import native_program
from mayo_lite.sparse.steps import DepthwiseStep, foldable, step_for

log = logging.getLogger("mayo_lite")
ENGINES = ("auto", "xla", "native")


def _single_input(model):
    if not isinstance(model, keras.Model) or not getattr(model, "_inbound_nodes", None) and not hasattr(
            model, "inputs") or not getattr(model, "inputs", None):
        raise UnsupportedModel(f"{type(model).__name__}: sparse execution needs a functional or Sequential Keras "
                               "model (a graph of layers)")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedModel(f"model {model.name}: sparse execution handles one input and one output, not "
                               f"{len(model.inputs)} and {len(model.outputs)}")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or None in shape:
        raise UnsupportedModel(f"model {model.name}: sparse execution needs a fixed image input (H, W, C); "
                               f"the model takes {shape}")
    return shape


def _consumers(layers):
    """id(output tensor) -> the layers that read it."""
    readers = {}
    for layer in layers:
        for tensor in layer._inbound_nodes[0].input_tensors:
            readers.setdefault(id(tensor), []).append(layer)
    return readers


class InferenceProgram(tf.Module):
    """`model` on one image at a time, with folded weights, skipping the channels its gates switch off.

    Call it with a float32 batch of one image, `(1, H, W, C)`; it returns what `model(image, training=False)`
    returns (to float32 rounding), as a NumPy array. It holds copies of the weights taken when it was made: prepare
    it again after training. `run` is the TensorFlow function (what a SavedModel of it serves).

    Args:
        model: a functional or Sequential Keras model with one image input and one output.
        jit_compile: compile with XLA; None (the default) compiles when every shape is static.
        engine: `auto` (the default) times TensorFlow/XLA and the native runtime on this machine at the first
            call and keeps the faster (cached, see `tuning.py`); `xla` or `native` forces one (`native` raises
            UnsupportedModel for a layer the native runtime does not have).
    """

    def __init__(self, model, jit_compile=None, engine="auto"):
        super().__init__(name="inference_program")
        if engine not in ENGINES:
            raise ArgumentError("engine", f"one of {ENGINES}", engine)
        self.input_shape = _single_input(model)
        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        for layer in layers:
            if isinstance(layer, keras.Model):
                raise UnsupportedModel(f"layer {layer.name}: a nested model; flatten it into one graph first")
        readers = _consumers(layers)
        output_ids = {id(tensor) for tensor in model.outputs}
        folded = {}  # id(batch norm) -> the layer it was folded into
        self.steps = []
        self._wiring = []  # per step: (input tensor ids, output tensor id)
        for layer in layers:
            if id(layer) in folded:
                continue
            node = layer._inbound_nodes[0]
            if len(node.output_tensors) != 1:
                raise UnsupportedModel(f"layer {layer.name}: layers with several outputs are not supported")
            output = node.output_tensors[0]
            affine = None
            following = readers.get(id(output), [])
            if (foldable(layer) and len(following) == 1 and id(output) not in output_ids
                    and isinstance(following[0], keras.layers.BatchNormalization)):
                norm = following[0]
                affine = batch_norm_affine(norm)
                folded[id(norm)] = layer
                output = norm._inbound_nodes[0].output_tensors[0]
            self.steps.append(step_for(layer, affine))
            self._wiring.append(([id(tensor) for tensor in node.input_tensors], id(output)))
        self._input_id = id(model.inputs[0])
        self._output_id = id(model.outputs[0])
        self.gated = [layer for layer in layers if isinstance(layer, GatedConv2D)]
        self.static = all(step.static for step in self.steps if hasattr(step, "static"))
        self.jit_compile = self.static if jit_compile is None else bool(jit_compile)
        for step in self.steps:
            if isinstance(step, DepthwiseStep):
                step.by_shifts = self.jit_compile
        self._trace()
        self.native = None
        self.modes = {}
        if engine != "xla" and self.static:
            try:
                self.native = native_program(self)
            except UnsupportedModel as error:
                if engine == "native":
                    raise
                log.debug("sparse: %s stays on TensorFlow (%s)", model.name, error)
        elif engine == "native":
            raise UnsupportedModel(f"model {model.name}: a moving threshold keeps a different number of channels "
                                   "per image; the native runtime needs the online threshold")
        # With nothing to choose (no native program, no small map to compute whole), TensorFlow runs untimed.
        self.engine = engine if engine != "auto" or self.native is not None or self.small_maps() else "xla"
        self.from_cache = None

    def _run(self, image):
        features = {self._input_id: Feature.full(image)}
        for step, (inputs, output) in zip(self.steps, self._wiring):
            missing = [tensor for tensor in inputs if tensor not in features]
            if missing:
                raise UnsupportedModel(f"layer {step.layer_name}: its inputs are not computed before it")
            features[output] = step([features[tensor] for tensor in inputs])
        return materialize(features[self._output_id])

    def small_maps(self):
        """Whether some gated layer may compute every channel instead of gathering (a small map)."""
        return any(getattr(step, "whole_kernel", None) is not None for step in self.steps)

    def with_gather_cost(self, cost):
        """Traces the TensorFlow program again with `cost` as every gated layer's gather cost (see
        `gated_step.GATHER_COST`), makes it the one `run` and `compiled` use, and returns its concrete function."""
        for step in self.steps:
            if hasattr(step, "gather_cost"):
                step.gather_cost = cost
        self._trace()
        self._concrete = self.run.get_concrete_function()
        return self._concrete

    def _trace(self):
        signature = tf.TensorSpec((1, *self.input_shape), tf.float32, name="image")
        self.run = tf.function(self._run, input_signature=[signature], jit_compile=self.jit_compile,
                               autograph=False)
        self._concrete = None

    def tune(self, images=None):
        """Chooses the engine and the native modes (from the cache, or by timing on `images`, random ones by
        default); the first call does it when it was not done."""
        if self.engine != "auto":
            return self.engine
        if images is None:
            rng = np.random.default_rng(0)
            images = [rng.random((1, *self.input_shape), dtype=np.float32) for _ in range(5)]
        self.engine, self.modes, self.from_cache = tuning.choose(self, self.native, images)
        log.debug("sparse: engine %s, modes %s%s", self.engine, self.modes, " (cached)" if self.from_cache else "")
        return self.engine

    def __call__(self, image):
        image = np.asarray(image, np.float32)
        if image.ndim != 4 or image.shape[0] != 1:
            raise ValueError(f"sparse execution takes one image at a time, shape (1, H, W, C); got "
                             f"{tuple(image.shape)}")
        if tuple(image.shape[1:]) != self.input_shape:
            raise ValueError(f"the model takes images of shape {self.input_shape}; got {tuple(image.shape[1:])}")
        if self.engine == "auto":
            self.tune()
        if self.engine == "native":
            return self.native(image)
        return self.compiled(image).numpy()

    def compiled(self, image):
        """The TensorFlow program on one image of the right shape (a tensor)."""
        if self._concrete is None:
            # The concrete function skips tf.function's argument matching on every call (tens of microseconds
            # per image, which matters at batch 1).
            self._concrete = self.run.get_concrete_function()
        return self._concrete(tf.convert_to_tensor(image, tf.float32))


class SparseGatedModel(InferenceProgram):
    """`InferenceProgram` of a gated (FBS) model: refuses a model without `GatedConv2D` layers, since it would
    only be the folded dense path."""

    def __init__(self, model, jit_compile=None, engine="auto"):
        super().__init__(model, jit_compile, engine)
        if not self.gated:
            raise UnsupportedModel(f"model {model.name} has no gated (FBS) convolutions: nothing to skip")
