"""Static pruning through the runner: the `prune` action and section, fine-tuning from a pruned checkpoint, gradual
pruning during `train`, and `info` with weight densities. The algorithm itself is checked against NumPy in
test_prune.py."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from mayo_lite.prune.schedule import PruneSchedule
from mayo_lite.weights.checkpoint import read
from tests.conftest import digest_directory
from tests.synthetic import synthetic_dataset

MODEL = """
model:
  name: small
  layers:
    conv0: {type: convolution, kernel_size: 3, num_outputs: 8, normalizer_fn: batch_norm}
    conv1: {type: convolution, kernel_size: 3, num_outputs: 6, stride: 2, normalizer_fn: batch_norm}
    shortcut: {type: convolution, kernel_size: 1, num_outputs: 6, stride: 2, activation_fn: null}
    add: {type: add}
    pool: {type: reduce_mean, axis: [1, 2]}
    logits: {type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}
  graph:
    - {from: input, with: conv0, to: x}
    - {from: x, with: conv1, to: y}
    - {from: x, with: shortcut, to: z}
    - {from: [y, z], with: [add, pool, logits], to: output}
""" + synthetic_dataset(channels=3, train=64, validate=32) + """train:
  learning_rate: 0.05
  optimizer: {type: sgd, momentum: 0.9, weight_decay: 0.0001}
system: {batch_size_per_gpu: 16, max_epochs: 1, seed: 3}
"""
# The same model with its first convolution gated (FBS), for pruning and FBS together.
GATED_MODEL = """
_import: small.yaml
model:
  name: small_gate
  layers:
    conv0: {type: gated_convolution, gate_params: {density: 0.5}, normalizer_params: {scale: true}}
"""
CONVOLUTIONS = {"conv0": (3, 3, 3, 8), "conv1": (3, 3, 8, 6), "shortcut": (1, 1, 8, 6)}
CHECKPOINTS = Path("checkpoints/small/synthetic")


@pytest.fixture
def run(workspace):
    return workspace({"small.yaml": MODEL})


def masks_of(path):
    stored, _, _ = read(path)
    return stored, {name: stored[f"model/{name}/mask"] for name in CONVOLUTIONS}


def test_prune_reports_saves_and_prunes_the_reference_fraction(run, capsys):
    assert run("small.yaml", "train") == 0
    capsys.readouterr()
    assert run("small.yaml", "prune.percent=0.3", "system.info.plumbing=true", "prune") == 0
    out = capsys.readouterr().out
    assert "layer index: 0 (conv0)  total params: 216" in out
    assert "Total conv params: 696, Pruned conv params:" in out
    assert "accuracy before pruning: top1:" in out and "accuracy after pruning:  top1:" in out
    stored, masks = masks_of(CHECKPOINTS / "pruned.npz")
    total = sum(mask.size for mask in masks.values())
    pruned = sum(int((mask == 0).sum()) for mask in masks.values())
    # Kernel granularity removes whole 3×3 (or 1×1) kernels: at least 30% of the weights, each kernel all or none.
    assert pruned / total >= 0.3
    for name, mask in masks.items():
        per_kernel = mask.reshape(-1, *mask.shape[2:])
        assert np.all((per_kernel == 0).all(axis=0) | (per_kernel == 1).all(axis=0))
        assert np.all(stored[f"model/{name}/kernel"][mask == 0] == 0.0)
    figures = yaml.safe_load(Path("prune.yaml").read_text())
    assert figures["pruned"] == pruned and figures["total"] == total == 696
    assert figures["ratio"] == pytest.approx(pruned / total, abs=1e-6)


def test_fine_tuning_a_pruned_checkpoint_keeps_pruned_weights_at_zero(run):
    assert run("small.yaml", "train", "prune.percent=0.5", "prune") == 0
    # A new command: the pruned checkpoint's masks give the model masks, with no prune section in the config.
    assert run("small.yaml", "system.checkpoint.load=pruned", "system.max_epochs=2", "train") == 0
    _, masks = masks_of(CHECKPOINTS / "pruned.npz")
    stored, after = masks_of(CHECKPOINTS / "latest.npz")
    for name, mask in masks.items():
        np.testing.assert_array_equal(after[name], mask)
        kernel = stored[f"model/{name}/kernel"]
        assert np.all(kernel[mask == 0] == 0.0)
        assert np.any(kernel[mask == 1] != 0.0)


def test_the_recipe_in_one_command_prunes_then_fine_tunes(run, capsys):
    assert run("small.yaml", "train", "prune.percent=0.3", "prune", "trainers/finetune.yaml",
               "system.max_epochs=1", "reset-num-epochs", "train", "eval", "info") == 0
    captured = capsys.readouterr()
    assert "continuing from checkpoints/small/synthetic/pruned.npz" in captured.err
    stored, masks = masks_of(CHECKPOINTS / "latest.npz")
    assert all(np.all(stored[f"model/{name}/kernel"][mask == 0] == 0.0) for name, mask in masks.items())
    assert "with pruning masks: dense" in captured.out


digest = digest_directory


BAD_PRUNING = [
    ("prune.percent=1.0", "prune.percent"),
    ("prune.percent=-0.1", "prune.percent"),
    ("prune.granularity=block", "prune.granularity"),
    ("prune.saliency=mean", "prune.saliency"),
    ("prune.scope=network", "prune.scope"),
    ("prune.layers=[conv9*]", "prune.layers"),
    ("prune.percentage=0.3", "prune: unknown key percentage"),
    ("prune.schedule={type: cubic}", "prune.schedule"),
    ("prune.schedule={type: polynomial, final: 0.5}", "needs end"),
    ("prune.schedule={type: polynomial, final: 1.5, end: 1}", "prune.schedule.final"),
]


@pytest.mark.parametrize("override, culprit", BAD_PRUNING)
def test_bad_pruning_settings_are_config_errors_and_write_nothing(run, capsys, override, culprit):
    assert run("small.yaml", "train") == 0
    before = digest(CHECKPOINTS)
    capsys.readouterr()
    action = "train" if "schedule" in override else "prune"
    assert run("small.yaml", override, "system.info.plumbing=true", "system.max_epochs=2", action) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("my: error: ") and culprit in err[-1]
    assert digest(CHECKPOINTS) == before
    assert not Path("prune.yaml").exists()


def test_pruning_a_model_without_convolutions_is_a_config_error(run, capsys):
    assert run("small.yaml", "model.layers={flat: {type: flatten}, logits: {type: fully_connected, num_outputs: 4}}",
               "model.graph={from: input, with: [flat, logits], to: output}", "prune") == 2
    assert "has no convolution to prune" in capsys.readouterr().err


def test_gradual_pruning_follows_the_polynomial_schedule(run, capsys):
    schedule = "{type: polynomial, initial: 0.0, final: 0.6, begin: 0, end: 2, frequency: 1}"
    assert run("small.yaml", f"prune.schedule={schedule}", "system.max_epochs=2", "train") == 0
    assert "pruned to" in capsys.readouterr().err
    _, masks = masks_of(CHECKPOINTS / "latest.npz")
    pruned = sum(int((mask == 0).sum()) for mask in masks.values()) / 696
    assert 0.6 <= pruned < 0.7  # the last step prunes at epoch 2: the final fraction (whole kernels, so a bit more)


def test_polynomial_schedule_matches_tfmot_formula():
    schedule = PruneSchedule({"type": "polynomial", "initial": 0.1, "final": 0.7, "begin": 1, "end": 3})
    for epoch in (0.0, 1.0, 1.5, 2.0, 2.9, 3.0, 4.0):
        progress = min(max((epoch - 1) / 2, 0), 1)
        assert schedule.percent(epoch) == pytest.approx(0.7 + (0.1 - 0.7) * (1 - progress) ** 3)
    assert schedule.due(100, 1.0) and not schedule.due(99, 1.0) and not schedule.due(100, 3.5)


def test_info_counts_only_the_remaining_weights(run, capsys):
    assert run("small.yaml", "prune.percent=0.4", "prune") == 0
    capsys.readouterr()
    assert run("small.yaml", "system.checkpoint.load=pruned", "system.info.plumbing=true", "info") == 0
    figures = {row["name"]: row for row in yaml.safe_load(Path("info.yaml").read_text())["layers"]}
    _, masks = masks_of(CHECKPOINTS / "pruned.npz")
    # Output sizes: conv0 8×8 (same), conv1 and the shortcut 4×4.
    positions = {"conv0": 64, "conv1": 16, "shortcut": 16}
    for name, mask in masks.items():
        assert figures[name]["weight_density"] == pytest.approx(mask.mean(), abs=1e-6)
        assert figures[name]["effective_macs"] == round(positions[name] * mask.sum())


def test_gated_convolutions_take_masks_so_pruning_and_fbs_compose(run, capsys, tmp_path):
    (tmp_path / "gate.yaml").write_text(GATED_MODEL)
    assert run("gate.yaml", "prune.percent=0.3", "system.info.plumbing=true", "prune", "info") == 0
    stored, _, _ = read(Path("checkpoints/small_gate/synthetic/pruned.npz"))
    mask = stored["model/conv0/mask"]
    assert np.all(stored["model/conv0/kernel"][mask == 0] == 0.0)
    row = next(r for r in yaml.safe_load(Path("info.yaml").read_text())["layers"] if r["name"] == "conv0")
    assert row["effective_macs"] == round(64 * mask.sum() * 0.5)


def test_network_slimming_trains_with_an_l1_penalty_then_prunes_channels_by_scale(run, capsys):
    assert run("small.yaml", "models/override/netslim.yaml", "model.batch_norm_scale_l1=0.01", "train",
               "prune.granularity=channel", "prune.percent=0.25", "prune") == 0
    stored, masks = masks_of(CHECKPOINTS / "pruned.npz")
    for name in ("conv0", "conv1"):  # the convolutions with a batch norm
        gamma = stored[f"model/{name}.bn/gamma"]
        removed = (masks[name] == 0).all(axis=(0, 1, 2))
        assert np.all(masks[name][..., ~removed] == 1)
        assert np.all(gamma[removed] == 0) and np.all(stored[f"model/{name}.bn/beta"][removed] == 0)
    assert sum(int((masks[n] == 0).all(axis=(0, 1, 2)).sum()) for n in ("conv0", "conv1")) >= 1


def test_the_slimming_penalty_is_the_l1_norm_of_the_batch_norm_scales():
    from mayo_lite.config import Config
    from mayo_lite.net import build_model
    cfg = Config()
    cfg.load("models/cifarnet_slim.yaml")
    cfg.load("models/override/netslim.yaml")
    cfg.set("dataset", {"name": "x", "task": {"num_classes": 10}})
    model = build_model(cfg.get("model"), (28, 28, 1))
    gammas = [layer.gamma for layer in model.layers if layer.name.endswith(".bn")]
    for gamma in gammas:
        gamma.assign(np.random.default_rng(0).normal(size=gamma.shape).astype(np.float32))
    model(np.zeros((1, 28, 28, 1), np.float32))
    expected = 1e-5 * sum(np.abs(gamma.numpy()).sum() for gamma in gammas)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_recalibration_averages_the_batch_statistics_of_the_training_batches(run, capsys):
    from mayo_lite.cli import Runner
    assert run("small.yaml", "model.layers.norm={type: batch_normalization, momentum: 0.99}",
               "model.graph=[{from: input, with: [norm, conv0], to: x}, {from: x, with: conv1, to: y}, "
               "{from: x, with: shortcut, to: z}, {from: [y, z], with: [add, pool, logits], to: output}]",
               "prune.percent=0.3", "prune.recalibrate=3", "system.info.plumbing=false", "prune") == 0
    assert "accuracy after recalibrating the batch norms on 48 training images" in capsys.readouterr().out
    stored, _, _ = read(CHECKPOINTS / "pruned.npz")
    runner = Runner()
    runner.cfg.load("small.yaml")
    runner.cfg.override("system.checkpoint.load=null")
    batches = [images.numpy() for images, _ in runner.session().pipeline("train").take(3)]
    # The input batch norm sees the images themselves: its statistics are the average of the batches' own.
    np.testing.assert_allclose(stored["model/norm/moving_mean"],
                               np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0), rtol=1e-5)
    np.testing.assert_allclose(stored["model/norm/moving_variance"],
                               np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0), rtol=1e-4)
