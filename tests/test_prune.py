"""Static pruning (`mayo_lite.prune`) against an independent NumPy reading of docs/design/pruning-algorithm.md, and the masked
convolution it writes into: masks, thresholds, the report, argument errors, fine-tuning that keeps pruned weights
at zero, and checkpoint round trips."""


import numpy as np
import pytest

import keras

from mayo_lite.layers import GatedConv2D, MaskConstraint, MaskedConv2D
from mayo_lite.prune import kernel_saliency, prunable_layers, prune_model, weight_density
from tests.reference import reference_prune, reference_ratio

SIZE = 8
PERCENTS = (0, 0.1, 0.3, 0.5, 0.9)


# ----------------------------------------------------------------------------------------------------------------
# Small models. Every masked convolution `X` that is followed by a batch norm names it `X.bn`.

def conv_bn(x, filters, kernel_size, name, strides=1):
    x = MaskedConv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name)(x)
    return keras.layers.ReLU(name=f"{name}.act")(keras.layers.BatchNormalization(name=f"{name}.bn")(x))


def sequential_model():
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        MaskedConv2D(4, 3, padding="same", use_bias=False, name="conv1"),
        keras.layers.BatchNormalization(name="conv1.bn"),
        MaskedConv2D(6, 3, strides=2, use_bias=False, name="conv2"),
        keras.layers.BatchNormalization(name="conv2.bn"),
        MaskedConv2D(5, 1, use_bias=False, name="conv3"),
        keras.layers.BatchNormalization(name="conv3.bn"),
    ], name="sequential")


def residual_model():
    """A 1×1 convolution and a shortcut convolution, as in a ResNet block, then a dense layer that is not pruned."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = conv_bn(inputs, 4, 3, "conv1")
    y = conv_bn(x, 3, 1, "b2a.conv1")
    y = conv_bn(y, 6, 3, "b2a.conv2")
    shortcut = conv_bn(x, 6, 1, "b2a.shortcut")
    x = keras.layers.Add(name="b2a.add")([y, shortcut])
    x = conv_bn(x, 5, 3, "b2b.conv1")
    outputs = keras.layers.Dense(3, name="fc")(keras.layers.GlobalAveragePooling2D(name="pool")(x))
    return keras.Model(inputs, outputs, name="residual")


def nested_model():
    inner_inputs = keras.Input((SIZE, SIZE, 4))
    inner = keras.Model(inner_inputs, conv_bn(conv_bn(inner_inputs, 5, 3, "inner1"), 4, 1, "inner2"), name="inner")
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inner(conv_bn(inputs, 4, 3, "outer1"))
    return keras.Model(inputs, conv_bn(x, 3, 3, "outer2"), name="nested")


def gated_model():
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        MaskedConv2D(4, 3, padding="same", name="conv1"),
        keras.layers.BatchNormalization(name="conv1.bn"),
        GatedConv2D(6, 3, density=0.5, use_mask=True, name="gated"),
        MaskedConv2D(5, 1, name="conv3"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(3, name="fc"),
    ], name="gated_model")


MODELS = {"sequential": sequential_model, "residual": residual_model, "nested": nested_model, "gated": gated_model}


@pytest.fixture(scope="module")
def models():
    return {name: build() for name, build in MODELS.items()}


def walk(model):
    for layer in model.layers:
        yield from walk(layer) if isinstance(layer, keras.Model) else [layer]


def find(model, name):
    return next((layer for layer in walk(model) if layer.name == name), None)


def masked(model):
    return [layer for layer in walk(model) if isinstance(layer, MaskedConv2D) or getattr(layer, "use_mask", False)]


def randomize(model, seed):
    """Random kernels and batch-norm scales (signed, so that saliencies take |γ|), masks of ones."""
    rng = np.random.default_rng(seed)
    for layer in walk(model):
        if layer in masked(model):
            layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32"))
            layer.mask.assign(np.ones(layer.mask.shape, "float32"))
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(rng.normal(size=layer.gamma.shape).astype("float32"))
            layer.beta.assign(rng.normal(size=layer.beta.shape).astype("float32"))


# ----------------------------------------------------------------------------------------------------------------
# What the reference (tests/reference.py) is given.

def kernels_of(layers):
    return [layer.kernel.numpy() * layer.mask.numpy() for layer in layers]


def gammas_of(model, layers):
    return [find(model, f"{layer.name}.bn").gamma.numpy() for layer in layers]


# ----------------------------------------------------------------------------------------------------------------
# Masks against the reference.

SETTINGS = [("weight", "max"), ("kernel", "max"), ("kernel", "l1"), ("kernel", "l2"), ("filter", "max"),
            ("channel", "max")]


# Channel saliency is not defined for a gated layer; that model's error is tested below.
CASES = [(model_name, granularity, saliency) for model_name in MODELS for granularity, saliency in SETTINGS
         if not (model_name == "gated" and granularity == "channel")]


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("model_name,granularity,saliency", CASES)
def test_masks_match_the_reference(models, model_name, granularity, saliency, scope):
    model = models[model_name]
    layers = masked(model)
    for seed, percent in enumerate(PERCENTS):
        randomize(model, seed)
        kernels = kernels_of(layers)
        gammas = gammas_of(model, layers) if granularity == "channel" else None
        expected, thresholds = reference_prune(kernels, percent, granularity, saliency, scope, gammas)

        report = prune_model(model, percent, granularity=granularity, saliency=saliency, scope=scope)

        assert list(report.layers) == [layer.name for layer in layers]
        for layer, kernel, mask, threshold in zip(layers, kernels, expected, thresholds):
            where = f"{model_name} {layer.name} {granularity}/{saliency}/{scope} percent={percent}"
            np.testing.assert_array_equal(layer.mask.numpy(), mask, err_msg=where)
            pruned_kernel = layer.kernel.numpy()
            assert np.all(pruned_kernel[mask == 0] == 0.0), where
            np.testing.assert_array_equal(pruned_kernel[mask == 1], kernel[mask == 1], err_msg=where)
            entry = report.layers[layer.name]
            assert (entry.total, entry.remaining) == (mask.size, int(mask.sum())), where
            assert entry.threshold == pytest.approx(threshold)
            assert weight_density(layer) == pytest.approx(mask.mean())
        assert report.ratio == pytest.approx(reference_ratio(expected))
        assert (report.total, report.pruned) == (sum(m.size for m in expected), sum(int(m.size - m.sum()) for m in
                                                                                     expected))
        assert report.threshold == (pytest.approx(thresholds[0]) if scope == "global" else None)
        if percent == 0:
            assert report.pruned == 0


def test_percent_prunes_about_that_fraction_of_weights(models):
    model = models["residual"]
    randomize(model, 7)
    report = prune_model(model, 0.3, granularity="weight")
    # No ties among random weights: exactly the int(total · percent) + 1 smallest (the threshold itself) go.
    assert report.pruned == int(report.total * 0.3) + 1


def test_channel_pruning_removes_the_batch_norm_channel(models):
    model = models["residual"]
    randomize(model, 3)
    prune_model(model, 0.5, granularity="channel")
    removed = 0
    for layer in masked(model):
        batch_norm = find(model, f"{layer.name}.bn")
        gone = ~layer.mask.numpy().reshape(-1, layer.filters).any(axis=0)
        removed += gone.sum()
        assert np.all(batch_norm.gamma.numpy()[gone] == 0.0) and np.all(batch_norm.beta.numpy()[gone] == 0.0)
        assert np.all(batch_norm.gamma.numpy()[~gone] != 0.0)
    assert removed > 0


def test_channel_pruning_of_a_gated_layer_raises_and_changes_nothing(models):
    model = models["gated"]
    randomize(model, 0)
    before = [layer.kernel.numpy().copy() for layer in masked(model)]
    with pytest.raises(ValueError, match="GatedConv2D"):
        prune_model(model, 0.5, granularity="channel")
    for layer, kernel in zip(masked(model), before):
        np.testing.assert_array_equal(layer.kernel.numpy(), kernel)
        np.testing.assert_array_equal(layer.mask.numpy(), np.ones(layer.mask.shape))


def test_channel_pruning_needs_the_following_batch_norm():
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), MaskedConv2D(4, 3, name="conv1")])
    with pytest.raises(ValueError, match=r"conv1\.bn"):
        prune_model(model, 0.5, granularity="channel")


def test_kernel_saliency():
    kernel = np.random.default_rng(0).normal(size=(3, 2, 4, 5))
    np.testing.assert_allclose(kernel_saliency(kernel), np.abs(kernel).max(axis=(0, 1)))
    np.testing.assert_allclose(kernel_saliency(kernel, "l1"), np.abs(kernel).sum(axis=(0, 1)))
    np.testing.assert_allclose(kernel_saliency(kernel, "l2"), np.sqrt((kernel ** 2).sum(axis=(0, 1))))
    assert kernel_saliency(keras.Variable(kernel.astype("float32"))).shape == (4, 5)


# ----------------------------------------------------------------------------------------------------------------
# Pruning again, and choosing layers.

def test_pruning_twice_composes(models):
    model = models["residual"]
    layers = masked(model)
    randomize(model, 11)
    prune_model(model, 0.3, granularity="weight")
    first = [layer.mask.numpy() for layer in layers]
    again = prune_model(model, 0.3, granularity="weight")
    assert again.pruned == sum(int(m.size - m.sum()) for m in first), "the same percent again changes nothing"
    for layer, mask in zip(layers, first):
        np.testing.assert_array_equal(layer.mask.numpy(), mask)

    expected, _ = reference_prune(kernels_of(layers), 0.5, "kernel", "l1")
    report = prune_model(model, 0.5, granularity="kernel", saliency="l1")
    for layer, old, new in zip(layers, first, expected):
        np.testing.assert_array_equal(layer.mask.numpy(), old * new)
        assert np.all(layer.mask.numpy() <= old), "pruning again only removes more"
        assert np.all(layer.kernel.numpy()[layer.mask.numpy() == 0] == 0.0)
    assert report.ratio == pytest.approx(reference_ratio([old * new for old, new in zip(first, expected)]))


def test_layer_patterns_select_layers(models):
    model = models["residual"]
    names = lambda layers: [layer.name for layer in layers]  # noqa: E731
    assert names(prunable_layers(model)) == ["conv1", "b2a.conv1", "b2a.conv2", "b2a.shortcut", "b2b.conv1"]
    assert names(prunable_layers(model, ["b2?.conv1"])) == ["b2a.conv1", "b2b.conv1"]
    assert names(prunable_layers(model, ["b2a.shortcut", "conv*"])) == ["conv1", "b2a.shortcut"]
    assert names(prunable_layers(model, "b2a.*")) == ["b2a.conv1", "b2a.conv2", "b2a.shortcut"]
    assert names(prunable_layers(models["nested"])) == ["outer1", "inner1", "inner2", "outer2"]
    assert names(prunable_layers(models["gated"])) == ["conv1", "gated", "conv3"]
    with pytest.raises(ValueError, match=r"`layers`.*'fc\*'"):
        prunable_layers(model, ["conv*", "fc*"])

    randomize(model, 5)
    selected = prunable_layers(model, ["b2?.conv1"])
    expected, _ = reference_prune(kernels_of(selected), 0.5)
    report = prune_model(model, 0.5, layers=["b2?.conv1"])
    assert list(report.layers) == ["b2a.conv1", "b2b.conv1"]
    for layer, mask in zip(selected, expected):
        np.testing.assert_array_equal(layer.mask.numpy(), mask)
    for layer in prunable_layers(model, ["conv1", "b2a.conv2", "b2a.shortcut"]):
        assert weight_density(layer) == 1.0


def test_report_text_is_the_reference_report(models):
    model = models["sequential"]
    randomize(model, 2)
    report = prune_model(model, 0.5)
    lines = report.text().splitlines()
    for index, (line, layer) in enumerate(zip(lines, masked(model))):
        assert line == (f"layer index: {index} ({layer.name})  total params: {layer.mask.numpy().size}  "
                        f"remaining params: {int(layer.mask.numpy().sum())}")
    assert lines[3] == (f"Total conv params: {report.total}, Pruned conv params: {report.pruned}, "
                        f"Pruned ratio: {report.ratio:.6f}")
    assert len(lines) == 4 and report.empty_layers == []

    randomize(model, 2)
    model.get_layer("conv3").kernel.assign(np.full(model.get_layer("conv3").kernel.shape, 1e-6, "float32"))
    emptied = prune_model(model, 0.5)
    assert emptied.empty_layers == ["conv3"]
    assert emptied.text().splitlines()[-1] == "Warning: layers left with no weights: conv3"


# ----------------------------------------------------------------------------------------------------------------
# Arguments.

@pytest.mark.parametrize("argument,value", [
    ("percent", 1.5), ("percent", 1.0), ("percent", -0.1), ("percent", True), ("percent", "0.3"),
    ("granularity", "vector"), ("saliency", "mean"), ("scope", "local"), ("layers", "nothing*"), ("layers", 3),
])
def test_bad_arguments_name_the_argument(models, argument, value):
    with pytest.raises(ValueError, match=f"argument `{argument}`") as error:
        prune_model(models["sequential"], **{argument: value})
    assert f"Received: {argument}=" in str(error.value)


def test_bad_percent_message_is_keras_style(models):
    with pytest.raises(ValueError) as error:
        prune_model(models["sequential"], percent=1.5)
    assert str(error.value) == ("Invalid value received for argument `percent`. Expected a float in [0, 1). "
                                "Received: percent=1.5")


def test_model_without_prunable_layers_raises():
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match="argument `model`"):
        prune_model(model)
    with pytest.raises(ValueError, match="argument `kernel`"):
        kernel_saliency(np.ones((3, 3)))
    with pytest.raises(ValueError, match="argument `layer`"):
        weight_density(model.layers[0])


# ----------------------------------------------------------------------------------------------------------------
# Fine-tuning keeps pruned weights at zero; checkpoints keep masks.

def data(seed=0, count=8):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, SIZE, SIZE, 3)).astype("float32"), rng.integers(0, 3, count)


def fine_tune(model, optimizer):
    """Two steps before pruning (so momentum and moments are non-zero), pruning half of every layer, three steps
    after."""
    x, y = data()
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    prune_model(model, 0.5, scope="layer")
    pruned = {layer.name: layer.kernel.numpy().copy() for layer in masked(model)}
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    model.fit(x[:4], y[:4], batch_size=4, epochs=1, verbose=0)
    return pruned


OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-4),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=1e-2),
}


@pytest.mark.parametrize("optimizer,build", [("sgd", residual_model), ("adam", residual_model),
                                             ("adamw", gated_model)])
def test_fine_tuning_keeps_pruned_weights_at_zero(optimizer, build):
    keras.utils.set_random_seed(0)
    model = build()
    pruned = fine_tune(model, OPTIMIZERS[optimizer]())
    for layer in masked(model):
        mask = layer.mask.numpy()
        kernel = layer.kernel.numpy()
        assert 0 < mask.sum() < mask.size
        assert np.all(kernel[mask == 0] == 0.0), layer.name
        assert not np.array_equal(kernel[mask == 1], pruned[layer.name][mask == 1]), "the kept weights train"


def test_without_the_constraint_pruned_weights_would_move():
    """The check above can fail: with the constraint removed, momentum moves pruned weights."""
    keras.utils.set_random_seed(0)
    model = gated_model()
    for layer in masked(model):
        layer.kernel.constraint = None
    fine_tune(model, keras.optimizers.Adam(0.01))
    assert any(np.any(layer.kernel.numpy()[layer.mask.numpy() == 0] != 0.0) for layer in masked(model))


def test_gated_layer_keeps_pruned_weights_at_zero_under_adam():
    keras.utils.set_random_seed(1)
    model = gated_model()
    gated = model.get_layer("gated")
    assert isinstance(gated.kernel.constraint, MaskConstraint)
    fine_tune(model, keras.optimizers.Adam(0.01))
    assert 0 < gated.mask.numpy().sum() < gated.mask.numpy().size
    assert np.all(gated.kernel.numpy()[gated.mask.numpy() == 0] == 0.0)


def test_save_load_and_set_weights_keep_masks_and_zeros(tmp_path):
    keras.utils.set_random_seed(2)
    model = residual_model()
    randomize(model, 4)
    prune_model(model, 0.5)
    x, _ = data(1, 2)
    expected = model.predict(x, verbose=0)

    path = tmp_path / "pruned.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for trained, copy in zip(masked(model), masked(loaded)):
        assert type(copy) is MaskedConv2D
        np.testing.assert_array_equal(copy.mask.numpy(), trained.mask.numpy())
        np.testing.assert_array_equal(copy.kernel.numpy(), trained.kernel.numpy())
        assert copy.kernel.constraint.mask is copy.mask
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)

    rebuilt = keras.Model.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    for trained, copy in zip(masked(model), masked(rebuilt)):
        np.testing.assert_array_equal(copy.mask.numpy(), trained.mask.numpy())
        np.testing.assert_array_equal(copy.get_weights()[0], trained.kernel.numpy())
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# The masked convolution itself.

@pytest.mark.parametrize("arguments", [
    dict(filters=5, kernel_size=3),
    dict(filters=4, kernel_size=(3, 1), strides=2, padding="same", activation="relu"),
    dict(filters=3, kernel_size=1, use_bias=False),
    dict(filters=6, kernel_size=3, dilation_rate=2, padding="same", use_bias=True),
])
def test_masked_convolution_with_ones_is_conv2d(arguments):
    x, _ = data(3, 2)
    dense = keras.layers.Conv2D(**arguments, bias_initializer="random_normal")
    expected = dense(x)
    layer = MaskedConv2D(**arguments)
    layer.build(x.shape)
    layer.set_weights(dense.get_weights() + [np.ones(layer.mask.shape, "float32")])
    np.testing.assert_array_equal(layer(x), expected)

    mask = np.random.default_rng(0).integers(0, 2, layer.mask.shape).astype("float32")
    layer.mask.assign(mask)
    dense.kernel.assign(dense.kernel.numpy() * mask)
    np.testing.assert_allclose(layer(x), dense(x), rtol=1e-5, atol=1e-6)


def test_masked_convolution_config_and_constraint():
    layer = MaskedConv2D(4, 3, strides=2, padding="same", kernel_constraint=keras.constraints.NonNeg(), name="masked")
    layer.build((None, SIZE, SIZE, 3))
    assert [w.name for w in layer.weights] == ["kernel", "bias", "mask"]
    assert not layer.mask.trainable and [w.name for w in layer.trainable_weights] == ["kernel", "bias"]
    config = layer.get_config()
    assert config["kernel_constraint"]["class_name"] == "NonNeg"
    copy = MaskedConv2D.from_config(config)
    assert copy.get_config() == config

    constraint = layer.kernel.constraint
    assert isinstance(constraint, MaskConstraint) and constraint.mask is layer.mask
    mask = np.random.default_rng(1).integers(0, 2, layer.mask.shape).astype("float32")
    layer.mask.assign(mask)
    w = np.random.default_rng(2).normal(size=layer.mask.shape).astype("float32")
    np.testing.assert_array_equal(constraint(keras.ops.convert_to_tensor(w)), np.maximum(w, 0) * mask)
