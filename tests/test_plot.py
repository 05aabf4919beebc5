"""The `plot` action: every figure drawn from a tiny run is a readable PNG of sensible size with something on it,
and the heatmap's numbers are per-class means of the gate's own decisions, image by image."""

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from tests.test_prune_action import GATED_MODEL, MODEL

PLOTS = Path("plots/small_gate/synthetic")


def png(path):
    """The image of a PNG file, after checking its signature."""
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    return matplotlib.image.imread(path)


def looks_drawn(path):
    image = png(path)
    height, width = image.shape[:2]
    assert 300 <= width <= 4000 and 250 <= height <= 4000, (path, image.shape)
    assert image[..., :3].std() > 0.05, f"{path} is nearly blank"


@pytest.fixture
def run(workspace):
    return workspace({"small.yaml": MODEL, "gate.yaml": GATED_MODEL})


def test_plot_draws_every_figure_of_a_gated_run(run, capsys):
    assert run("gate.yaml", "system.max_epochs=2", "train", "eval-all", "plot") == 0
    printed = capsys.readouterr().out
    expected = ["gates_conv0.png", "layer_costs.png", "training_curves.png", "accuracy_macs.png"]
    assert sorted(path.name for path in PLOTS.iterdir()) == sorted(expected)
    for name in expected:
        assert f"wrote {PLOTS / name}" in printed
        looks_drawn(PLOTS / name)


def test_a_plain_run_without_history_or_eval_all_says_what_it_cannot_draw(run, capsys):
    assert run("small.yaml", "system.checkpoint.load=null", "plot") == 0
    printed = capsys.readouterr().out
    assert "no training curves" in printed and "no accuracy-against-MACs figure" in printed
    directory = Path("plots/small/synthetic")
    assert [path.name for path in directory.iterdir()] == ["layer_costs.png"]
    looks_drawn(directory / "layer_costs.png")


def test_a_sweep_file_that_is_not_there_is_refused_before_any_work(run, capsys):
    assert run("small.yaml", "system.checkpoint.load=null", "system.plot.runs=[nowhere/eval_all.csv]",
               "plot") == 2
    assert "system.plot.runs" in capsys.readouterr().err
    assert not Path("plots").exists()


def test_the_heatmap_numbers_are_per_class_means_of_the_gate_decisions(run):
    from mayo_lite.cli import Runner
    from mayo_lite.session.actions.plot import gate_statistics

    assert run("gate.yaml", "train") == 0
    runner = Runner()
    runner.cfg.load("gate.yaml")
    session = runner.session()
    statistics, densities, count = gate_statistics(session, 2)
    layer = session.model.get_layer("conv0")
    rows = {}  # class -> list of (gamma·active, active) per image, computed image by image
    for images, labels in session.pipeline("validate").take(2):
        for image, label in zip(images.numpy(), labels.numpy()):
            gamma, active = (np.asarray(t)[0] for t in layer.compute_gate(image[None]))
            rows.setdefault(int(label), []).append((gamma * active, active))
    assert count == sum(len(values) for values in rows.values())
    gamma_means, kept_means = statistics["conv0"]
    for label, values in rows.items():
        np.testing.assert_allclose(gamma_means[label], np.mean([v[0] for v in values], axis=0), atol=1e-6)
        np.testing.assert_allclose(kept_means[label], np.mean([v[1] for v in values], axis=0), atol=1e-6)
    everything = np.concatenate([[v[1] for v in values] for values in rows.values()])
    assert densities["conv0"] == pytest.approx(everything.mean())
    assert densities["conv0"] == pytest.approx(0.5)  # density 0.5 of 8 channels: 4 kept by every image
