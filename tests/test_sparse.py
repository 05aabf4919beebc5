"""Sparse execution of gated models: the same outputs as the gated Keras model, with only active channels computed."""

import numpy as np
import pytest

from mayo_lite.config import Config
from mayo_lite.net import build_model
from mayo_lite.sparse import SparseGatedModel, UnsupportedModel


def gated_model(path, shape, density, threshold="online"):
    cfg = Config()
    cfg.load(path)
    cfg.set("dataset", {"name": "x", "task": {"num_classes": 10}})
    cfg.override(f"_gate.density={density}")
    cfg.override(f"_gate.threshold={threshold}")
    model = build_model(cfg.get("model"), shape)
    rng = np.random.default_rng(1)
    for variable in model.variables:  # trained-looking statistics, so normalisation matters
        name = variable.path.rsplit("/", 1)[-1]
        if name == "moving_variance":
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype(np.float32))
        elif name in ("moving_mean", "beta"):
            variable.assign(rng.normal(0.0, 0.3, variable.shape).astype(np.float32))
        elif name == "threshold":
            variable.assign(np.float32(0.9))
    return model


@pytest.mark.parametrize("path, shape, density, threshold", [
    ("models/gate/cifarnet_slim.yaml", (28, 28, 1), 0.5, "online"),
    ("models/gate/cifarnet_slim.yaml", (32, 32, 3), 0.3, "online"),
    ("models/gate/cifarnet_slim.yaml", (28, 28, 1), 0.5, "local"),
    ("models/gate/cifarnet_slim.yaml", (28, 28, 1), 1.0, "online"),
    ("models/gate/lenet5.yaml", (28, 28, 1), 0.4, "online"),  # flatten and dense layers after the gates
])
def test_sparse_execution_gives_the_gated_models_output(path, shape, density, threshold):
    model = gated_model(path, shape, density, threshold)
    sparse = SparseGatedModel(model)
    rng = np.random.default_rng(2)
    for _ in range(3):
        image = rng.random((1, *shape), dtype=np.float32)
        expected = model(image, training=False).numpy()
        np.testing.assert_allclose(sparse(image).numpy(), expected, atol=1e-5, rtol=1e-5)


def test_models_it_cannot_run_exactly_are_refused_when_read():
    with pytest.raises(UnsupportedModel, match="conv2.depthwise.bn: a batch norm with an offset after a gate"):
        SparseGatedModel(gated_model("models/gate/mobilenet.yaml", (32, 32, 3), 0.5))
    with pytest.raises(UnsupportedModel, match="joins or branches"):
        SparseGatedModel(gated_model("models/gate/resnet18.yaml", (32, 32, 3), 0.5))


def test_it_takes_one_image_at_a_time():
    sparse = SparseGatedModel(gated_model("models/gate/lenet5.yaml", (28, 28, 1), 0.5))
    with pytest.raises(ValueError, match="one image"):
        sparse(np.zeros((2, 28, 28, 1), np.float32))


def test_bench_times_dense_gated_and_sparse_execution_side_by_side(tmp_path, monkeypatch, capsys):
    from mayo_lite.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["models/gate/cifarnet_slim.yaml", "datasets/synthetic.yaml", "_gate.density=0.5",
                 "system.checkpoint.load=null", "system.bench.images=3", "system.bench.repeats=1", "bench"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "latency of one image, 3 validation images, median of 1 passes:"
    assert [line.split("  ")[1].strip() for line in lines[1:]] == [
        "dense model (Keras)", "gated, every channel computed (Keras)", "gated, active channels only (sparse)"]
    assert lines[1].endswith("1.00× the dense speed")
    difference = float(captured.err.split("sparse and Keras outputs differ by at most ")[1].split()[0])
    assert difference < 1e-4
