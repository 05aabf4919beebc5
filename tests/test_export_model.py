"""`export-model`: a deployable model with the pruning masks folded into plain kernels, as `.keras` and SavedModel."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from mayo_lite.cli import Runner, main
from mayo_lite.layers import GatedConv2D, MaskedConv2D
from tests.test_prune_action import GATED_MODEL, MODEL


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.yaml").write_text(MODEL)
    (tmp_path / "gate.yaml").write_text(GATED_MODEL)
    return tmp_path


def session_outputs(config, images, load):
    runner = Runner()
    runner.cfg.load(config)
    runner.cfg.override(f"system.checkpoint.load={load}")
    return runner.session().model(images, training=False).numpy()


@pytest.mark.parametrize("config, name", [("small.yaml", "small"), ("gate.yaml", "small_gate")])
def test_the_exported_model_computes_what_the_pruned_one_does_without_masks(workdir, config, name):
    assert main([config, "train", "prune.percent=0.5", "prune", "export-model"]) == 0
    images = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32)
    expected = session_outputs(config, images, "pruned")

    exported = keras.models.load_model(workdir / "exported" / f"{name}.keras")
    assert not any(isinstance(layer, MaskedConv2D) for layer in exported.layers)
    assert not any(getattr(layer, "use_mask", False) for layer in exported.layers if isinstance(layer, GatedConv2D))
    np.testing.assert_allclose(exported(images, training=False), expected, atol=1e-5)
    kernel = exported.get_layer("conv1").kernel.numpy()
    assert 0.4 < np.mean(kernel == 0.0) < 0.9  # the pruned weights are zeros in a plain kernel

    served = tf.saved_model.load(str(workdir / "exported" / f"{name}_savedmodel"))
    np.testing.assert_allclose(served.serve(tf.constant(images)), expected, atol=1e-5)


def test_a_channel_pruned_model_is_exported_narrower_with_the_same_outputs(workdir, capsys):
    """conv0's pruned channels leave the network (conv1 and the shortcut read fewer inputs); conv1 and the shortcut
    feed an addition, so they keep their widths."""
    assert main(["small.yaml", "train", "prune.granularity=channel", "prune.percent=0.4", "prune",
                 "export-model"]) == 0
    out = capsys.readouterr().out
    images = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32)
    pruned = session_outputs("small.yaml", images, "pruned")
    exported = keras.models.load_model(workdir / "exported" / "small.keras")
    width = exported.get_layer("conv0").filters
    assert 0 < width < 8 and f"from conv0 (8→{width}); MACs" in out
    assert exported.get_layer("conv1").kernel.shape == (3, 3, width, 6)
    assert exported.get_layer("shortcut").kernel.shape == (1, 1, width, 6)
    np.testing.assert_allclose(exported(images, training=False), pruned, atol=1e-5)


SERVE_WITHOUT_THE_PACKAGE = """
import sys
import numpy as np
import tensorflow as tf
try:
    import mayo_lite
    sys.exit("mayo_lite is importable here")
except ImportError:
    pass
served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
images = np.load(sys.argv[2])
np.save(sys.argv[3], np.concatenate([served(image=tf.constant(image[None]))["output_0"].numpy() for image in images]))
"""


def exported_gated_model_outputs(workdir, tmp_path, script_text, folder):
    """(outputs of `script_text` run on the exported `folder` in a fresh interpreter started outside the repository,
    with nothing of mayo_lite on its path; the Keras model's outputs) on three random images."""
    assert main(["gate.yaml", "train", "export-model"]) == 0
    images = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32)
    expected = session_outputs("gate.yaml", images, "latest")
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "script.py"
    script.write_text(script_text)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([sys.executable, "-P", str(script), str(workdir / "exported" / folder),
                    str(tmp_path / "images.npy"), str(tmp_path / "outputs.npy")], cwd="/", env=environment, check=True)
    return np.load(tmp_path / "outputs.npy"), expected


def test_a_gated_model_is_also_exported_as_its_sparse_path_that_runs_without_the_package(workdir, tmp_path):
    outputs, expected = exported_gated_model_outputs(workdir, tmp_path, SERVE_WITHOUT_THE_PACKAGE,
                                                     "small_gate_sparse_savedmodel")
    np.testing.assert_allclose(outputs, expected, atol=1e-5)


RUN_NATIVE_WITHOUT_THE_PACKAGE = """
import sys
sys.modules["mayo_lite"] = None  # importing mayo_lite fails here, whatever the path
sys.path.insert(0, sys.argv[1])
import numpy as np
import native_runtime
program = native_runtime.load(sys.argv[1])
np.save(sys.argv[3], np.concatenate([program(image[None]) for image in np.load(sys.argv[2])]))
"""


def test_the_sparse_path_is_also_exported_for_the_native_runtime_that_runs_without_the_package(workdir, tmp_path):
    outputs, expected = exported_gated_model_outputs(workdir, tmp_path, RUN_NATIVE_WITHOUT_THE_PACKAGE,
                                                     "small_gate_sparse_native")
    folder = workdir / "exported" / "small_gate_sparse_native"
    written = sorted(path.name for path in folder.iterdir() if path.name != "__pycache__")  # Numba's, from the run
    assert written == ["native_kernels.py", "native_runtime.py", "program.json", "program.npz"]
    np.testing.assert_allclose(outputs, expected, atol=1e-5)


def test_an_export_path_that_is_a_file_is_a_config_error(workdir, capsys):
    Path("exported").write_text("not a directory")
    assert main(["small.yaml", "system.checkpoint.load=null", "export-model"]) == 2
    assert "system.export.path" in capsys.readouterr().err


RUN_EVERY_FORMAT_WITHOUT_THE_PACKAGE = """
import sys
sys.modules["mayo_lite"] = None  # importing mayo_lite fails here, whatever the path
import numpy as np
directory, name, images_file, outputs_file = sys.argv[1:]
images = np.load(images_file)
outputs = {}
import keras
outputs["keras"] = np.asarray(keras.models.load_model(f"{directory}/{name}.keras")(images, training=False))
import tensorflow as tf
served = tf.saved_model.load(f"{directory}/{name}_savedmodel")  # kept: its variables live as long as it does
outputs["saved_model"] = served.serve(images).numpy()
from ai_edge_litert.interpreter import Interpreter
for key, path in (("tflite", f"{directory}/{name}.tflite"), ("tflite_int8", f"{directory}/{name}_int8.tflite")):
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    rows = []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    outputs[key] = np.stack(rows)
import onnxruntime
session = onnxruntime.InferenceSession(f"{directory}/{name}.onnx", providers=["CPUExecutionProvider"])
outputs["onnx"] = session.run(None, {session.get_inputs()[0].name: images})[0]
np.savez(outputs_file, **outputs)
"""

# int8 quantisation changes the logits; the top-1 agreement with float Keras was 100% on these 64 images (the
# bound leaves room for another machine's rounding).
INT8_AGREEMENT = 0.9


def test_every_format_loads_in_a_fresh_process_without_the_package_and_predicts_as_keras(workdir, tmp_path,
                                                                                        capsys):
    formats = "system.export.formats=[keras, saved_model, tflite, tflite_int8, onnx]"
    assert main(["small.yaml", "train", "prune.percent=0.5", "prune", formats, "export-model"]) == 0
    printed = capsys.readouterr().out
    for name in ("keras", "saved_model", "tflite", "tflite_int8", "onnx"):
        assert f"  {name} " in printed and "top-1 agreement" in printed
    images = np.random.default_rng(0).random((64, 8, 8, 3), dtype=np.float32)
    expected = session_outputs("small.yaml", images, "pruned")
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "formats.py").write_text(RUN_EVERY_FORMAT_WITHOUT_THE_PACKAGE)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([sys.executable, "-P", str(tmp_path / "formats.py"), str(workdir / "exported"), "small",
                    str(tmp_path / "images.npy"), str(tmp_path / "outputs.npz")],
                   cwd="/", env=environment, check=True, capture_output=True)
    outputs = np.load(tmp_path / "outputs.npz")
    for name in ("keras", "saved_model", "tflite", "onnx"):
        np.testing.assert_allclose(outputs[name], expected, atol=1e-4, err_msg=name)
    agreement = np.mean(outputs["tflite_int8"].argmax(-1) == expected.argmax(-1))
    assert agreement >= INT8_AGREEMENT


def test_an_unknown_export_format_is_refused_before_any_work(workdir, capsys):
    assert main(["small.yaml", "system.checkpoint.load=null", "system.export.formats=[tflite, coreml]",
                 "export-model"]) == 2
    assert "unknown format 'coreml'" in capsys.readouterr().err
    assert not Path("exported").exists()
