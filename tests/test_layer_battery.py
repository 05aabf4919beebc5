"""Keras' own battery of layer tests (`keras.src.testing.TestCase.run_layer_test`: building, serialisation, a
`.keras` round trip, training, mixed precision) on every layer this project adds, and the Conv2D keywords a gated
layer honours or refuses."""

import keras
import pytest
from keras.src import testing

from mayo_lite.layers import (GatedConv2D, Hadamard, LocalGating, LocalResponseNormalization, MaskedConv2D,
                              MaskedDense, MaskedDepthwiseConv2D, ReduceMean, Squeeze)
from mayo_lite.errors import ArgumentError


class LayerBattery(testing.TestCase):
    def test_masked_convolution(self):
        self.run_layer_test(MaskedConv2D, init_kwargs={"filters": 4, "kernel_size": 3, "padding": "same"},
                            input_shape=(2, 8, 8, 3), expected_output_shape=(2, 8, 8, 4),
                            expected_num_trainable_weights=2, expected_num_non_trainable_weights=1,
                            supports_masking=False)

    def test_masked_depthwise_convolution(self):
        self.run_layer_test(MaskedDepthwiseConv2D, init_kwargs={"kernel_size": 3, "depth_multiplier": 2,
                                                                "padding": "same"},
                            input_shape=(2, 8, 8, 3), expected_output_shape=(2, 8, 8, 6),
                            expected_num_trainable_weights=2, expected_num_non_trainable_weights=1,
                            supports_masking=False)

    def test_masked_dense(self):
        self.run_layer_test(MaskedDense, init_kwargs={"units": 5}, input_shape=(2, 3),
                            expected_output_shape=(2, 5), expected_num_trainable_weights=2,
                            expected_num_non_trainable_weights=1, supports_masking=True)

    def test_gated_convolution(self):
        # Trainable: kernel, beta, gate kernel and bias. Not: moving mean and variance, last_density.
        self.run_layer_test(GatedConv2D, init_kwargs={"filters": 4, "kernel_size": 3, "density": 0.5},
                            input_shape=(2, 8, 8, 3), expected_output_shape=(2, 8, 8, 4),
                            expected_num_trainable_weights=4, expected_num_non_trainable_weights=3,
                            supports_masking=False)

    def test_gated_convolution_with_a_mask_and_a_local_threshold(self):
        self.run_layer_test(GatedConv2D, init_kwargs={"filters": 4, "kernel_size": 3, "density": 0.5,
                                                      "use_mask": True, "threshold": "local", "factor": 2},
                            input_shape=(2, 8, 8, 3), expected_output_shape=(2, 8, 8, 4),
                            expected_num_trainable_weights=6, expected_num_non_trainable_weights=5,
                            supports_masking=False)

    def test_local_response_normalization(self):
        self.run_layer_test(LocalResponseNormalization, init_kwargs={"depth_radius": 2},
                            input_shape=(2, 4, 4, 6), expected_output_shape=(2, 4, 4, 6), supports_masking=False)

    def test_reduce_mean(self):
        self.run_layer_test(ReduceMean, init_kwargs={"axis": [1, 2], "keepdims": True},
                            input_shape=(2, 4, 4, 6), expected_output_shape=(2, 1, 1, 6), supports_masking=False)

    def test_hadamard(self):
        self.run_layer_test(Hadamard, init_kwargs={"variable_scales": True}, input_shape=(2, 4, 4, 8),
                            expected_output_shape=(2, 4, 4, 8), expected_num_trainable_weights=1,
                            supports_masking=False)

    def test_local_gating(self):
        self.run_layer_test(LocalGating, init_kwargs={"alpha": 0.1}, input_shape=(2, 4, 4, 6),
                            expected_output_shape=(2, 4, 4, 6), supports_masking=False)

    def test_squeeze(self):
        self.run_layer_test(Squeeze, init_kwargs={"axis": [1, 2]},
                            input_shape=(2, 1, 1, 6), expected_output_shape=(2, 6), supports_masking=False)


@pytest.mark.parametrize("keyword, value", [("data_format", "channels_first"), ("use_bias", True), ("groups", 2),
                                            ("bias_initializer", "zeros"), ("activity_regularizer", "l2")])
def test_conv2d_keywords_a_gate_cannot_honour_are_refused_by_name(keyword, value):
    with pytest.raises(ArgumentError, match=f"argument `{keyword}`"):
        GatedConv2D(4, 3, density=0.5, **{keyword: value})


def test_a_kernel_constraint_is_honoured_and_saved():
    layer = GatedConv2D(4, 3, density=0.5, kernel_constraint="non_neg")
    assert isinstance(GatedConv2D.from_config(layer.get_config()).kernel_constraint, keras.constraints.NonNeg)
    GatedConv2D(4, 3, density=0.5, data_format="channels_last", use_bias=False)  # the values it has anyway
