"""A channel-pruned network made really narrower (`mayo_lite.prune.narrow_model`): the same outputs as the masked
model (the independent reference: the pruned model itself, run by Keras), MACs of the narrower widths counted by
hand, nothing removed that still carries a signal or that a join needs at full width."""

import keras
import numpy as np
import pytest

from mayo_lite.config import Config
from mayo_lite.layers import LocalResponseNormalization
from mayo_lite.models.narrowing import kept_channels
from mayo_lite.net import model_cost
from mayo_lite.prune import add_masks, narrow_model, prune_model
from mayo_lite.session.session import Session

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def busy_norms(model, seed=0):
    """Batch norms that do something (Keras initialises them to the identity)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.gamma.assign(rng.normal(size=shape))
            layer.beta.assign(rng.normal(size=shape))
            layer.moving_mean.assign(rng.normal(size=shape) * 0.1)
            layer.moving_variance.assign(rng.uniform(0.5, 2, size=shape))


def slim_session():
    cfg = Config()
    cfg.load(str(ROOT / "configs/models/cifarnet_slim.yaml"))
    cfg.load(str(ROOT / "configs/datasets/fashion_mnist.yaml"))
    cfg.override("prune.percent=0.3")
    session = Session(cfg)
    busy_norms(session.model)
    return session


def assert_same_outputs(narrow, masked, shape):
    images = np.random.default_rng(1).random((4, *shape)).astype(np.float32)
    expected, got = np.asarray(masked(images)), np.asarray(narrow(images))
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())


def conv_macs(widths, input_channels=1):
    """M-CifarNet's convolution MACs on 28×28 images from its widths: conv0 valid (26×26), conv2 and conv5 stride
    2 (13×13, 7×7), 3×3 kernels, then the 1×1 logits on the pooled vector."""
    sizes = [26, 26, 13, 13, 13, 7, 7, 7]
    total, previous = 0, input_channels
    for size, width in zip(sizes, widths):
        total += size * size * 9 * previous * width
        previous = width
    return total + previous * 10


def test_a_channel_pruned_network_narrows_to_the_same_outputs():
    session = slim_session()
    prune_model(session.model, percent=0.4, granularity="channel", layers=["conv*"])
    gammas = {layer.name[:-3]: layer.gamma.numpy() for layer in session.model.layers if layer.name.endswith(".bn")}
    narrow = narrow_model(session.model)
    kept = kept_channels(session.model)
    # The channels kept are exactly those whose batch-norm scale survived, layer by layer.
    for name, indices in kept.items():
        np.testing.assert_array_equal(indices, np.flatnonzero(gammas[name] != 0))
    widths = [narrow.get_layer(f"conv{i}").filters for i in range(8)]
    assert widths == [int(np.count_nonzero(gammas[f"conv{i}"])) for i in range(8)]
    assert sum(widths) < sum(gamma.size for gamma in gammas.values())
    assert "Masked" not in " ".join(type(layer).__name__ for layer in narrow.layers)
    assert [layer.name for layer in narrow.layers] == [layer.name for layer in session.model.layers]
    assert_same_outputs(narrow, session.model, (28, 28, 1))

    # The narrow network's MACs are its widths' (input channels removed too), below what the masks alone count.
    cost = model_cost(narrow).total
    assert cost["macs"] == conv_macs(widths)
    assert cost["macs"] < model_cost(session.model).total["effective_macs"]


def test_filter_pruning_keeps_channels_whose_output_is_a_constant():
    """Filter pruning zeroes a kernel column but leaves the batch norm's beta: the channel outputs relu(beta), which
    the next layer needs, so nothing is removed."""
    session = slim_session()
    prune_model(session.model, percent=0.4, granularity="filter")
    assert kept_channels(session.model) == {}
    assert narrow_model(session.model) is None


def keras_chain():
    """A user's Sequential model: convolutions with and without batch norms, a depthwise convolution, pooling, then
    Flatten into Dense (the flattened positions of a removed channel go too)."""
    model = keras.Sequential([
        keras.Input((12, 12, 3)),
        keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="a"),
        keras.layers.BatchNormalization(name="a_bn"),
        keras.layers.ReLU(name="a_relu"),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw"),
        keras.layers.BatchNormalization(name="dw_bn"),
        keras.layers.Activation("relu", name="dw_relu"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Conv2D(6, 1, name="b"),
        keras.layers.BatchNormalization(name="b_bn"),
        keras.layers.Activation("tanh", name="b_tanh"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(5, name="logits"),
    ], name="chain")
    busy_norms(model)
    return model


def test_a_users_sequential_model_narrows_through_depthwise_and_flatten():
    masked = add_masks(keras_chain())
    prune_model(masked, percent=0.4, granularity="channel", scope="layer")
    gammas = {name: masked.get_layer(f"{name}_bn").gamma.numpy() for name in ("a", "b")}
    # The depthwise convolution's bias and its norm's offset light a's pruned channels: a constant the rest needs.
    assert set(kept_channels(masked)) == {"b"}
    lit = np.repeat(gammas["a"] == 0, 2)  # depthwise outputs 2c and 2c + 1 come from input c
    for variable in (masked.get_layer("dw").bias, masked.get_layer("dw_bn").beta, masked.get_layer("dw_bn").moving_mean):
        variable.assign(np.where(lit, 0, variable.numpy()))
    narrow = narrow_model(masked)
    widths = {name: narrow.get_layer(name).filters for name in ("a", "b")}
    assert widths == {name: int(np.count_nonzero(gamma)) for name, gamma in gammas.items()}
    assert widths["a"] < 8 and widths["b"] < 6
    assert narrow.get_layer("dw").kernel.shape == (3, 3, widths["a"], 2)
    assert narrow.get_layer("logits").kernel.shape == (6 * 6 * widths["b"], 5)
    assert all(type(layer).__module__.startswith("keras") for layer in narrow.layers)
    assert_same_outputs(narrow, masked, (12, 12, 3))
    # MACs by hand: a 3×3 on 12×12 from 3 inputs, the depthwise pair per kept input, b's 1×1 on 6×6, the dense.
    a, b = widths["a"], widths["b"]
    assert model_cost(narrow).total["macs"] == 144 * 9 * 3 * a + 144 * 9 * 2 * a + 36 * 2 * a * b + 36 * b * 5


def residual():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(6, 3, padding="same", name="inner")(inputs)
    x = keras.layers.BatchNormalization(name="inner.bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="outer")(x)
    x = keras.layers.BatchNormalization(name="outer.bn")(x)
    x = keras.layers.Add()([x, inputs])
    outputs = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs, name="residual")
    busy_norms(model)
    return model


def test_a_convolution_feeding_a_join_keeps_its_channels_and_the_others_narrow():
    masked = add_masks(residual())
    prune_model(masked, percent=0.4, granularity="channel", scope="layer")
    assert np.count_nonzero(masked.get_layer("outer.bn").gamma.numpy()) < 4  # pruned, and yet it cannot narrow
    kept = kept_channels(masked)
    assert set(kept) == {"inner"}
    narrow = narrow_model(masked)
    assert narrow.get_layer("inner").filters == len(kept["inner"]) < 6
    assert narrow.get_layer("outer").filters == 4
    assert_same_outputs(narrow, masked, (8, 8, 4))


@pytest.mark.parametrize("between", [lambda: LocalResponseNormalization(name="between"),
                                     lambda: keras.layers.Activation("sigmoid", name="between")])
def test_a_layer_that_mixes_channels_or_lights_a_zero_one_keeps_them(between):
    """Local response normalisation mixes neighbouring channels and sigmoid(0) = 0.5: what follows needs every one."""
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(6, 3, name="a")(inputs)
    x = keras.layers.BatchNormalization(name="a.bn")(x)
    x = between()(x)
    outputs = keras.layers.Conv2D(3, 1, name="b")(x)
    masked = add_masks(keras.Model(inputs, outputs))
    busy_norms(masked)
    prune_model(masked, percent=0.5, granularity="channel", layers=["a"])
    assert np.count_nonzero(masked.get_layer("a.bn").gamma.numpy()) < 6
    assert kept_channels(masked) == {}
    assert narrow_model(masked) is None


def test_a_keras_application_narrows_to_the_same_outputs():
    """MobileNetV2: an expansion narrows through ReLU(6), its depthwise convolution and that convolution's batch norm
    only where the norm keeps the removed channels zero; the projections that feed residual additions keep their
    widths."""
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=4)
    busy_norms(model)
    masked = add_masks(model)
    prune_model(masked, percent=0.3, granularity="channel", scope="layer")
    # The depthwise convolutions' batch norms still offset the pruned channels: a constant the projection needs.
    assert not any(name.endswith("_expand") for name in kept_channels(masked))
    for layer in masked.layers:
        if layer.name.endswith("_expand"):
            pruned = masked.get_layer(f"{layer.name}_BN").gamma.numpy() == 0
            norm = masked.get_layer(layer.name.replace("_expand", "_depthwise_BN"))
            for variable in (norm.beta, norm.moving_mean):
                variable.assign(np.where(pruned, 0, variable.numpy()))
    kept = kept_channels(masked)
    narrow = narrow_model(masked)
    assert "block_3_expand" in kept and "block_3_project" not in kept  # block 3's projection feeds block 4's add
    assert sum(name.endswith("_expand") for name in kept) == 16
    for name, indices in kept.items():
        assert narrow.get_layer(name).filters == len(indices)
    assert_same_outputs(narrow, masked, (32, 32, 3))
    assert model_cost(narrow).total["macs"] < 0.9 * model_cost(model).total["macs"]


def test_narrowing_refuses_what_is_not_a_keras_model_in_one_line():
    with pytest.raises(ValueError, match="narrow_model: expected a Keras model, got str"):
        narrow_model("model.keras")
