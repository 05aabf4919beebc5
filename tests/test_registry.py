"""The registry maps Mayo/TF1 spellings onto Keras objects with TF1's semantics, checked numerically."""

import numpy as np
import pytest

import keras

from mayo_lite import registry
from mayo_lite.errors import ConfigError


def test_tf1_l2_regularizer_halves_like_tf1():
    weights = np.arange(6, dtype="float32").reshape(2, 3)
    regularizer = registry.build(
        "regularizer", {"type": "tensorflow.contrib.layers.l2_regularizer", "scale": 0.004}, "w")
    # TF1: scale * sum(w**2) / 2
    assert float(regularizer(weights)) == pytest.approx(0.004 * np.sum(weights ** 2) / 2, rel=1e-6)
    keras_l2 = registry.build("regularizer", {"type": "l2", "l2": 0.004}, "w")
    assert float(keras_l2(weights)) == pytest.approx(0.004 * np.sum(weights ** 2), rel=1e-6)


def test_tf1_rmsprop_decay_is_rho():
    optimizer = registry.build("optimizer", {"type": "tensorflow.train.RMSPropOptimizer", "decay": 0.9,
                                             "momentum": 0.9, "epsilon": 1.0}, "o")
    assert isinstance(optimizer, keras.optimizers.RMSprop)
    assert optimizer.rho == 0.9 and optimizer.momentum == 0.9 and optimizer.epsilon == 1.0


def test_tf1_momentum_optimizer_is_sgd_with_nesterov_translated():
    optimizer = registry.build("optimizer", {"type": "tensorflow.train.MomentumOptimizer", "momentum": 0.9,
                                             "use_nesterov": True}, "o")
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.nesterov and optimizer.momentum == 0.9


def test_tf1_variance_scaling_defaults_to_he_normal_truncated():
    initializer = registry.build("initializer", "tensorflow.variance_scaling_initializer", "i")
    values = np.asarray(initializer((3, 3, 64, 256)))
    fan_in = 3 * 3 * 64
    # Truncated normal at 2 standard deviations, rescaled so that the variance is 2 / fan_in.
    assert values.std() == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.05)
    assert np.abs(values).max() <= 2 * np.sqrt(2.0 / fan_in) / 0.87962566103423978 + 1e-6


def test_tf1_uniform_variance_scaling():
    initializer = registry.build("initializer", {"type": "tensorflow.variance_scaling_initializer",
                                                 "factor": 1.0, "mode": "FAN_AVG", "uniform": True}, "i")
    assert initializer.scale == 1.0 and initializer.mode == "fan_avg" and initializer.distribution == "uniform"


def test_slim_batch_norm_takes_slim_defaults_and_decay():
    spec = registry.build("normalizer", "tensorflow.contrib.slim.batch_norm", "n", arguments={"decay": 0.9})
    layer = spec.build("bn")
    assert layer.momentum == 0.9 and layer.scale is False and layer.center is True and layer.epsilon == 0.001


def test_exponential_decay_counts_epochs():
    schedule = registry.learning_rate_schedule(
        {"type": "tensorflow.train.exponential_decay", "learning_rate": 0.1, "decay_steps": 2.5,
         "decay_rate": 0.5, "staircase": True}, "lr")
    assert float(schedule(0.0)) == pytest.approx(0.1)
    assert float(schedule(2.4)) == pytest.approx(0.1)
    assert float(schedule(2.5)) == pytest.approx(0.05)
    assert float(schedule(5.1)) == pytest.approx(0.025)


def test_piecewise_constant_boundaries_in_epochs():
    schedule = registry.learning_rate_schedule(
        {"type": "tensorflow.train.piecewise_constant", "boundaries": [1.0, 2.0], "values": [0.1, 0.01, 0.001]},
        "lr")
    assert [round(float(schedule(e)), 6) for e in (0.5, 1.5, 2.5)] == [0.1, 0.01, 0.001]


@pytest.mark.parametrize("kind, spec, message", [
    ("optimizer", {"type": "rmsprob"}, "did you mean rmsprop"),
    ("optimizer", {"type": "sgd", "momentun": 0.9}, "unknown argument 'momentun'"),
    ("initializer", 3, "expected a spec for the initializer"),
    ("optimizer", {"type": "os.system"}, "unknown optimizer type 'os.system'"),
])
def test_unknown_names_and_arguments_are_config_errors(kind, spec, message):
    with pytest.raises(ConfigError) as error:
        registry.build(kind, spec, "train.optimizer")
    assert message in str(error.value) and "train.optimizer" in str(error.value)


def test_warmup_ramps_linearly_into_the_schedule():
    schedule = registry.learning_rate_schedule(
        {"type": "exponential_decay", "initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5,
         "warmup_epochs": 2}, "lr")
    assert float(schedule(0.5)) == pytest.approx(0.1 * 0.5 ** 0.05 * 0.25, rel=1e-5)
    assert float(schedule(4.0)) == pytest.approx(0.1 * 0.5 ** 0.4, rel=1e-5)
