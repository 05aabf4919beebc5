"""The small Keras layers mayo-lite adds, against NumPy, and their `.keras` round trip."""

import numpy as np
import pytest

import keras

from mayo_lite.layers import LocalResponseNormalization, ReduceMean, Squeeze


def test_local_response_normalization_matches_the_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 3, 7)).astype("float32")
    radius, bias, alpha, beta = 2, 1.5, 0.01, 0.75
    expected = np.empty_like(x)
    for c in range(7):
        window = x[..., max(0, c - radius):c + radius + 1]
        expected[..., c] = x[..., c] / (bias + alpha * np.sum(window ** 2, axis=-1)) ** beta
    layer = LocalResponseNormalization(depth_radius=radius, bias=bias, alpha=alpha, beta=beta)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5)


def test_reduce_mean_and_squeeze_match_numpy():
    x = np.arange(2 * 3 * 4 * 5, dtype="float32").reshape(2, 3, 4, 5)
    np.testing.assert_allclose(ReduceMean([1, 2], keepdims=True)(x), x.mean(axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(ReduceMean(-1)(x), x.mean(axis=-1))
    y = x[:, :1, :1, :]
    np.testing.assert_array_equal(Squeeze([1, 2])(y), y[:, 0, 0, :])


@pytest.mark.parametrize("make, message", [
    (lambda: ReduceMean(axis=0), "axis"),
    (lambda: Squeeze(axis=[]), "axis"),
    (lambda: LocalResponseNormalization(depth_radius=-1), "depth_radius"),
])
def test_bad_arguments_name_the_argument(make, message):
    with pytest.raises(ValueError, match=f"argument `{message}`"):
        make()


def test_squeeze_refuses_an_axis_that_is_not_one():
    with pytest.raises(ValueError, match="axis 1 has size 3"):
        Squeeze([1])(np.zeros((2, 3, 1), "float32"))


def test_keras_round_trip(tmp_path):
    inputs = keras.Input((4, 4, 6))
    x = LocalResponseNormalization(depth_radius=1)(inputs)
    x = ReduceMean([1, 2], keepdims=True)(x)
    outputs = Squeeze([1, 2])(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    data = np.random.default_rng(1).normal(size=(3, 4, 4, 6)).astype("float32")
    np.testing.assert_allclose(loaded(data), model(data), rtol=1e-6)
