"""GatedConv2D (Feature Boosting and Suppression) against an independent NumPy reference of docs/design/fbs-semantics.md:
gamma, the active set, outputs, regularisers, moving thresholds, gradients, masks and serialisation."""

import inspect
import json
import math

import numpy as np
import pytest

import keras
import tensorflow as tf

from mayo_lite.layers import GatedConv2D, GlobalThreshold, update_global_threshold

BATCH, SIZE, C_IN, C_OUT = 3, 6, 4, 8


def make_inputs(seed=0, batch=BATCH, channels=C_IN):
    return np.random.default_rng(seed).normal(size=(batch, SIZE, SIZE, channels)).astype("float32")


def randomize(layer, seed=1):
    """Random weights and moving statistics, so that gammas differ clearly between channels and samples."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        if variable.name in ("threshold", "last_density", "mask"):
            continue
        if variable.name == "moving_variance":
            value = rng.uniform(0.5, 2.0, variable.shape)
        elif variable.name == "gate_bias":
            value = rng.uniform(0.5, 1.5, variable.shape)
        else:
            value = rng.normal(scale=0.5, size=variable.shape)
        variable.assign(value.astype("float32"))
    return layer


def built(layer, channels=C_IN, seed=1):
    layer.build((None, SIZE, SIZE, channels))
    return randomize(layer, seed)


# ----------------------------------------------------------------------------------------------------------------
# The NumPy reference: docs/design/fbs-semantics.md's formulas, written without looking at how the layer computes them.

def conv(x, kernel, stride, padding):
    kernel_h, kernel_w = kernel.shape[:2]
    _, height, width, _ = x.shape
    if padding == "same":
        out_h, out_w = -(-height // stride), -(-width // stride)
        pad_h = max((out_h - 1) * stride + kernel_h - height, 0)
        pad_w = max((out_w - 1) * stride + kernel_w - width, 0)
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    else:
        out_h, out_w = (height - kernel_h) // stride + 1, (width - kernel_w) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, i * stride:i * stride + kernel_h, j * stride:j * stride + kernel_w, :]
            out[:, i, j, :] = np.einsum("nabc,abcd->nd", patch, kernel)
    return out


REFERENCE_POOLS = {
    "avg": lambda x: x.mean(axis=(1, 2)),
    "max": lambda x: x.max(axis=(1, 2)),
    "l1": lambda x: np.abs(x).mean(axis=(1, 2)),
    "l2": lambda x: np.square(x).mean(axis=(1, 2)),
}


def relu(x):
    return np.maximum(x, 0.0)


def spatial(values):
    return values[:, None, None, :]


def predictor(weights, prefix, pooled, factor, activation):
    if factor:
        pooled = relu(pooled @ weights[f"{prefix}_hidden_kernel"] + weights[f"{prefix}_hidden_bias"])
    return activation(pooled @ weights[f"{prefix}_kernel"] + weights[f"{prefix}_bias"])


def kth_largest(gamma, k):
    return -np.sort(-gamma, axis=1)[:, k - 1]


def reference_active(gamma, density, threshold=None):
    channels = gamma.shape[1]
    k = math.ceil(channels * density)
    if k == channels:
        return np.ones_like(gamma)
    if threshold is None:
        threshold = kth_largest(gamma, k + 1)[:, None]
    return (gamma > threshold).astype(np.float64)


def mixture(vector):
    return vector.var() / (vector.mean() + 1e-3) ** 2


REFERENCE_REGULARIZERS = {
    "l1": lambda g: np.abs(g).sum(),
    "l2": lambda g: np.square(g).sum(),
    "moe": lambda g: mixture(g.sum(axis=0)),
    "moi": lambda g: mixture(g.sum(axis=1)),
}


def reference(layer, x, training, threshold=None):
    """What docs/design/fbs-semantics.md says `layer(x, training)` computes, from the layer's current weights."""
    config = layer.get_config()
    weights = {v.name: np.asarray(v, dtype=np.float64) for v in layer.weights}
    x = x.astype(np.float64)
    kernel = weights["kernel"] * weights.get("mask", 1.0)
    y = conv(x, kernel, config["strides"][0], config["padding"])
    result = {}
    if config["norm"] == "channel":
        mean, variance = y.mean(axis=(1, 2), keepdims=True), y.var(axis=(1, 2), keepdims=True)
    elif training:
        mean, variance = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))
        momentum = config["momentum"]
        result["moving_mean"] = weights["moving_mean"] * momentum + mean * (1 - momentum)
        result["moving_variance"] = weights["moving_variance"] * momentum + variance * (1 - momentum)
    else:
        mean, variance = weights["moving_mean"], weights["moving_variance"]
    n = (y - mean) / np.sqrt(variance + config["epsilon"])

    pooled = REFERENCE_POOLS[config["pool"]](x)
    gamma = predictor(weights, "gate", pooled, config["factor"], relu)
    if config["enable"]:
        active = reference_active(gamma, config["density"], threshold)
    else:
        active = np.ones_like(gamma)
    policy = config["policy"]
    losses = {}
    if policy == "parametric":
        if config["parametric_beta"]:
            beta = predictor(weights, "beta", pooled, config["factor"], lambda v: v)
        else:
            beta = weights.get("beta", np.zeros(C_OUT))[None, :] * np.ones_like(gamma)
        if not config["enable"]:
            out = relu(n * spatial(gamma) + spatial(beta))
        elif config["add_beta_first"]:
            out = relu((n + spatial(active * beta)) * spatial(active * gamma))
        else:
            out = relu(n * spatial(active * gamma) + spatial(active * beta))
    else:
        normalized = n * weights.get("gamma", 1.0) + weights.get("beta", 0.0)
        activated = relu(normalized)
        if policy == "squeeze":
            out = spatial(active * gamma) * activated
        else:
            out = spatial(active) * activated
            target = REFERENCE_POOLS[config["pool"]](activated)
            losses["mse"] = config["regularizer"]["mse"] * np.mean(np.square(gamma - target))
    for name, weight in config["regularizer"].items():
        if name in REFERENCE_REGULARIZERS and weight > 0:
            losses[name] = weight * REFERENCE_REGULARIZERS[name](gamma * active)
    result.update(out=out, gamma=gamma, active=active, losses=losses)
    return result


# ----------------------------------------------------------------------------------------------------------------

CASES = {
    "parametric": dict(density=0.5),
    "max-factor-beta-first": dict(density=0.3, pool="max", factor=2, add_beta_first=True, momentum=0.9),
    "l1-parametric-beta-valid-stride": dict(density=0.5, pool="l1", parametric_beta=True, padding="valid",
                                            strides=2, factor=3),
    "l2-channel-norm-no-center": dict(density=0.25, pool="l2", norm="channel", center=False),
    "dense": dict(density=1.0, regularizer={"l1": 0.01}),
    "disabled": dict(density=0.5, enable=False, regularizer={"l2": 0.1}),
    "masked": dict(density=0.5, use_mask=True),
    "squeeze": dict(density=0.5, policy="squeeze", regularizer={"moe": 0.1}),
    "squeeze-no-affine": dict(density=0.375, policy="squeeze", scale=False, center=False),
    "naive": dict(density=0.5, policy="naive", regularizer={"mse": 0.5}),
}


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_the_reference(case, training):
    layer = built(GatedConv2D(C_OUT, 3, **CASES[case]))
    if layer.use_mask:
        layer.mask.assign(np.random.default_rng(5).integers(0, 2, layer.mask.shape).astype("float32"))
    x = make_inputs()
    expected = reference(layer, x, training)

    gamma, active = layer.compute_gate(x)
    outputs = np.asarray(layer(x, training=training))

    np.testing.assert_allclose(gamma, expected["gamma"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(active, expected["active"])
    kept = math.ceil(C_OUT * layer.density) if layer.enable else C_OUT
    assert np.all(np.sum(active, axis=1) <= kept)
    np.testing.assert_allclose(outputs, expected["out"], rtol=1e-4, atol=1e-5)
    inactive = np.asarray(active) == 0
    assert np.all(outputs.transpose(0, 3, 1, 2)[inactive] == 0.0), "switched-off channels must be exactly zero"
    np.testing.assert_allclose(float(layer.last_density), np.mean(expected["active"]), rtol=1e-6)
    np.testing.assert_allclose(sum(float(loss) for loss in layer.losses), sum(expected["losses"].values()),
                               rtol=1e-4)
    for name in ("moving_mean", "moving_variance"):
        if name in expected:
            np.testing.assert_allclose(getattr(layer, name), expected[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["l1", "l2", "moe", "moi"])
def test_each_regularizer_matches_the_reference(name):
    layer = built(GatedConv2D(C_OUT, 3, density=0.5, regularizer={name: 0.3, "l1" if name != "l1" else "l2": 0}))
    x = make_inputs()
    expected = reference(layer, x, training=False)["losses"]
    layer(x)
    assert len(layer.losses) == 1, "a weight of 0 is ignored"
    np.testing.assert_allclose(float(layer.losses[0]), expected[name], rtol=1e-4)


def test_ties_follow_gamma_greater_than_threshold():
    layer = GatedConv2D(C_OUT, 1, density=0.375)
    layer.build((None, SIZE, SIZE, C_IN))
    layer.gate_kernel.assign(np.zeros((C_IN, C_OUT), "float32"))
    layer.gate_bias.assign(np.array([3, 3, 2, 2, 2, 1, 0, 0], "float32"))
    _, active = layer.compute_gate(make_inputs())
    # k = 3, and the 4th largest is 2: the three channels tied at 2 are all off, leaving fewer than k.
    np.testing.assert_array_equal(active, np.tile([1, 1, 0, 0, 0, 0, 0, 0], (BATCH, 1)))
    layer_k2 = GatedConv2D(C_OUT, 1, density=0.25)
    layer_k2.build((None, SIZE, SIZE, C_IN))
    layer_k2.gate_kernel.assign(np.zeros((C_IN, C_OUT), "float32"))
    layer_k2.gate_bias.assign(np.array([3, 3, 2, 2, 2, 1, 0, 0], "float32"))
    np.testing.assert_array_equal(layer_k2.compute_gate(make_inputs())[1], np.tile([1, 1, 0, 0, 0, 0, 0, 0], (BATCH, 1)))


def test_the_channel_count_is_not_fooled_by_floating_point():
    layer = built(GatedConv2D(10, 1, density=0.7))  # 10 · 0.7 is 7.000000000000001
    _, active = layer.compute_gate(make_inputs())
    np.testing.assert_array_equal(np.sum(active, axis=1), [7, 7, 7])


def test_local_threshold_moves_only_while_training():
    layer = built(GatedConv2D(C_OUT, 3, density=0.5, threshold="local", decay=0.9))
    assert float(layer.threshold_variable) == pytest.approx(-0.1)
    assert not layer.threshold_variable.trainable
    x = make_inputs()
    layer.threshold_variable.assign(1.0)

    expected = reference(layer, x, training=False, threshold=1.0)
    outputs = layer(x, training=False)
    assert float(layer.threshold_variable) == 1.0
    np.testing.assert_array_equal(layer.compute_gate(x)[1], expected["active"])
    np.testing.assert_allclose(outputs, expected["out"], rtol=1e-4, atol=1e-5)
    assert 0 < np.mean(expected["active"]) < 1

    expected = reference(layer, x, training=True, threshold=1.0)
    outputs = layer(x, training=True)
    np.testing.assert_allclose(outputs, expected["out"], rtol=1e-4, atol=1e-5)  # chosen with the old threshold
    per_sample = kth_largest(expected["gamma"], 5)
    np.testing.assert_allclose(float(layer.threshold_variable), 0.9 * 1.0 + 0.1 * per_sample.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(layer.last_density), np.mean(expected["active"]))


def global_model(shared, density=0.5):
    inputs = keras.Input((SIZE, SIZE, C_IN))
    first = GatedConv2D(C_OUT, 3, density=density, threshold="global", global_threshold=shared, name="first")
    second = GatedConv2D(C_OUT, 3, density=density, threshold="global", global_threshold=shared, name="second")
    disabled = GatedConv2D(C_OUT, 3, density=density, threshold="global", global_threshold=shared,
                           enable=False, name="disabled")
    outputs = disabled(second(first(inputs)))
    model = keras.Model(inputs, outputs)
    for seed, layer in enumerate((first, second, disabled)):
        randomize(layer, seed + 1)
    return model, first, second, disabled


def test_global_threshold_is_shared_and_follows_all_enabled_gammas():
    shared = GlobalThreshold(decay=0.8)
    model, first, second, disabled = global_model(shared)
    x = make_inputs()
    model(x, training=False)
    with pytest.raises(ValueError, match="no gamma recorded"):
        update_global_threshold(model)

    expected_first = reference(first, x, training=True, threshold=-0.1)
    expected_second = reference(second, expected_first["out"].astype("float32"), training=True, threshold=-0.1)
    model(x, training=True)
    assert float(shared.threshold_variable) == pytest.approx(-0.1), "moves only in update_global_threshold"
    update_global_threshold(model)
    gammas = np.concatenate([expected_first["gamma"], expected_second["gamma"]], axis=1)  # not the disabled one
    per_sample = kth_largest(gammas, 8 + 1)  # k = ceil(16 · 0.5)
    moved = 0.8 * -0.1 + 0.2 * per_sample.mean()
    np.testing.assert_allclose(float(shared.threshold_variable), moved, rtol=1e-5)

    # Inside a traced step, as the training loop calls it; the gammas are the same, so is the per-sample threshold.
    @tf.function
    def step(images):
        model(images, training=True)
        update_global_threshold(model)

    step(x)
    moved = 0.8 * moved + 0.2 * per_sample.mean()
    np.testing.assert_allclose(float(shared.threshold_variable), moved, rtol=1e-5)

    model(x, training=True)
    update_global_threshold([first, second], density=0.25)
    moved = 0.8 * moved + 0.2 * kth_largest(gammas, 4 + 1).mean()
    np.testing.assert_allclose(float(shared.threshold_variable), moved, rtol=1e-5)

    _, active = first.compute_gate(x)
    np.testing.assert_array_equal(active, (expected_first["gamma"] > moved).astype(float))
    np.testing.assert_array_equal(disabled.compute_gate(make_inputs(channels=C_OUT))[1], np.ones((BATCH, C_OUT)))


@pytest.mark.parametrize("policy", ["parametric", "squeeze"])
def test_inactive_channels_pass_no_gradient_to_their_kernel(policy):
    layer = built(GatedConv2D(C_OUT, 3, density=0.5, policy=policy))
    if layer.gamma is not None:  # an unscaled batch norm, so that no active channel is all below the ReLU
        layer.gamma.assign(np.ones(C_OUT, "float32"))
        layer.beta.assign(np.zeros(C_OUT, "float32"))
    x = make_inputs(batch=1)
    weights = np.random.default_rng(2).normal(size=(1, SIZE, SIZE, C_OUT)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) * weights)
    kernel_gradient, gate_gradient = (np.asarray(g) for g in tape.gradient(loss, [layer.kernel, layer.gate_kernel]))
    active = np.asarray(layer.compute_gate(x)[1])[0].astype(bool)
    assert 0 < active.sum() < C_OUT
    assert np.all(kernel_gradient[..., ~active] == 0.0)
    assert np.all(np.any(kernel_gradient[..., active] != 0.0, axis=(0, 1, 2)))
    assert np.all(np.any(gate_gradient[:, active] != 0.0, axis=0)), "the predictor learns through gamma"


def test_switched_off_channels_are_zero_whatever_the_activation():
    layer = GatedConv2D(C_OUT, 3, density=0.5, activation="sigmoid")
    x = make_inputs()
    _, active = layer.compute_gate(x)  # builds the layer
    outputs = np.asarray(layer(x)).transpose(0, 3, 1, 2)
    assert np.all(outputs[np.asarray(active) == 0] == 0.0)
    assert np.all(outputs[np.asarray(active) == 1] > 0.0)


def test_weights_and_their_initial_values():
    layer = GatedConv2D(C_OUT, 3, factor=3, parametric_beta=True, trainable_gate=False, use_mask=True)
    layer.build((None, SIZE, SIZE, C_IN))
    shapes = {v.name: tuple(v.shape) for v in layer.weights}
    assert shapes["gate_hidden_kernel"] == (C_IN, 3) and shapes["gate_kernel"] == (3, C_OUT)
    assert shapes["beta_hidden_kernel"] == (C_IN, 3) and shapes["beta_kernel"] == (3, C_OUT)
    assert shapes["mask"] == shapes["kernel"] == (3, 3, C_IN, C_OUT)
    assert "beta" not in shapes and "gamma" not in shapes
    np.testing.assert_array_equal(layer.gate_bias, np.ones(C_OUT))
    np.testing.assert_array_equal(layer.gate_hidden_bias, np.ones(3))
    np.testing.assert_array_equal(layer.beta_bias, np.zeros(C_OUT))
    np.testing.assert_array_equal(layer.mask, np.ones((3, 3, C_IN, C_OUT)))
    trainable = {v.name for v in layer.trainable_weights}
    assert trainable == {"kernel"}, "trainable_gate=False freezes the predictors; mask and statistics never train"

    layer = GatedConv2D(C_OUT, 3)
    layer.build((None, SIZE, SIZE, C_IN))
    np.testing.assert_allclose(layer.beta, np.full(C_OUT, 0.1))
    assert np.std(layer.gate_kernel) < 0.1
    assert {v.name for v in layer.trainable_weights} == {"kernel", "beta", "gate_kernel", "gate_bias"}


def test_last_density_is_assigned_inside_tf_function():
    layer = built(GatedConv2D(C_OUT, 3, density=0.5, threshold="local"))
    layer.threshold_variable.assign(1.0)
    x = make_inputs()

    @tf.function
    def density(images):
        layer(images, training=False)
        return tf.convert_to_tensor(layer.last_density)

    expected = np.mean(reference(layer, x, training=False, threshold=1.0)["active"])
    assert 0 < expected < 1
    np.testing.assert_allclose(density(x), expected, rtol=1e-6)


@pytest.mark.parametrize("arguments, argument, message", [
    (dict(density=1.5), "density", "Expected a float in (0, 1]. Received: density=1.5"),
    (dict(density=0), "density", "Received: density=0"),
    (dict(policy="gamma"), "policy", "Received: policy='gamma'"),
    (dict(pool="mean"), "pool", "Received: pool='mean'"),
    (dict(threshold="moving"), "threshold", "threshold='moving'"),
    (dict(granularity="pixel"), "granularity", "granularity='pixel'"),
    (dict(granularity="vector"), "granularity", "not supported"),
    (dict(norm="layer"), "norm", "norm='layer'"),
    (dict(scale=False), "scale", "policy='parametric'"),
    (dict(policy="naive"), "regularizer", "mse"),
    (dict(policy="naive", regularizer={"mse": 0}), "regularizer", "mse"),
    (dict(regularizer={"mse": 1.0}), "regularizer", "policy='naive'"),
    (dict(regularizer={"l3": 1.0}), "regularizer", "l3"),
    (dict(regularizer=["l1"]), "regularizer", "a dict"),
    (dict(factor=-1), "factor", "factor=-1"),
    (dict(threshold="global"), "global_threshold", "GlobalThreshold"),
    (dict(global_threshold=GlobalThreshold()), "global_threshold", "threshold='global'"),
    (dict(policy="squeeze", add_beta_first=True), "add_beta_first", "parametric"),
    (dict(parametric_beta=True, center=False), "parametric_beta", "center"),
    (dict(padding="causal"), "padding", "padding='causal'"),
])
def test_bad_arguments_name_the_argument(arguments, argument, message):
    with pytest.raises(ValueError, match=f"argument `{argument}`") as error:
        GatedConv2D(C_OUT, 3, **arguments)
    assert message in str(error.value)


def test_errors_name_the_layer():
    with pytest.raises(ValueError, match="Layer 'conv3': Invalid value received for argument `density`"):
        GatedConv2D(C_OUT, 3, density=2, name="conv3")
    with pytest.raises(ValueError, match="argument `decay`"):
        GlobalThreshold(decay=1.5)


def test_config_round_trip_reproduces_the_layer():
    layer = built(GatedConv2D(C_OUT, (3, 3), strides=2, padding="valid", density=0.3, pool="l2", factor=2,
                              regularizer={"moi": 0.2}, parametric_beta=True, add_beta_first=True, momentum=0.9,
                              epsilon=1e-2, kernel_regularizer="l2", use_mask=True, name="gated"))
    config = layer.get_config()
    parameters = set(inspect.signature(GatedConv2D.__init__).parameters) - {"self", "kwargs"}
    assert parameters <= set(config)
    json.dumps(config)
    clone = GatedConv2D.from_config(config)
    clone.build((None, SIZE, SIZE, C_IN))
    clone.set_weights(layer.get_weights())
    x = make_inputs()
    np.testing.assert_allclose(clone(x), layer(x), rtol=1e-6)
    assert clone.get_config() == config

    shared = GlobalThreshold(decay=0.5, name="shared")
    global_layer = GatedConv2D(C_OUT, 3, threshold="global", global_threshold=shared)
    copy = GatedConv2D.from_config(global_layer.get_config())
    assert copy.global_threshold is not shared and copy.global_threshold.decay == 0.5


def test_keras_file_round_trip_keeps_weights_and_the_shared_threshold(tmp_path):
    shared = GlobalThreshold(decay=0.5)
    model, first, second, _ = global_model(shared)
    inputs = model.input
    local = GatedConv2D(C_OUT, 3, density=0.5, threshold="local", policy="squeeze", use_mask=True, name="local")
    model = keras.Model(inputs, local(model.output))
    randomize(local)
    local.mask.assign(np.random.default_rng(3).integers(0, 2, local.mask.shape).astype("float32"))
    shared.threshold_variable.assign(0.7)
    local.threshold_variable.assign(0.9)

    path = tmp_path / "gated.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = make_inputs()
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)
    loaded_first, loaded_second = loaded.get_layer("first"), loaded.get_layer("second")
    assert loaded_first.global_threshold is loaded_second.global_threshold
    assert float(loaded_first.global_threshold.threshold_variable) == pytest.approx(0.7)
    assert float(loaded.get_layer("local").threshold_variable) == pytest.approx(0.9)
    np.testing.assert_array_equal(loaded.get_layer("local").mask, local.mask)
