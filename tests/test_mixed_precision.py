"""Mixed precision: the project's layers compute in float16 or bfloat16 what they compute in float32, and the runner
trains under `system.precision`."""

import keras
import numpy as np
import pytest

from mayo_lite.layers import GatedConv2D, MaskedConv2D
from mayo_lite.weights.checkpoint import read
from tests.test_callbacks import GATED


@pytest.fixture
def policy():
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


def small_model(layer):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.GlobalAveragePooling2D()(layer(inputs))
    return keras.Model(inputs, keras.layers.Dense(4, dtype="float32")(outputs))


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("make", [lambda: GatedConv2D(6, 3, density=0.5, name="layer"),
                                  lambda: MaskedConv2D(6, 3, padding="same", name="layer")], ids=["gated", "masked"])
@pytest.mark.parametrize("training", [False, True])
def test_a_layer_in_mixed_precision_computes_what_it_does_in_float32(policy, precision, make, training):
    images = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
    policy("float32")
    exact = small_model(make())
    policy(precision)
    mixed = small_model(make())
    assert mixed.get_layer("layer").compute_dtype != "float32"
    for source, target in zip(exact.weights, mixed.weights):
        target.assign(source.numpy())
    if isinstance(exact.get_layer("layer"), GatedConv2D):  # gammas far apart: no near-ties for rounding to flip
        for model in (exact, mixed):
            model.get_layer("layer").gate_bias.assign(np.linspace(0.5, 1.5, 6).astype(np.float32))
    expected = exact(images, training=training).numpy()
    tolerance = 0.05 if precision == "mixed_bfloat16" else 0.01
    np.testing.assert_allclose(mixed(images, training=training).numpy(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_the_runner_trains_a_gated_model_in_mixed_precision(workspace, policy, precision):
    run = workspace({"gate.yaml": GATED})
    assert run("gate.yaml", f"system.precision={precision}", "system.max_epochs=1", "train", "eval") == 0
    values, epoch, _ = read("checkpoints/small_gate/synthetic/latest.npz")
    assert epoch == 1.0
    assert all(np.all(np.isfinite(value)) for value in values.values())
    assert keras.mixed_precision.global_policy().name == precision
    assert run("gate.yaml", "system.checkpoint.load=null", "info") == 0  # the next session sets float32 again
    assert keras.mixed_precision.global_policy().name == "float32"
