"""Mayo's TF1 checkpoints (`system.checkpoint.load=PATH` or `tf1:PATH`, mayo_lite.weights.tf1): each test writes a
checkpoint as Mayo did, with `tf.compat.v1` variables under Mayo's names in a graph and `Saver().save`, loads it
through `my` and compares the model's weights (written out by `save`) with the arrays it wrote."""

import numpy as np
import pytest
import tensorflow as tf
import yaml

from mayo_lite.config import Config
from mayo_lite.net import build_model
from mayo_lite.weights import read_pretrained
from mayo_lite.weights.checkpoint import read
from tests.conftest import digest_directory
from tests.synthetic import small_model, synthetic_dataset

TINY = small_model("tiny", num_outputs=6) + synthetic_dataset(channels=1)
SAVED = "checkpoints/{}/synthetic/latest.npz"

MODULES = """
model:
  name: blocks
  layers:
    b1:
      type: module
      layers:
        conv: {type: convolution, kernel_size: 3, num_outputs: 4, normalizer_fn: batch_norm}
      graph: {from: input, with: conv, to: output}
    gated: {type: gated_convolution, kernel_size: 3, num_outputs: 6, normalizer_fn: batch_norm,
            gate_params: {density: 1.0, policy: parametric, factor: 2, threshold: global}}
    separable: {type: depthwise_separable_convolution, kernel_size: 3, num_outputs: 5, normalizer_fn: batch_norm}
    pool: {type: reduce_mean, axis: [1, 2]}
    logits: {type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}
  graph: {from: input, with: [b1, gated, separable, pool, logits], to: output}
""" + synthetic_dataset(channels=3)


def write_tf1(prefix, arrays, global_step=None):
    """A TF1 checkpoint as Mayo's Saver wrote it: `arrays` (Mayo name -> array) as graph variables, plus Mayo's
    `imgs_seen` and `mayo/config`; returns the prefix."""
    graph = tf.Graph()
    with graph.as_default():
        for name, value in arrays.items():
            tf.compat.v1.get_variable(name, initializer=value)
        tf.compat.v1.get_variable("imgs_seen", initializer=np.int64(640))
        tf.compat.v1.get_variable("mayo/config", initializer="model: {name: whatever}", dtype=tf.string)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, str(prefix), global_step=global_step, write_meta_graph=False)


def random(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def tiny_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"tiny/conv0/weights": random(rng, 3, 3, 1, 6),
            "tiny/conv0/BatchNorm/gamma": random(rng, 6), "tiny/conv0/BatchNorm/beta": random(rng, 6),
            "tiny/conv0/BatchNorm/moving_mean": random(rng, 6),
            "tiny/logits/weights": random(rng, 6, 4), "tiny/logits/biases": random(rng, 4)}


def saved(model):
    return read(SAVED.format(model))[0]


def test_mayo_names_load_and_the_log_lists_matched_missing_and_extra(workspace, tmp_path, capsys):
    run = workspace({"tiny.yaml": TINY})
    arrays = tiny_arrays()
    prefix = write_tf1(tmp_path / "mayo" / "model.ckpt", {
        **arrays, "tiny/conv0/weights/Momentum": np.zeros((3, 3, 1, 6), np.float32),
        "global_step": np.int64(20)})
    assert run("tiny.yaml", f"system.checkpoint.load={prefix}", "save") == 0
    err = capsys.readouterr().err
    weights = saved("tiny")
    pairs = {"conv0/kernel": "conv0/weights", "conv0.bn/gamma": "conv0/BatchNorm/gamma",
             "conv0.bn/beta": "conv0/BatchNorm/beta", "conv0.bn/moving_mean": "conv0/BatchNorm/moving_mean",
             "logits/kernel": "logits/weights", "logits/bias": "logits/biases"}
    for ours, mayo in pairs.items():
        np.testing.assert_array_equal(weights[f"model/{ours}"], arrays[f"tiny/{mayo}"])
        assert f"tiny/{mayo} as {ours}" in err
    assert "6 variable(s) of the checkpoint match by name" in err
    np.testing.assert_array_equal(weights["model/conv0.bn/moving_variance"], np.ones(6))  # missing: initial value
    assert "keep their initial values: conv0.bn/moving_variance" in err
    assert ("4 variable(s) in the checkpoint are not in this model: global_step, imgs_seen, mayo/config, "
            "tiny/conv0/weights/Momentum") in err
    assert f"loaded TF1 checkpoint {prefix} of Mayo model tiny (epoch 0)" in err


def test_tf1_selector_and_a_directory_take_its_latest_checkpoint(workspace, tmp_path, capsys):
    run = workspace({"tiny.yaml": TINY})
    first = write_tf1(tmp_path / "mayo" / "model.ckpt", tiny_arrays(1), global_step=1)
    latest = write_tf1(tmp_path / "mayo" / "model.ckpt", tiny_arrays(2), global_step=2)
    for selector, arrays in ((f"tf1:{tmp_path / 'mayo'}", tiny_arrays(2)), (str(tmp_path / "mayo"), tiny_arrays(2)),
                             (f"tf1:{first}", tiny_arrays(1)), (f"{latest}.index", tiny_arrays(2))):
        assert run("tiny.yaml", f"system.checkpoint.load={selector}", "save") == 0, selector
        np.testing.assert_array_equal(saved("tiny")["model/conv0/kernel"], arrays["tiny/conv0/weights"])
    assert f"loaded TF1 checkpoint {latest} of Mayo model tiny" in capsys.readouterr().err


def test_mayo_model_scope_may_differ_from_the_model_name(workspace, tmp_path, capsys):
    # Mayo's MobileNet is `mobilenet_v1`, this project's `mobilenet`: the scope the variables share is dropped.
    run = workspace({"tiny.yaml": TINY})
    arrays = {name.replace("tiny/", "tiny_v1/", 1): value for name, value in tiny_arrays(6).items()}
    prefix = write_tf1(tmp_path / "model.ckpt", arrays)
    assert run("tiny.yaml", f"system.checkpoint.load={prefix}", "save") == 0
    np.testing.assert_array_equal(saved("tiny")["model/logits/kernel"], arrays["tiny_v1/logits/weights"])
    assert f"loaded TF1 checkpoint {prefix} of Mayo model tiny_v1" in capsys.readouterr().err


def test_module_gated_and_separable_layers_map(workspace, tmp_path, capsys):
    run = workspace({"blocks.yaml": MODULES})
    rng = np.random.default_rng(3)
    arrays = {
        "blocks/b1/conv/weights": random(rng, 3, 3, 3, 4), "blocks/b1/conv/BatchNorm/gamma": random(rng, 4),
        "blocks/b1/conv/BatchNorm/moving_variance": rng.uniform(0.5, 2, 4).astype(np.float32),
        "blocks/gated/weights": random(rng, 3, 3, 4, 6),
        "blocks/gated/BatchNorm/moving_mean": random(rng, 6),
        "blocks/gated/gate/factor/weights": random(rng, 1, 1, 4, 3), "blocks/gated/gate/factor/biases": random(rng, 3),
        "blocks/gated/gate/weights": random(rng, 1, 1, 3, 6), "blocks/gated/gate/biases": random(rng, 6),
        "blocks/gated/gate/shift": random(rng, 6), "blocks/gate/threshold": np.float32(-0.3),
        "blocks/separable/depthwise_weights": random(rng, 3, 3, 6, 1),
        "blocks/separable/pointwise_weights": random(rng, 1, 1, 6, 5),
        "blocks/separable/BatchNorm/beta": random(rng, 5),
        "blocks/logits/weights": random(rng, 5, 4)}
    prefix = write_tf1(tmp_path / "model.ckpt", arrays)
    assert run("blocks.yaml", f"system.checkpoint.load=tf1:{prefix}", "save") == 0
    weights = saved("blocks")
    expected = {
        "b1.conv/kernel": "b1/conv/weights", "b1.conv.bn/gamma": "b1/conv/BatchNorm/gamma",
        "b1.conv.bn/moving_variance": "b1/conv/BatchNorm/moving_variance",
        "gated/kernel": "gated/weights", "gated/moving_mean": "gated/BatchNorm/moving_mean",
        "gated/gate_hidden_bias": "gated/gate/factor/biases", "gated/gate_bias": "gated/gate/biases",
        "gated/beta": "gated/gate/shift", "global_threshold/threshold": "gate/threshold",
        "separable.depthwise/kernel": "separable/depthwise_weights",
        "separable/kernel": "separable/pointwise_weights", "separable.bn/beta": "separable/BatchNorm/beta",
        "logits/kernel": "logits/weights"}
    for ours, mayo in expected.items():
        np.testing.assert_array_equal(weights[f"model/{ours}"], arrays[f"blocks/{mayo}"])
    # The gate predictor is a 1×1 slim convolution in Mayo, an (in, out) matrix here.
    for ours, mayo in (("gate_hidden_kernel", "gate/factor/weights"), ("gate_kernel", "gate/weights")):
        np.testing.assert_array_equal(weights[f"model/gated/{ours}"], arrays[f"blocks/gated/{mayo}"][0, 0])
    err = capsys.readouterr().err
    assert "15 variable(s) of the checkpoint match by name" in err
    assert "blocks/b1/conv/weights as b1.conv/kernel" in err


def test_a_dense_checkpoint_starts_the_gates_from_its_batch_norms(workspace, tmp_path, capsys):
    gated = TINY.replace("type: convolution", "type: gated_convolution, gate_params: {density: 1.0}")
    run = workspace({"gated.yaml": gated})
    arrays = tiny_arrays(4)
    prefix = write_tf1(tmp_path / "model.ckpt", arrays)
    assert run("gated.yaml", f"system.checkpoint.load={prefix}", "save") == 0
    weights = saved("tiny")
    np.testing.assert_array_equal(weights["model/conv0/kernel"], arrays["tiny/conv0/weights"])
    np.testing.assert_array_equal(weights["model/conv0/moving_mean"], arrays["tiny/conv0/BatchNorm/moving_mean"])
    np.testing.assert_array_equal(weights["model/conv0/gate_bias"], arrays["tiny/conv0/BatchNorm/gamma"])
    np.testing.assert_array_equal(weights["model/conv0/beta"], arrays["tiny/conv0/BatchNorm/beta"])
    assert "the gates of conv0 start from the dense batch norms" in capsys.readouterr().err


def build(masked):
    cfg = Config()
    tree = yaml.safe_load(TINY)
    for key in ("model", "dataset"):
        cfg.set(key, tree[key])
    return build_model(cfg.get("model"), (8, 8, 1), masked=masked)


def test_pruning_masks_fold_into_the_weights_or_fill_the_model_masks(workspace, tmp_path, capsys):
    run = workspace({"tiny.yaml": TINY})
    arrays = tiny_arrays(5)
    mask = np.random.default_rng(5).random((3, 3, 1, 6)) > 0.5
    prefix = write_tf1(tmp_path / "model.ckpt", {
        **arrays, "tiny/conv0/weights/DynamicNetworkSurgeryPruner.mask": mask,
        "tiny/conv0/weights/DynamicNetworkSurgeryPruner.alpha": np.float32(-2.0)})
    # A model without masks computes what Mayo's pruned model did: the masks are folded into the weights.
    assert run("tiny.yaml", f"system.checkpoint.load={prefix}", "save") == 0
    np.testing.assert_array_equal(saved("tiny")["model/conv0/kernel"], arrays["tiny/conv0/weights"] * mask)
    err = capsys.readouterr().err
    assert "the pruning masks of conv0/kernel are folded into the weights" in err
    assert "not in this model: imgs_seen, mayo/config, tiny/conv0/weights/DynamicNetworkSurgeryPruner.alpha" in err
    # A masked model takes them as its masks, and the weights as they are.
    values, _ = read_pretrained(f"tf1:{prefix}", build(masked=True))
    np.testing.assert_array_equal(values["model/conv0/kernel"], arrays["tiny/conv0/weights"])
    np.testing.assert_array_equal(values["model/conv0/mask"], mask.astype(np.float32))


def test_a_shape_mismatch_is_one_line_naming_both_variables(workspace, tmp_path, capsys):
    run = workspace({"tiny.yaml": TINY})
    prefix = write_tf1(tmp_path / "mayo" / "model.ckpt", tiny_arrays())
    before = digest_directory(tmp_path / "mayo")
    assert run("tiny.yaml", "model.layers.conv0.num_outputs=5", f"system.checkpoint.load={prefix}", "save") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"my: error: {prefix}: ") and "Traceback" not in "\n".join(err)
    assert "tiny/conv0/weights (3, 3, 1, 6) does not fit conv0/kernel (3, 3, 1, 5)" in err[-1]
    assert digest_directory(tmp_path / "mayo") == before and not (tmp_path / "checkpoints").exists()


def _no_data(prefix):
    (prefix.parent / f"{prefix.name}.data-00000-of-00001").unlink()
    return f"{prefix}.data-00000-of-00001"


def _garbage_index(prefix):
    (prefix.parent / f"{prefix.name}.index").write_bytes(b"not a checkpoint index at all")
    return f"{prefix}: not a readable TF1 checkpoint"


@pytest.mark.parametrize("damage, selector", [
    (None, "tf1:{dir}/nowhere/model.ckpt"),
    (_no_data, "{prefix}"),
    (_garbage_index, "tf1:{prefix}"),
    (None, "tf1:{dir}/empty"),
])
def test_a_missing_or_damaged_checkpoint_is_one_line_and_status_2(workspace, tmp_path, capsys, damage, selector):
    run = workspace({"tiny.yaml": TINY})
    prefix = tmp_path / "mayo" / "model.ckpt"
    write_tf1(prefix, tiny_arrays())
    (tmp_path / "empty").mkdir()
    culprit = damage(prefix) if damage else selector.format(dir=tmp_path, prefix=prefix).removeprefix("tf1:")
    before = digest_directory(tmp_path / "mayo")
    assert run("tiny.yaml", f"system.checkpoint.load={selector.format(dir=tmp_path, prefix=prefix)}", "save") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("my: error: ") and culprit in err[0], err
    assert digest_directory(tmp_path / "mayo") == before and not (tmp_path / "checkpoints").exists()
