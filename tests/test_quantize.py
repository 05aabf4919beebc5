"""Mayo's quantizers against NumPy transcriptions of Mayo's formulas (mayo/override/quantize/*.py, written here
independently of the package), their straight-through gradients, their updates, and quantization-aware training of
a Keras model: fit, `.keras` round trip, stripping, and pruned zeros kept."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mayo_lite import quantize
from mayo_lite.errors import ArgumentError
from mayo_lite.prune import add_masks

RNG = np.random.default_rng(0)
VALUES = (RNG.standard_normal((40, 25)) * 1.5).astype(np.float32)


def np_fixed(x, point, width):
    shift = 2.0 ** (width - point)
    return np.clip(np.round(x * shift), -2 ** (width - 1), 2 ** (width - 1) - 1) / shift


def np_overflow(x, point, width):
    scaled = np.round(x * 2.0 ** (width - point))
    scaled = scaled[scaled != 0]
    return np.mean((scaled < -2 ** (width - 1)) | (scaled > 2 ** (width - 1) - 1))


def np_minifloat(x, bias, exponent_width, mantissa_width, keep_mantissa=True):
    """Mayo's FloatingPointQuantizer._decompose, _transform and _represent, for NumPy arrays."""
    smallest = 2.0 ** (-bias) / 2
    sign = (x > smallest).astype(int) - (x < -smallest).astype(int)
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.floor(np.log2(np.abs(x)))
        mantissa = np.abs(x) / 2.0 ** exponent
    exponent = np.clip(exponent, -bias, 2 ** exponent_width - 1 - bias)
    mantissa = np.round(mantissa * 2 ** mantissa_width) / 2 ** mantissa_width
    carry = mantissa >= 2
    mantissa, exponent = np.where(carry, mantissa / 2, mantissa), np.where(carry, exponent + 1, exponent)
    value = sign * 2.0 ** exponent * (mantissa if keep_mantissa else 1)
    return np.where(sign == 0, 0.0, value)


def gradient(quantizer, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(quantizer(x) * 3.0)
    return tape.gradient(y, x).numpy()


def test_fixed_point_is_mayos_formula_and_its_gradient_passes_inside_the_range():
    quantizer = quantize.FixedPointQuantizer(width=8, point=2)
    np.testing.assert_array_equal(quantizer(VALUES).numpy(), np_fixed(VALUES, 2, 8))
    # the example: clip(round(x · 2^6), −128, 127) / 2^6
    assert quantizer(np.array([0.3, 5.0, -5.0], np.float32)).numpy().tolist() == [19 / 64, 127 / 64, -2.0]
    grad = gradient(quantizer, VALUES)
    inside = (VALUES > -2) & (VALUES < 127 / 64)
    assert np.all(grad[inside] == 3.0) and np.all(grad[np.abs(VALUES) > 2.1] == 0.0)


def test_dynamic_fixed_point_picks_the_point_mayos_brute_force_picks():
    for rate in (0.0, 0.01, 0.1):
        quantizer = quantize.DGQuantizer(width=6, overflow_rate=rate)
        quantizer(VALUES)
        quantizer.update(VALUES)
        expected = next(p for p in range(-6, 7) if np_overflow(VALUES, p, 6) <= rate)
        assert quantizer.describe()["point"] == expected
        np.testing.assert_array_equal(quantizer(VALUES).numpy(), np_fixed(VALUES, expected, 6))


def test_courbariaux_moves_one_step_from_point_one():
    quantizer = quantize.CourbariauxQuantizer(width=8, overflow_rate=0.0)
    quantizer(VALUES)
    quantizer.update(VALUES)  # |x| reaches 2^2 > 2^0: point 1 overflows, one step down
    assert np_overflow(VALUES, 1, 8) > 0 and quantizer.describe()["point"] == 0
    small = VALUES / 100
    quantizer.update(small)  # nothing overflows at point 1, twice the rate is within it: one step up
    assert quantizer.describe()["point"] == 2


@pytest.mark.parametrize("width, bias, mantissa", [(8, 2, 2), (6, 4, 3), (5, 1, 0)])
def test_minifloat_is_mayos_decomposition(width, bias, mantissa):
    quantizer = quantize.FloatingPointQuantizer(width=width, exponent_bias=bias, mantissa_width=mantissa)
    values = np.concatenate([VALUES.ravel(), [0.0, 1e-6, 100.0, -3.0]]).astype(np.float32)
    np.testing.assert_allclose(quantizer(values).numpy(), np_minifloat(values, bias, width - mantissa, mantissa),
                               rtol=1e-6)
    assert np.all(gradient(quantizer, values) == 3.0)  # straight-through (Mayo's stop_gradient form)


def test_shift_update_sets_the_bias_so_the_largest_value_fits():
    quantizer = quantize.ShiftQuantizer(width=4, exponent_bias=2, overflow_rate=0.0)
    quantizer(VALUES)
    quantizer.update(VALUES)
    top = next(e for e in range(-16, 16) if np.mean(np.abs(VALUES) > 2.0 ** (e + 1)) <= 0)
    assert quantizer.describe()["exponent_bias"] == 2 ** 4 - 1 - top
    out = quantizer(VALUES).numpy()
    np.testing.assert_allclose(out, np_minifloat(VALUES, 2 ** 4 - 1 - top, 4, 0, keep_mantissa=False))
    nonzero = np.abs(out[out != 0])
    assert np.allclose(np.log2(nonzero), np.round(np.log2(nonzero)))  # powers of two


def test_log_quantizer_gives_signed_powers_of_two_and_keeps_zeros():
    quantizer = quantize.LogQuantizer(width=6, overflow_rate=0.0)
    values = np.concatenate([VALUES.ravel(), [0.0]]).astype(np.float32)
    quantizer(values)
    quantizer.update(values)
    out = quantizer(values).numpy()
    point = quantizer.describe()["point"]
    expected = np.where(values == 0, 0, np.sign(values) * 2.0 ** np_fixed(np.log2(np.abs(values) + (values == 0)),
                                                                          point, 6))
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_ternary_scales_by_a_trained_factor_per_tensor_or_channel():
    for cls, shape in ((quantize.TernaryQuantizer, ()), (quantize.ChannelTernaryQuantizer, (25,))):
        quantizer = cls(base=1)
        out = quantizer(VALUES).numpy()
        np.testing.assert_array_equal(out, np.sign(VALUES) * 2.0)
        assert tuple(quantizer.scale.shape) == shape
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(quantizer(VALUES))
        # d/dscale of Σ sign(x) · 2 · scale
        np.testing.assert_allclose(np.sum(tape.gradient(y, quantizer.scale.value)), 2 * np.sum(np.sign(VALUES)),
                                   rtol=1e-5)


def test_incremental_quantizes_a_growing_fraction_by_smallest_error():
    inner = quantize.FixedPointQuantizer(width=4, point=2)
    quantizer = quantize.IncrementalQuantizer(quantizer=inner, interval=0.25)
    np.testing.assert_array_equal(quantizer(VALUES).numpy(), VALUES)  # nothing quantized yet
    error = np.abs(VALUES - np_fixed(VALUES, 2, 4))
    fractions = []
    for _ in range(4):
        quantizer.update(VALUES)
        mask = quantizer.mask.numpy() > 0
        fractions.append(mask.mean())
        # the quantized ones are those of smallest error
        assert error[mask].max() <= error[~mask].min() if (~mask).any() else True
    assert fractions[0] == pytest.approx(0.25, abs=0.02) and fractions[1] == pytest.approx(0.5, abs=0.02)
    assert fractions[-1] == 1.0
    np.testing.assert_array_equal(quantizer(VALUES).numpy(), np_fixed(VALUES, 2, 4))


def test_mixed_labels_channels_and_recentralizer_centres_each_sign():
    mixed = quantize.MixedQuantizer(quantizers={"low": quantize.FixedPointQuantizer(width=2, point=1),
                                                "high": quantize.FixedPointQuantizer(width=8, point=3)},
                                    interval=0.4)
    mixed(VALUES)
    mixed.update(VALUES)
    mixed.update(VALUES)
    labels = mixed.labels.numpy()
    assert (labels == 1).sum() == 10 and (labels == 2).sum() == 10
    out = mixed(VALUES).numpy()
    np.testing.assert_array_equal(out[:, labels == 1], np_fixed(VALUES[:, labels == 1], 1, 2))
    np.testing.assert_array_equal(out[:, labels == 0], VALUES[:, labels == 0])
    pruned = VALUES * (np.abs(VALUES) > 0.5)
    centred = quantize.Recentralizer(quantizer=quantize.FixedPointQuantizer(width=4, point=1))
    centred(pruned)
    centred.update(pruned)
    high, low = pruned[pruned > 0].mean(), pruned[pruned < 0].mean()
    mean = np.where(pruned > 0, high, low)
    expected = np.where(pruned == 0, 0, np_fixed(pruned - mean, 1, 4) + mean)
    np.testing.assert_allclose(centred(pruned).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("cls, arguments, argument", [
    (quantize.FixedPointQuantizer, {"width": 0, "point": 0}, "width"),
    (quantize.DGQuantizer, {"width": 8, "overflow_rate": -0.1}, "overflow_rate"),
    (quantize.TernaryQuantizer, {"base": -1}, "base"),
    (quantize.FloatingPointQuantizer, {"width": 4, "exponent_bias": 1, "mantissa_width": 5}, "mantissa_width"),
])
def test_bad_arguments_name_the_argument(cls, arguments, argument):
    with pytest.raises(ArgumentError, match=f"argument `{argument}`"):
        cls(**arguments)


def small_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def test_quantize_model_trains_saves_loads_and_strips(tmp_path):
    keras.utils.set_random_seed(0)
    model = small_model()
    qat = quantize.quantize_model(model, weights=quantize.DGQuantizer(width=8, overflow_rate=0.0),
                                  biases=quantize.FixedPointQuantizer(width=8, point=4),
                                  activations=quantize.FixedPointQuantizer(width=8, point=4))
    images = RNG.standard_normal((64, 8, 8, 3)).astype(np.float32)
    labels = RNG.integers(0, 4, 64)
    # the copy starts from the model's weights
    np.testing.assert_array_equal(qat.get_layer("conv").kernel.numpy(), model.get_layer("conv").kernel.numpy())
    qat.compile("sgd", "sparse_categorical_crossentropy")
    before = qat.get_layer("conv").kernel.numpy().copy()
    qat.fit(images, labels, epochs=2, batch_size=16, verbose=0, callbacks=[quantize.QuantizerUpdate()])
    assert not np.array_equal(before, qat.get_layer("conv").kernel.numpy())  # straight-through gradients train it
    conv = qat.get_layer("conv")
    kernel = conv.kernel.numpy()
    point = next(p for p in range(-8, 9) if np_overflow(kernel, p, 8) <= 0)
    point_after_update = conv.kernel_quantizer.describe()["point"]
    assert point_after_update == point  # updated from the kernel at the last epoch's end
    activation = qat.get_layer("conv.quantize")
    assert activation.observed is not None
    outputs = qat(images).numpy()
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(images).numpy(), outputs)
    assert loaded.get_layer("conv").kernel_quantizer.describe()["point"] == point_after_update
    plain = quantize.strip_quantizers(qat)
    assert {type(layer).__name__ for layer in plain.layers} >= {"Conv2D", "DepthwiseConv2D", "Dense"}
    np.testing.assert_allclose(plain(images).numpy(), outputs, atol=1e-6)
    grid = plain.get_layer("conv").kernel.numpy() * 2.0 ** (8 - point_after_update)
    np.testing.assert_array_equal(grid, np.round(grid))  # the stripped kernel is on the fixed-point grid


def test_a_pruned_and_quantized_model_keeps_its_zeros():
    keras.utils.set_random_seed(1)
    masked = add_masks(small_model())
    conv = masked.get_layer("conv")
    mask = (RNG.random(conv.kernel.shape) > 0.5).astype(np.float32)
    conv.mask.assign(mask)
    conv.kernel.assign(conv.kernel.numpy() * mask)
    qat = quantize.quantize_model(masked, weights=quantize.ShiftQuantizer(width=4, exponent_bias=2,
                                                                          overflow_rate=0.0))
    np.testing.assert_array_equal(qat.get_layer("conv").mask.numpy(), mask)
    qat.compile("adam", "sparse_categorical_crossentropy")
    images = RNG.standard_normal((32, 8, 8, 3)).astype(np.float32)
    qat.fit(images, RNG.integers(0, 4, 32), epochs=1, batch_size=8, verbose=0,
            callbacks=[quantize.QuantizerUpdate()])
    kernel = quantize.strip_quantizers(qat).get_layer("conv").kernel.numpy()
    assert np.all(kernel[mask == 0] == 0) and np.count_nonzero(kernel[mask == 1]) > 0


def test_quantize_model_refuses_what_it_cannot_quantize():
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="has no Conv2D, DepthwiseConv2D or Dense layer"):
        quantize.quantize_model(keras.Model(inputs, keras.layers.ReLU()(inputs)),
                                weights=quantize.FixedPointQuantizer(width=8, point=2))


def test_the_configuration_knows_every_quantizer_by_name():
    from mayo_lite.config.mayo_overriders import QUANTIZERS  # the config room names them without importing Keras

    assert set(QUANTIZERS) == set(quantize.QUANTIZERS)


ROUND_TRIP = [
    quantize.FixedPointQuantizer(width=6, point=2, stochastic="ulp"),
    quantize.DGQuantizer(width=8, overflow_rate=0.01),
    quantize.CourbariauxQuantizer(width=8, overflow_rate=0.0),
    quantize.DGTrainableQuantizer(overflow_rate=0.0),
    quantize.LogQuantizer(width=5, overflow_rate=0.0),
    quantize.FloatingPointQuantizer(width=6, exponent_bias=3, mantissa_width=2),
    quantize.ShiftQuantizer(width=3, exponent_bias=0, overflow_rate=0.0),
    quantize.TernaryQuantizer(base=0),
    quantize.ChannelTernaryQuantizer(base=1),
    quantize.IncrementalQuantizer(quantizer=quantize.FixedPointQuantizer(width=4, point=1), interval=0.5),
    quantize.MixedQuantizer(quantizers={"a": quantize.FixedPointQuantizer(width=2, point=1),
                                        "b": quantize.FixedPointQuantizer(width=8, point=2)}, interval=0.5),
    quantize.Recentralizer(quantizer=quantize.FixedPointQuantizer(width=4, point=1),
                           mean_quantizer=quantize.ShiftQuantizer(width=4, bias=8, overflow_rate=0.0)),
]


@pytest.mark.parametrize("quantizer", ROUND_TRIP, ids=lambda q: type(q).__name__)
def test_every_quantizers_state_survives_a_keras_file(quantizer, tmp_path):
    """Updated state (points, biases, masks, labels, means, trained scales) saved and loaded with the model."""
    keras.utils.set_random_seed(2)
    qat = quantize.quantize_model(small_model(), weights=quantizer)
    qat.compile("sgd", "sparse_categorical_crossentropy")
    images = RNG.standard_normal((32, 8, 8, 3)).astype(np.float32)
    qat.fit(images, RNG.integers(0, 4, 32), epochs=2, batch_size=8, verbose=0,
            callbacks=[quantize.QuantizerUpdate()])
    path = tmp_path / "model.keras"
    qat.save(path)
    loaded = keras.models.load_model(path)
    for layer in ("conv", "depthwise", "logits"):
        before = qat.get_layer(layer).kernel_quantizer
        after = loaded.get_layer(layer).kernel_quantizer
        assert type(after) is type(before)
        for old, new in zip(before.weights, after.weights):
            np.testing.assert_array_equal(new.numpy(), old.numpy())
    if quantizer.stochastic if hasattr(quantizer, "stochastic") else False:
        return  # stochastic rounding draws anew at each call
    np.testing.assert_array_equal(loaded(images).numpy(), qat(images).numpy())


@pytest.mark.parametrize("engine", ["xla", "native"])
def test_a_gated_convolution_with_quantized_weights_runs_sparsely_as_in_keras(engine):
    """Quantizers compose with FBS gates: the sparse path (both engines) computes with the quantized kernels the
    Keras model uses, the gated layer's and a masked plain layer's alike."""
    from mayo_lite.layers import GatedConv2D, MaskedConv2D
    from mayo_lite.sparse import SparseGatedModel

    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 3))
    x = MaskedConv2D(8, 3, padding="same", activation="relu", name="plain",
                     kernel_quantizer=quantize.FixedPointQuantizer(width=6, point=1),
                     bias_quantizer=quantize.FixedPointQuantizer(width=8, point=2))(inputs)
    x = GatedConv2D(16, 3, density=0.5, name="gated",
                    kernel_quantizer=quantize.ShiftQuantizer(width=3, exponent_bias=0, overflow_rate=0.0))(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
    quantize.update_quantizers(model)  # the shift quantizer's exponents from the kernel
    gated = model.get_layer("gated")
    kernel = gated.effective_kernel().numpy()
    magnitudes = np.abs(kernel[kernel != 0])
    assert magnitudes.size and np.allclose(np.log2(magnitudes), np.round(np.log2(magnitudes)))  # powers of two
    images = RNG.random((6, 12, 12, 3)).astype(np.float32)
    expected = model(images, training=False).numpy()
    sparse = SparseGatedModel(model, engine=engine)
    found = np.concatenate([sparse(image[None]) for image in images])
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(found, expected, atol=1e-4)
    stripped = quantize.strip_quantizers(model)  # the gated layer stays gated, its kernel the quantized one
    assert stripped.get_layer("gated").kernel_quantizer is None
    np.testing.assert_allclose(stripped(images).numpy(), expected, atol=1e-5)
