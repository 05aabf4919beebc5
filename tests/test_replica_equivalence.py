"""Two replicas compute the training step one device computes on the same global batch.

Each case runs in a subprocess that splits the CPU into two logical devices before TensorFlow's first operation,
builds the same model twice from one config (`system.num_gpus=1` with 16 examples a batch, `system.num_gpus=2` with 8
per replica), gives both the same weights, and drives the session's own training step (`Loops`) with the same global
batches: every variable, optimizer state included, must agree within 1e-5 after the first step and after the
others. Checkpoints written with two replicas load with one and the other way round, through the runner.

Batch normalisation is the one legitimate difference: Keras' `BatchNormalization` and the gates' `norm: batch`
normalise each replica's share by that share's own mean and variance (no synchronised batch norm), so a two-replica
step equals the one-device step only when the shares have the statistics of the whole batch (tested with a batch made
of one half twice). Otherwise the weights differ (about 2e-3 after one step here); the moving means still equal one
device's (the mean of equal shares' means is the batch mean), and the moving variances fall short of it by
`(1 - momentum) · mean over replicas of (share mean - batch mean)²`, the variance between the shares, which the
replicas do not see.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mayo_lite.weights.checkpoint import read
from tests.synthetic import synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5
GLOBAL_BATCH = 16
# Two replicas on the CPU on every machine: with a GPU, `system.num_gpus=2` would mean that GPU alone.
ENVIRONMENT = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "-1"}

TRAINER = """train:
  learning_rate: 0.1
  optimizer: {type: sgd, momentum: 0.9}
system: {batch_size_per_gpu: 16, max_epochs: 1, seed: 1}
"""


def model(name, conv, extra=""):
    """A `model:` section with two 3×3 convolutions of type `conv` (YAML flow-mapping keys, without braces)."""
    return f"""
model:
  name: {name}
  layers:
    conv0: {{{conv}, kernel_size: 3, num_outputs: 6}}
    conv1: {{{conv}, kernel_size: 3, num_outputs: 5, stride: 2}}
    pool: {{type: reduce_mean, axis: [1, 2]}}
    logits: {{type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}}
  graph: {{from: input, with: [conv0, conv1, pool, logits], to: output}}
{extra}"""


DATA = synthetic_dataset(channels=3, train=64, validate=32) + TRAINER
PLAIN = model("plain", "type: convolution") + DATA
MASKED = model("masked", "type: convolution", "prune: {}\n") + DATA
# `norm: channel` (each image's own moments) keeps batch statistics out of the gated cases.
GATED = model("gated", "type: gated_convolution, normalizer_fn: batch_norm, gate_params: $(_gate)",
              "_gate: {density: 0.5, norm: channel}\n") + DATA
BATCH_NORM = model("batch_norm", "type: convolution, normalizer_fn: batch_norm") + DATA
GATED_BATCH_NORM = model("gated_batch_norm", "type: gated_convolution, normalizer_fn: batch_norm, gate_params: "
                         "$(_gate)", "_gate: {density: 0.5, norm: batch}\n") + DATA

# Run in a fresh interpreter: logical devices can be configured only before TensorFlow's first operation.
PROGRAM = r'''
import json, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np
from mayo_lite.config import Config
from mayo_lite.session.session import Session

def session(replicas):
    cfg = Config()
    cfg.load(case["config"])
    for override in case.get("overrides", []) + [f"system.num_gpus={replicas}",
                                                  f"system.batch_size_per_gpu={case['batch'] // replicas}"]:
        cfg.override(override)
    return Session(cfg)


def values(session):
    return {name: variable.numpy() for name, variable in session.variables().items()}


def differences(first, second):
    return {name: float(np.max(np.abs(first[name] - second[name]), initial=0.0)) for name in first}


def spread(session):
    """Per variable, how far its replicas' copies are apart."""
    found = {}
    for name, variable in session.variables().items():
        copies = [np.asarray(copy.numpy()) for copy in
                  session.strategy.experimental_local_results(getattr(variable, "value", variable))]
        found[name] = max(float(np.max(np.abs(copy - copies[0]), initial=0.0)) for copy in copies)
    return found


def distributed(strategy, batch):
    dataset = tf.data.Dataset.from_tensor_slices(batch).batch(int(batch[1].shape[0]))
    return next(iter(strategy.experimental_distribute_dataset(dataset)))


def steps():
    one, two = session(1), session(2)
    if case.get("prune"):  # half the weights of every masked layer pruned, as `prune` leaves them
        generator = np.random.default_rng(0)
        for name, variable in one.variables().items():
            if name.endswith("/mask"):
                mask = (generator.random(variable.shape) < 0.5).astype("float32")
                variable.assign(mask)
                kernel = one.variables()[name.rsplit("/", 1)[0] + "/kernel"]
                kernel.assign(kernel.numpy() * mask)
    start = values(one)
    for name, variable in two.variables().items():
        variable.assign(start[name])
    batches = list(one.pipeline("train", 0).take(case["steps"]))
    if case.get("identical_halves"):
        half = case["batch"] // 2
        batches = [tuple(tf.concat([part[:half], part[:half]], 0) for part in batch) for batch in batches]
    if case.get("shift_second_half"):  # shares of clearly different statistics
        half = case["batch"] // 2
        batches = [(tf.concat([images[:half], images[half:] + case["shift_second_half"]], 0), labels)
                   for images, labels in batches]
    report = {"steps": [], "masks": {}}
    if case.get("batch_norm"):  # the first batch norm's input, for its expected moving statistics
        layer = one.model.get_layer(case["batch_norm"])
        inputs = keras.Model(one.model.inputs, layer.input)(batches[0][0]).numpy().astype("float64")
        halves = np.split(inputs, 2)
        momentum = layer.momentum
        mean = momentum * start[f"model/{layer.name}/moving_mean"] + (1 - momentum) * inputs.mean(axis=(0, 1, 2))
        variance = start[f"model/{layer.name}/moving_variance"]
        report["batch_norm"] = {
            "mean": mean.tolist(),
            "one": (momentum * variance + (1 - momentum) * inputs.var(axis=(0, 1, 2))).tolist(),
            "two": (momentum * variance + (1 - momentum) * np.mean([h.var(axis=(0, 1, 2)) for h in halves], 0)
                    ).tolist()}
    step_one, step_two = one.loops._build_train_step(), two.loops._build_train_step()
    for batch in batches:
        first = [float(value) for value in step_one(distributed(one.strategy, batch))]
        second = [float(value) for value in step_two(distributed(two.strategy, batch))]
        report["steps"].append({"results": [first, second], "differences": differences(values(one), values(two)),
                                "batch": int(batch[1].shape[0])})
    report["one"] = {name: value.tolist() for name, value in values(one).items() if value.size <= 64}
    report["two"] = {name: value.tolist() for name, value in values(two).items() if value.size <= 64}
    report["spread"] = spread(two)
    for name, value in values(two).items():
        if name.endswith("/mask"):
            kernel = values(two)[name.rsplit("/", 1)[0] + "/kernel"]
            report["masks"][name] = float(np.max(np.abs(kernel * (1 - value)), initial=0.0))
    return report


def train_and_evaluate():
    """Two replicas train an epoch and evaluate; one device evaluates the same weights."""
    two = session(2)
    two.loops.train(1)
    result = {"epoch": two.epoch.value, "two": two.loops.evaluate(progress=False), "spread": spread(two)}
    one = session(1)
    trained = values(two)
    for name, variable in one.variables().items():
        variable.assign(trained[name])
    result["one"] = one.loops.evaluate(progress=False)
    return result


def evaluate():
    """The checkpoint `latest` evaluated with one replica and with two."""
    return {str(replicas): session(replicas).loops.evaluate(progress=False) for replicas in (1, 2)}


# One case, or several in one interpreter (each builds its own sessions from its own config, seeded).
for name, case in json.loads(sys.argv[1]).items():
    try:
        report = {"steps": steps, "train_and_evaluate": train_and_evaluate, "evaluate": evaluate}[case["mode"]]()
    except Exception:
        import traceback
        report = {"error": traceback.format_exc()[-3000:]}
    print("REPORT " + json.dumps({"name": name, "report": report}), flush=True)
'''


def run_cases(directory, cases):
    """Runs PROGRAM once on `cases` ({name: (config text, case settings)}) in `directory`: {name: report}."""
    specs = {}
    for number, (name, (text, options)) in enumerate(cases.items()):
        (directory / f"case{number}.yaml").write_text(text)
        specs[name] = {"config": f"case{number}.yaml", "mode": "steps", "batch": GLOBAL_BATCH, "steps": 3, **options}
    result = subprocess.run([sys.executable, "-c", PROGRAM, json.dumps(specs)], cwd=directory, capture_output=True,
                            text=True, timeout=900, env=ENVIRONMENT)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = {}
    for line in result.stdout.splitlines():
        if line.startswith("REPORT "):
            found = json.loads(line.removeprefix("REPORT "))
            reports[found["name"]] = found["report"]
    assert sorted(reports) == sorted(cases), result.stderr[-3000:]
    return reports


def run_case(tmp_path, text, mode="steps", **options):
    """Runs PROGRAM on config `text` in `tmp_path`, in a fresh interpreter of its own; returns its report."""
    return case(run_cases(tmp_path, {"case": (text, {"mode": mode, **options})}), "case")


# The cases of the tests below, run together in one interpreter (starting TensorFlow once, not once a case): each
# builds its own two sessions, one device and two replicas, from its own config file and seed.
THRESHOLD = ["_gate.threshold=global", "_gate.decay=0.5"]
CASES = {
    "plain": (PLAIN, {}),
    "pruned": (MASKED, {"prune": True}),
    "gated": (GATED, {}),
    **{f"threshold-{threshold}": (GATED, {"overrides": [f"_gate.threshold={threshold}", "_gate.decay=0.5"]})
       for threshold in ("global", "local")},
    **{f"regularizer-{regularizer}": (GATED, {"overrides": [f"_gate.regularizer={regularizer}", *THRESHOLD]})
       for regularizer in ("{l1: 0.01}", "{l2: 0.05}", "{moe: 0.5, moi: 0.5}")},
    "weight-penalty": (GATED, {"overrides": ["model.layers.logits.weights_regularizer={type: l2, l2: 0.1}"]}),
    "uneven": (GATED, {"steps": 5, "overrides": ["dataset.num_examples_per_epoch.train=67",
                                                 "_gate.regularizer={l1: 0.01, moi: 0.5}", *THRESHOLD]}),
    "batch-norm-keras": (BATCH_NORM, {"identical_halves": True}),
    "batch-norm-gated": (GATED_BATCH_NORM, {"identical_halves": True}),
    # Momentum 0 (the moving statistics are the last batch's) and the second share's images shifted by 1: the
    # variance between the shares stands out.
    "batch-norm-shares": (BATCH_NORM, {"steps": 1, "batch_norm": "conv0.bn", "shift_second_half": 1.0,
                                       "overrides": ["model.layers.conv0.normalizer_params={momentum: 0.0}"]}),
    "no-empty-replica": (GATED_BATCH_NORM, {"mode": "train_and_evaluate", "overrides": [
        "dataset.num_examples_per_epoch.train=65", "dataset.num_examples_per_epoch.validate=33",
        "_gate.threshold=global"]}),
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return run_cases(tmp_path_factory.mktemp("replicas"), CASES)


def case(reports, name):
    """The report of case `name`, which ran without an error."""
    found = reports[name]
    assert "error" not in found, found.get("error")
    return found


def assert_same_steps(report, steps=3):
    assert len(report["steps"]) == steps
    for number, step in enumerate(report["steps"], start=1):
        worst = max(step["differences"], key=step["differences"].get)
        assert step["differences"][worst] <= TOLERANCE, (number, worst, step["differences"][worst])
        # loss sum, top-1, top-5, count, density, total loss (regularisation included)
        np.testing.assert_allclose(step["results"][1], step["results"][0], rtol=1e-5, atol=1e-5)
    assert max(report["spread"].values()) == 0.0, "the replicas' copies of a variable differ"


def test_a_plain_model_steps_as_on_one_device(reports):
    report = case(reports, "plain")
    assert_same_steps(report)


def test_a_pruned_model_steps_as_on_one_device_and_pruned_weights_stay_zero(reports):
    report = case(reports, "pruned")
    assert_same_steps(report)
    assert report["masks"] and max(report["masks"].values()) == 0.0


def test_a_gated_model_with_online_thresholds_steps_as_on_one_device(reports):
    report = case(reports, "gated")
    assert_same_steps(report)


@pytest.mark.parametrize("threshold", ["global", "local"])
def test_a_moving_threshold_has_one_value_the_one_device_value(reports, threshold):
    """Replicas trace the step through the same layer objects; each must move the threshold with its own gammas, and
    all must move it by the mean over the global batch."""
    report = case(reports, f"threshold-{threshold}")
    assert_same_steps(report)
    names = [name for name in report["two"] if name.endswith("/threshold")]
    assert names == (["model/global_threshold/threshold"] if threshold == "global" else
                     ["model/conv0/threshold", "model/conv1/threshold"])
    for name in names:
        assert report["two"][name] != pytest.approx(-0.1)  # it moved
        assert report["two"][name] == pytest.approx(report["one"][name], abs=1e-6)
        assert report["spread"][name] == 0.0


@pytest.mark.parametrize("regularizer", ["{l1: 0.01}", "{l2: 0.05}", "{moe: 0.5, moi: 0.5}"])
def test_gate_regularisers_count_once_over_the_global_batch(reports, regularizer):
    """`l1` sums |gamma · active| over the batch: each replica's share alone would count half of it."""
    report = case(reports, f"regularizer-{regularizer}")
    assert_same_steps(report)
    loss, total = report["steps"][0]["results"][1][0] / GLOBAL_BATCH, report["steps"][0]["results"][1][5]
    assert total - loss > 1e-3  # the regularisation is in the total, and counted as one device counts it
    assert total == pytest.approx(report["steps"][0]["results"][0][5], rel=1e-6)


def test_a_weight_penalty_counts_once(reports):
    report = case(reports, "weight-penalty")
    assert_same_steps(report)


def test_a_last_batch_split_unevenly_weighs_every_example_alike(reports):
    """67 examples: the fifth batch holds 3, two for the first replica and one for the second."""
    report = case(reports, "uneven")
    assert [step["batch"] for step in report["steps"]] == [16, 16, 16, 16, 3]
    assert_same_steps(report, steps=5)


@pytest.mark.parametrize("kind", ["keras", "gated"])
def test_batch_norm_steps_as_on_one_device_when_the_shares_have_the_batch_statistics(reports, kind):
    report = case(reports, f"batch-norm-{kind}")
    assert_same_steps(report)


def test_batch_norm_normalises_each_replica_by_its_own_share(reports):
    """The legitimate difference (see the module's docstring), pinned: the weights differ, the first batch norm's
    moving mean is one device's, its moving variance lacks the variance between the shares, and the replicas keep
    one copy of the moving statistics (the step averages them)."""
    report = case(reports, "batch-norm-shares")
    step = report["steps"][0]
    assert step["differences"]["model/conv0/kernel"] > 1e-4
    expected = report["batch_norm"]
    np.testing.assert_allclose(report["one"]["model/conv0.bn/moving_mean"], expected["mean"], atol=1e-6)
    np.testing.assert_allclose(report["two"]["model/conv0.bn/moving_mean"], expected["mean"], atol=1e-6)
    np.testing.assert_allclose(report["one"]["model/conv0.bn/moving_variance"], expected["one"], rtol=1e-5)
    np.testing.assert_allclose(report["two"]["model/conv0.bn/moving_variance"], expected["two"], rtol=1e-5)
    assert np.all(np.array(expected["one"]) - np.array(expected["two"]) > 1e-2 * np.array(expected["one"]))
    assert max(report["spread"].values()) == 0.0


def test_no_replica_is_left_an_empty_batch(reports):
    """65 training and 33 validation examples: a last batch of one would leave the second replica none (TensorFlow's
    CPU convolutions fail on an empty batch); it joins the batch before it. Evaluation still counts every example,
    and one device evaluates the trained weights to the same figures."""
    report = case(reports, "no-empty-replica")
    assert report["epoch"] == 1.0
    assert max(report["spread"].values()) == 0.0
    one, two = report["one"], report["two"]
    assert one["examples"] == two["examples"] == 33
    for key in ("top1", "top5", "loss", "density"):
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
    for name, density in one["layer_densities"].items():
        assert two["layer_densities"][name] == pytest.approx(density, abs=1e-6)


def my(directory, *arguments):
    result = subprocess.run([str(ROOT / "my"), "model.yaml", *arguments], cwd=directory, capture_output=True,
                            text=True, timeout=300, env=ENVIRONMENT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def replicas(count):
    return [f"system.num_gpus={count}", f"system.batch_size_per_gpu={GLOBAL_BATCH // count}"]


def test_checkpoints_move_between_one_and_two_replicas(tmp_path):
    """Through the runner, with a seed and no random preprocessing: two epochs on one device, on two replicas then
    one, and on one then two, end with the same weights; the checkpoint two replicas wrote evaluates alike on one
    device and on two. 67 examples: each epoch ends with a batch of 3, split unevenly."""
    text = GATED.replace("train: 64", "train: 67").replace("validate: 32", "validate: 33")
    settings = ["_gate.threshold=global", "_gate.decay=0.5", "_gate.regularizer={l1: 0.01}"]
    runs = {}
    for order in [(1, 1), (2, 1), (1, 2)]:
        directory = tmp_path / "-".join(map(str, order))
        if order != (1, 2):  # (1, 2)'s first epoch is (1, 1)'s, on one device: copied there, not trained again
            directory.mkdir()
            (directory / "model.yaml").write_text(text)
        for epoch, count in enumerate(order, start=1):
            if order == (1, 2) and epoch == 1:
                continue
            result = my(directory, *settings, *replicas(count), f"system.max_epochs={epoch}", "train")
            if order == (1, 1) and epoch == 1:
                shutil.copytree(directory, tmp_path / "1-2")
            if count == 2:
                assert "2 replicas under MirroredStrategy" in result.stderr
            if (epoch, count) == (1, 2):
                report = run_case(directory, text, mode="evaluate", overrides=[
                    *settings, "system.checkpoint.load=latest"])
                assert report["1"]["examples"] == report["2"]["examples"] == 33
                for key in ("top1", "top5", "loss", "density"):
                    assert report["2"][key] == pytest.approx(report["1"][key], abs=1e-6), key
        runs[order], epoch, _ = read(directory / "checkpoints" / "gated" / "synthetic" / "latest.npz")
        assert epoch == 2.0
    reference = runs[(1, 1)]
    for order in [(2, 1), (1, 2)]:
        assert sorted(runs[order]) == sorted(reference)
        worst = max(reference, key=lambda name: np.max(np.abs(runs[order][name] - reference[name]), initial=0.0))
        assert np.max(np.abs(runs[order][worst] - reference[worst]), initial=0.0) <= TOLERANCE, (order, worst)
