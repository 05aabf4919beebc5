"""`mayo_lite.tfmot` against TensorFlow Model Optimization: its schedules' formulas, its magnitude mask, its default
8-bit fake quantization (checked with TensorFlow's own FakeQuant ops), and the code of TFMOT's two guides
("Pruning in Keras example" and "Quantization aware training in Keras example", tensorflow_model_optimization/g3doc)
transcribed with only the import changed and random images in place of MNIST."""

import numpy as np
import pytest
import tensorflow as tf

import mayo_lite.tfmot as tfmot
from mayo_lite.tfmot.pruning import magnitude_mask

RNG = np.random.default_rng(0)


def images(count):
    labels = RNG.integers(0, 10, count)
    # each class a different mean brightness in a different quadrant, so that the guides' models learn something
    x = RNG.random((count, 28, 28)).astype(np.float32) * 0.5
    for label in range(10):
        x[labels == label, (label % 2) * 14:(label % 2) * 14 + 14, (label // 2) * 5:(label // 2) * 5 + 5] += 0.5
    return x, labels


def test_schedules_are_tfmots_formulas():
    decay = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.5, final_sparsity=0.8, begin_step=100,
                                                 end_step=500, frequency=100)
    for step in (100, 200, 300, 500, 700):
        should, sparsity = decay(step)
        progress = min(1.0, max(0.0, (step - 100) / 400))
        assert bool(should) == (step <= 500)
        assert float(sparsity) == pytest.approx(0.8 + (0.5 - 0.8) * (1 - progress) ** 3)
    assert not bool(decay(150)[0]) and not bool(decay(50)[0])
    constant = tfmot.sparsity.keras.ConstantSparsity(0.3, begin_step=0, frequency=10)
    assert bool(constant(1000)[0]) and float(constant(1000)[1]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="end_step cannot be -1"):
        tfmot.sparsity.keras.PolynomialDecay(0.1, 0.5, 0, -1)
    with pytest.raises(ValueError, match=r"target_sparsity must be in range \[0,1\)"):
        tfmot.sparsity.keras.ConstantSparsity(1.0, 0)


def test_the_mask_keeps_the_largest_magnitudes_as_tfmot_counts_them():
    kernel = RNG.standard_normal((3, 3, 4, 8)).astype(np.float32)
    mask, threshold = magnitude_mask(kernel, 0.75)
    k = max(round(kernel.size * 0.25), 1)
    assert mask.sum() == k
    assert threshold == np.sort(np.abs(kernel).ravel())[::-1][k - 1]
    assert np.all(np.abs(kernel[mask == 1]) >= np.abs(kernel[mask == 0]).max())


def test_pruning_guide_runs_with_one_import_changed(tmp_path):
    # --- transcription of pruning_with_keras.ipynb (tfmot → mayo_lite.tfmot; MNIST → random images) ---
    from tensorflow import keras

    train_images, train_labels = images(4000)
    test_images, test_labels = images(500)
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(28, 28)),
        keras.layers.Reshape(target_shape=(28, 28, 1)),
        keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10)
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train_images, train_labels, epochs=1, validation_split=0.1, verbose=0)
    _, baseline_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)

    prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
    batch_size = 32
    epochs = 2
    validation_split = 0.1
    num_images = train_images.shape[0] * (1 - validation_split)
    end_step = np.ceil(num_images / batch_size).astype(np.int32) * epochs
    pruning_params = {
        "pruning_schedule": tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.50, final_sparsity=0.80,
                                                                 begin_step=0, end_step=end_step)
    }
    model_for_pruning = prune_low_magnitude(model, **pruning_params)
    model_for_pruning.compile(optimizer="adam",
                              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                              metrics=["accuracy"])
    logdir = str(tmp_path / "logs")
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), tfmot.sparsity.keras.PruningSummaries(log_dir=logdir)]
    model_for_pruning.fit(train_images, train_labels, batch_size=batch_size, epochs=epochs,
                          validation_split=validation_split, callbacks=callbacks, verbose=0)
    _, model_for_pruning_accuracy = model_for_pruning.evaluate(test_images, test_labels, verbose=0)
    model_for_export = tfmot.sparsity.keras.strip_pruning(model_for_pruning)
    # --- end of the transcription; what the guide shows, checked ---
    steps = int(np.ceil(num_images / batch_size)) * epochs
    last = (steps // 100) * 100  # the last step TFMOT's frequency of 100 prunes at
    expected = 0.8 + (0.5 - 0.8) * (1 - min(1.0, last / end_step)) ** 3
    for layer in model_for_export.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            assert type(layer) in (keras.layers.Conv2D, keras.layers.Dense)  # plain Keras layers again
            kernel = layer.kernel.numpy()
            assert np.mean(kernel == 0) == pytest.approx(expected, abs=0.01)
    assert baseline_model_accuracy > 0.5 and model_for_pruning_accuracy > 0.5
    assert any(path.name.startswith("events") for path in (tmp_path / "logs").rglob("*"))


def test_qat_guide_runs_with_one_import_changed():
    # --- transcription of training_example.ipynb (tfmot → mayo_lite.tfmot; MNIST → random images) ---
    from tensorflow import keras

    train_images, train_labels = images(2000)
    test_images, test_labels = images(300)
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(28, 28)),
        keras.layers.Reshape(target_shape=(28, 28, 1)),
        keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10)
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train_images, train_labels, epochs=1, validation_split=0.1, verbose=0)

    quantize_model = tfmot.quantization.keras.quantize_model
    q_aware_model = quantize_model(model)
    q_aware_model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"])
    train_images_subset = train_images[0:1000]
    train_labels_subset = train_labels[0:1000]
    q_aware_model.fit(train_images_subset, train_labels_subset, batch_size=500, epochs=1, validation_split=0.1,
                      verbose=0)
    _, baseline_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    _, q_aware_model_accuracy = q_aware_model.evaluate(test_images, test_labels, verbose=0)
    converter = tf.lite.TFLiteConverter.from_keras_model(q_aware_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    quantized_tflite_model = converter.convert()
    # --- end of the transcription ---
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=quantized_tflite_model)
    interpreter.allocate_tensors()
    assert any(detail["dtype"] == np.int8 for detail in interpreter.get_tensor_details())  # an int8 model
    source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    agree = 0
    for image in test_images[:50]:
        interpreter.set_tensor(source, image[None])
        interpreter.invoke()
        agree += int(interpreter.get_tensor(target).argmax() == q_aware_model(image[None]).numpy().argmax())
    assert agree >= 49
    assert abs(q_aware_model_accuracy - baseline_model_accuracy) < 0.05
    conv = next(layer for layer in q_aware_model.layers if isinstance(layer, keras.layers.Conv2D))
    kernel = conv.kernel.numpy()
    # TFMOT's default 8-bit weights: per output channel, symmetric, narrow range [−127, 127]·max|w|/127
    expected = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, -np.abs(kernel).max(axis=(0, 1, 2)), np.abs(kernel).max(axis=(0, 1, 2)), num_bits=8,
        narrow_range=True).numpy()
    np.testing.assert_allclose(conv.masked_kernel(conv.kernel).numpy(), expected, atol=1e-7)
    # activations: the input and the blocks' outputs carry a moving-average range
    ranges = [layer for layer in q_aware_model.layers if type(layer).__name__ == "MovingAverageQuantizer"]
    assert len(ranges) == 2  # the convolution's output (after its ReLU), the logits (the input: AllValues)
    assert all(float(layer.range_max.numpy()) < 6.0 or float(layer.range_min.numpy()) > -6.0 for layer in ranges)
    # the input: a running min and max of every training image seen (fit's validation split holds out the last 100)
    seen = next(layer for layer in q_aware_model.layers if type(layer).__name__ == "AllValuesQuantizer")
    assert float(seen.range_min.numpy()) == 0.0
    assert float(seen.range_max.numpy()) == pytest.approx(float(train_images_subset[:900].max()))


def test_quantize_apply_takes_only_the_annotated_layers():
    from tensorflow import keras

    inputs = keras.Input((8, 8, 3))
    x = tfmot.quantization.keras.quantize_annotate_layer(keras.layers.Conv2D(4, 3, name="annotated"))(inputs)
    x = keras.layers.Conv2D(4, 3, name="plain")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    quantized = tfmot.quantization.keras.quantize_apply(model)
    assert quantized.get_layer("annotated").kernel_quantizer is not None
    assert type(quantized.get_layer("plain")) is keras.layers.Conv2D
    with pytest.raises(ValueError, match="at least one annotated layer"):
        tfmot.quantization.keras.quantize_apply(keras.Model(inputs, keras.layers.Flatten()(inputs)))
