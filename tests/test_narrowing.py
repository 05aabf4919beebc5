"""A channel-pruned network made really narrower (`mayo_lite.net.narrow_model`): same outputs as the masked model,
the MACs of the narrower widths counted independently, and nothing removed that still carries a signal."""

import numpy as np

from mayo_lite.config import Config
from mayo_lite.models.narrowing import kept_channels
from mayo_lite.net import model_cost, narrow_model
from mayo_lite.prune import prune_model
from mayo_lite.session.session import Session

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def slim_session():
    cfg = Config()
    cfg.load(str(ROOT / "configs/models/cifarnet_slim.yaml"))
    cfg.load(str(ROOT / "configs/datasets/fashion_mnist.yaml"))
    cfg.override("prune.percent=0.3")
    session = Session(cfg)
    rng = np.random.default_rng(0)
    for layer in session.model.layers:  # batch norms that do something
        if layer.name.endswith(".bn"):
            shape = layer.gamma.shape
            layer.gamma.assign(rng.normal(size=shape))
            layer.beta.assign(rng.normal(size=shape))
            layer.moving_mean.assign(rng.normal(size=shape) * 0.1)
            layer.moving_variance.assign(rng.uniform(0.5, 2, size=shape))
    return session


def conv_macs(widths, input_channels=1):
    """M-CifarNet's convolution MACs on 28×28 images from its widths: conv0 valid (26×26), conv2 and conv5 stride
    2 (13×13, 7×7), 3×3 kernels, then the 1×1 logits on the pooled vector."""
    sizes = [26, 26, 13, 13, 13, 7, 7, 7]
    total, previous = 0, input_channels
    for size, width in zip(sizes, widths):
        total += size * size * 9 * previous * width
        previous = width
    return total + previous * 10


def test_a_channel_pruned_network_narrows_to_the_same_outputs():
    session = slim_session()
    prune_model(session.model, percent=0.4, granularity="channel", layers=["conv*"])
    gammas = {layer.name[:-3]: layer.gamma.numpy() for layer in session.model.layers if layer.name.endswith(".bn")}
    narrow = narrow_model(session.model, session.model_spec, session.input_shape(), origin=session.cfg.origin)
    kept = kept_channels(session.model)
    # The channels kept are exactly those whose batch-norm scale survived, layer by layer.
    for name, indices in kept.items():
        np.testing.assert_array_equal(indices, np.flatnonzero(gammas[name] != 0))
    widths = [narrow.get_layer(f"conv{i}").filters for i in range(8)]
    assert widths == [int(np.count_nonzero(gammas[f"conv{i}"])) for i in range(8)]
    assert sum(widths) < sum(gamma.size for gamma in gammas.values())
    assert "Masked" not in " ".join(type(layer).__name__ for layer in narrow.layers)

    images = np.random.default_rng(1).random((8, 28, 28, 1)).astype(np.float32)
    masked, narrowed = np.asarray(session.model(images)), np.asarray(narrow(images))
    np.testing.assert_allclose(narrowed, masked, atol=1e-5 * np.abs(masked).max())

    # The narrow network's MACs are its widths' (input channels removed too), below what the masks alone count.
    cost = model_cost(narrow).total
    assert cost["macs"] == conv_macs(widths)
    assert cost["macs"] < model_cost(session.model).total["effective_macs"]


def test_filter_pruning_keeps_channels_whose_output_is_a_constant():
    """Filter pruning zeroes a kernel column but leaves the batch norm's beta: the channel outputs relu(beta), which
    the next layer needs, so nothing is removed."""
    session = slim_session()
    prune_model(session.model, percent=0.4, granularity="filter")
    assert kept_channels(session.model) == {}
    assert narrow_model(session.model, session.model_spec, session.input_shape()) is None


def test_a_graph_that_joins_branches_is_not_narrowed():
    spec = {"name": "joined", "layers": {"a": {"type": "convolution", "num_outputs": 4, "kernel_size": 1}},
            "graph": [{"from": "input", "with": ["a"], "to": "x"}, {"from": ["x", "input"], "with": {"type": "add"},
                                                                     "to": "output"}]}
    session = slim_session()
    assert narrow_model(session.model, spec, session.input_shape()) is None

