"""Every bad input is refused before any work, in one line that names the culprit, with exit status 2, and
nothing on disk changes: the user's run directory (a trained checkpoint) and the working directory are checked
byte for byte before and after each case."""

import hashlib
import json
import os
import zipfile

import numpy as np
import pytest

from mayo_lite.cli import main
from tests.synthetic import small_model, synthetic_dataset

MODEL = small_model("steady") + synthetic_dataset(channels=3, train=64, validate=32) + """
train:
  learning_rate: 0.05
  optimizer: {type: sgd, momentum: 0.9}
system: {batch_size_per_gpu: 16, max_epochs: 1, seed: 7}
"""
GATED = MODEL.replace("type: convolution, kernel_size: 3, num_outputs: 6, normalizer_fn: batch_norm",
                      "type: gated_convolution, kernel_size: 3, num_outputs: 6, normalizer_fn: batch_norm, "
                      "gate_params: {density: 0.5}").replace("name: steady", "name: steady_gate")


def _npz(path, **arrays):
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


def _huge_member(path):
    """A checkpoint whose one member's header declares a 40 GB array."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }"
    header = header + " " * (63 - (len(header) + 10) % 64) + "\n"
    data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/conv0/kernel.npy", data)
        archive.writestr("__epoch__.npy", b"")


# Files the cases use, written into the working directory before the protected snapshot is taken.
FILES = {
    "steady.yaml": MODEL,
    "gated.yaml": GATED,
    "syntax.yaml": "model: {name: x\n  layers: [",
    "python.yaml": "a: !!python/object/apply:os.system ['true']\n",
    "exec.yaml": "a: !exec print(1)\n",
    "eval.yaml": "a: !eval 1+1\n",
    "duplicate.yaml": "system:\n  max_epochs: 2\n  max_epochs: 3\n",
    "laughs.yaml": "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)),
    "deep.yaml": "a: " + "[" * 200 + "]" * 200 + "\n",
    "toplist.yaml": "- a\n- b\n",
    "cycle_a.yaml": "_import: cycle_b.yaml\n",
    "cycle_b.yaml": "_import: cycle_a.yaml\n",
    "missing_import.yaml": "_import: nowhere.yaml\n",
    "refcycle.yaml": "a: $(b)\nb: $(a)\nsystem: {max_epochs: $(a)}\n",
    "arith_escape.yaml": "system: {max_epochs: !arith \"__import__('os').getpid()\"}\n",
    "arith_attr.yaml": "system: {max_epochs: !arith \"(1).__class__\"}\n",
    "binary.yaml": b"\xff\xfe\x00garbage\x80\x81",
    "notes.txt": "a file where a directory should be",
    "big_kernel.yaml": MODEL.replace("kernel_size: 3", "kernel_size: 40, padding: valid"),
    "squeeze.yaml": MODEL.replace("pool: {type: reduce_mean, axis: [1, 2]}", "pool: {type: squeeze, axis: [1, 2]}"),
    "twice.yaml": MODEL.replace(
        "  graph: {from: input, with: [conv0, pool, logits], to: output}",
        "  graph: [{from: input, with: [conv0, pool], to: a}, {from: a, with: [pool, logits], to: output}]"),
    "unknown_type.yaml": MODEL.replace("type: reduce_mean", "type: reduce_meen"),
    "no_layers.yaml": "model: {name: empty, layers: {}, graph: {from: input, with: [], to: output}}\n"
                      + synthetic_dataset() + "train: {learning_rate: 0.1, optimizer: {type: sgd}}\n",
    "no_train.yaml": MODEL.replace("train:\n  learning_rate: 0.05\n  optimizer: {type: sgd, momentum: 0.9}\n", ""),
}


def _idx(path, array):
    """An IDX file of unsigned bytes (the MNIST format)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _idx_datasets(directory):
    """IDX files of the run's dataset (named `synthetic`, so the trained checkpoint is the one a command would load
    first): a truncated images file, too few labels, and images of the wrong size."""
    rng = np.random.default_rng(0)
    for name, (height, labels, cut) in {"truncated": (8, 32, True), "labels": (8, 30, False),
                                        "size": (6, 32, False)}.items():
        folder = directory / "idx" / name
        folder.mkdir(parents=True)
        for prefix in ("train", "t10k"):
            _idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (32 if prefix == "t10k" else 64,
                                                                                height, height, 3)))
            _idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 4, labels if prefix == "t10k" else 64))
            if cut:
                images = folder / f"{prefix}-images-idx3-ubyte"
                images.write_bytes(images.read_bytes()[:-100])
        (directory / f"idx_{name}.yaml").write_text(f"dataset: {{source: {{type: idx, path: idx/{name}}}}}\n")


def _checkpoints(directory):
    run = directory / "checkpoints/steady/synthetic"
    _npz(directory / "strings.npz", **{"model/conv0/kernel": np.array(["a", "b"]), "__epoch__": np.float64(1)})
    _npz(directory / "badepoch.npz", **{"__epoch__": np.zeros(3)})
    _npz(directory / "badmeta.npz", **{"__epoch__": np.float64(1), "__meta__": np.zeros(2)})
    _npz(directory / "shapes.npz", **{"model/conv0/kernel": np.zeros((5, 5, 3, 6), np.float32),
                                      "__epoch__": np.float64(1), "__meta__": np.array(json.dumps({}))})
    _huge_member(directory / "huge.npz")
    latest = (run / "latest.npz").read_bytes()
    (directory / "truncated.npz").write_bytes(latest[:len(latest) // 2])
    (directory / "text.npz").write_text("not a checkpoint")


LONG = "x" * 100_000

# (arguments, a fragment the one error line must contain); exit status 2 unless a third item says otherwise.
CASES = [
    # The command line itself.
    (["steady.yaml", "trian"], "did you mean train?"),
    (["nope.yaml", "info"], "nope.yaml: no such config file"),
    (["steady.yaml", "=5", "info"], "expected KEY.PATH=VALUE"),
    (["steady.yaml", "a..b=1", "info"], "empty key"),
    # YAML files.
    (["syntax.yaml", "info"], "syntax.yaml: line"),
    (["python.yaml", "info"], "builds Python objects"),
    (["exec.yaml", "info"], "runs code"),
    (["eval.yaml", "info"], "runs code"),
    (["duplicate.yaml", "info"], "duplicate key 'max_epochs' (first given on line 2)"),
    (["laughs.yaml", "info"], "laughs.yaml: more than"),
    (["deep.yaml", "info"], "nested deeper than"),
    (["toplist.yaml", "info"], "the top level must be a mapping"),
    (["cycle_a.yaml", "info"], "import cycle"),
    (["missing_import.yaml", "info"], "nowhere.yaml: no such file"),
    (["steady.yaml", "refcycle.yaml", "train"], "refcycle.yaml"),
    (["steady.yaml", "arith_escape.yaml", "train"], "arith_escape.yaml"),
    (["steady.yaml", "arith_attr.yaml", "train"], "arith_attr.yaml"),
    (["binary.yaml", "info"], "binary.yaml"),
    (["fifo.yaml", "info"], "fifo.yaml: is not a regular file"),
    (["zero.yaml", "info"], "zero.yaml: is not a regular file"),
    (["folder.yaml", "info"], "folder.yaml: is a directory"),
    (["steady.yaml", "model.name=$(nowhere)", "export"], "nowhere"),
    # The system section: unknown keys and values out of range, refused before the model is built.
    (["steady.yaml", "system.max_epoch=2", "train"], "did you mean system.max_epochs?"),
    (["steady.yaml", "system.checkpoint.sav.keep=1", "train"], "did you mean system.checkpoint.save?"),
    (["steady.yaml", "system.bench.image=3", "bench"], "did you mean system.bench.images?"),
    (["steady.yaml", "system.checkpoint.save.keep=-1", "train"], "system.checkpoint.save.keep"),
    (["steady.yaml", "system.checkpoint.save.keep=0", "train"], "system.checkpoint.save.keep"),
    (["steady.yaml", "system.checkpoint.save.keep=1.5", "train"], "system.checkpoint.save.keep"),
    (["steady.yaml", "system.checkpoint.save.interval=0.5", "train"], "system.checkpoint.save.interval"),
    (["steady.yaml", "system.checkpoint.save.interval=0", "train"], "system.checkpoint.save.interval"),
    (["steady.yaml", "system.checkpoint.save.interval=abc", "train"], "system.checkpoint.save.interval"),
    (["steady.yaml", "system.max_epochs=0", "train"], "system.max_epochs"),
    (["steady.yaml", "system.max_epochs=-1", "train"], "system.max_epochs"),
    (["steady.yaml", "system.max_epochs=.nan", "train"], "system.max_epochs"),
    (["steady.yaml", "system.max_epochs=.inf", "train"], "system.max_epochs"),
    (["steady.yaml", "system.max_epochs=abc", "train"], "system.max_epochs"),
    (["steady.yaml", "system.seed=-1", "train"], "system.seed"),
    (["steady.yaml", "system.seed=1099511627776", "train"], "system.seed"),
    (["steady.yaml", "system.seed=abc", "train"], "system.seed"),
    (["steady.yaml", "system.seed=1.5", "train"], "system.seed"),
    (["steady.yaml", "system.num_gpus=0", "train"], "system.num_gpus"),
    (["steady.yaml", "system.num_gpus=abc", "info"], "system.num_gpus"),
    (["steady.yaml", "system.batch_size_per_gpu=0", "train"], "system.batch_size_per_gpu"),
    (["steady.yaml", "system.batch_size_per_gpu=-3", "eval"], "system.batch_size_per_gpu"),
    (["steady.yaml", "system.strategy=foo", "train"], "system.strategy"),
    (["steady.yaml", "system.log.level=loud", "train"], "system.log.level"),
    (["steady.yaml", "system.pipeline.shuffle_buffer=-1", "train"], "system.pipeline.shuffle_buffer"),
    (["steady.yaml", "system.pipeline.shuffle_buffer=0", "train"], "system.pipeline.shuffle_buffer"),
    (["steady.yaml", "system.pipeline.cache=maybe", "train"], "system.pipeline.cache"),
    (["steady.yaml", "system.search_path.dataset=3", "train"], "system.search_path.dataset"),
    (["steady.yaml", "system.search_path.dataset=[1, 2]", "train"], "system.search_path.dataset"),
    (["steady.yaml", "system.info.plumbing=maybe", "info"], "system.info.plumbing"),
    (["steady.yaml", "system.info.density_batches=-1", "info"], "system.info.density_batches"),
    (["steady.yaml", "system.checkpoint.path=notes.txt", "train"], "notes.txt exists and is not a directory"),
    (["steady.yaml", "system.checkpoint.path=notes.txt/run", "train"], "notes.txt is a file"),
    (["steady.yaml", "system.checkpoint.path=/proc/mayo", "train"], "cannot write in /proc"),
    (["steady.yaml", "system.bench.images=0", "bench"], "system.bench.images"),
    (["steady.yaml", "system.bench.repeats=-1", "bench"], "system.bench.repeats"),
    (["steady.yaml", "system.bench.tflite=maybe", "bench"], "system.bench.tflite"),
    (["steady.yaml", "system.export.path=notes.txt", "export-model"], "system.export.path"),
    (["steady.yaml", f"system.log.level={LONG}", "info"], "characters)"),
    # Names that become file paths.
    (["steady.yaml", "dataset.name=..", "train"], "dataset.name"),
    (["steady.yaml", "dataset.name=../../elsewhere", "train"], "dataset.name"),
    (["steady.yaml", "model.name=a/b", "train"], "model.name"),
    (["steady.yaml", f"model.name={'m' * 300}", "train"], "model.name"),
    # The dataset description, refused before the checkpoint is loaded (steady.yaml names the file).
    (["steady.yaml", "dataset.num_examples_per_epoch.validate=0", "eval"], "dataset.num_examples_per_epoch.validate"),
    (["steady.yaml", "dataset.task.shape.height=-3", "info"], "dataset.task.shape.height"),
    (["steady.yaml", "dataset.task.num_classes=ten", "train"], "dataset.task.num_classes"),
    (["steady.yaml", "dataset.task.background_class.use=3", "eval"], "dataset.task.background_class.use"),
    (["steady.yaml", "dataset.source.seed=-1", "train"], "dataset.source.seed"),
    (["steady.yaml", "model.name=''", "info"], "model.name"),
    # The trainer.
    (["steady.yaml", "train.learning_rate=-1", "train"], "train.learning_rate"),
    (["steady.yaml", "train.learning_rate={type: cosine_decay, initial_learning_rate: abc, decay_steps: 3}",
      "train"], "train.learning_rate"),
    (["steady.yaml", "train.learning_rate={type: nonsense}", "train"], "train.learning_rate"),
    (["steady.yaml", "train.optimizer={type: nonsense}", "train"], "train.optimizer"),
    (["no_train.yaml", "train"], "no `train` section"),
    # A schedule's or optimizer's argument of the wrong type: named by its key and the override that set it.
    (["steady.yaml", "trainers/lenet5.yaml", "train.learning_rate.warmup_epochs=abc", "train"],
     "command line (train.learning_rate.warmup_epochs=abc): train.learning_rate.warmup_epochs: expected a number"),
    (["steady.yaml", "trainers/lenet5.yaml", "train.learning_rate.warmup_epochs=[1]", "train"],
     "train.learning_rate.warmup_epochs: expected a number"),
    (["steady.yaml", "trainers/lenet5.yaml", "train.learning_rate.warmup_epochs=-1", "train"],
     "train.learning_rate.warmup_epochs: expected a number"),
    (["steady.yaml", "trainers/lenet5.yaml", "train.learning_rate.staircase=maybe", "train"],
     "command line (train.learning_rate.staircase=maybe): train.learning_rate.staircase: expected true or false"),
    (["steady.yaml", "trainers/lenet5.yaml", "train.learning_rate.decay_rate=abc", "train"],
     "command line (train.learning_rate.decay_rate=abc): train.learning_rate.decay_rate: expected a number"),
    (["steady.yaml", "trainers/lenet5.yaml", "train.learning_rate._initial=abc", "train"],
     "command line (train.learning_rate._initial=abc): train.learning_rate._initial: expected a positive number"),
    (["steady.yaml", "train.learning_rate={type: piecewise_constant, boundaries: [1, x], values: [0.1, 0.01, 0.001]}",
      "train"], "train.learning_rate.boundaries.1: expected a number"),
    (["steady.yaml", "train.optimizer.weight_decay=abc", "train"],
     "command line (train.optimizer.weight_decay=abc): train.optimizer.weight_decay: expected a number"),
    (["steady.yaml", "train.optimizer.clipnorm=abc", "train"], "train.optimizer.clipnorm: expected a positive number"),
    (["steady.yaml", "train.optimizer.momentum=.nan", "train"], "train.optimizer.momentum: expected a number"),
    (["steady.yaml", "train.optimizer.nesterov=maybe", "train"], "train.optimizer.nesterov: expected true or false"),
    # Data files, found before the trained checkpoint is loaded (no "loaded checkpoint" line comes first).
    (["steady.yaml", "idx_truncated.yaml", "eval"], "t10k-images-idx3-ubyte: IDX file of shape (32, 8, 8, 3)"),
    (["steady.yaml", "idx_truncated.yaml", "train"], "train-images-idx3-ubyte: IDX file of shape (64, 8, 8, 3)"),
    (["steady.yaml", "idx_labels.yaml", "eval"], "32 images but 30 labels for the validate split"),
    (["steady.yaml", "idx_size.yaml", "eval"], "the validate images of synthetic are 6x6x3"),
    # Pruning and gates.
    (["steady.yaml", "prune.percent=1.5", "prune"], "prune.percent"),
    (["steady.yaml", "prune.granularity=pixel", "prune"], "prune.granularity"),
    (["steady.yaml", "prune.foo=1", "prune"], "unknown key foo"),
    (["steady.yaml", "prune.schedule={type: constant}", "train"], "prune.schedule"),
    (["steady.yaml", "prune.schedule={type: polynomial, initial: 0.5, final: 2}", "train"], "prune.schedule"),
    (["gated.yaml", "model.layers.conv0.gate_params.density=.nan", "info"], "gate_params.density"),
    (["gated.yaml", "model.layers.conv0.gate_params.density=0", "info"], "gate_params.density"),
    (["gated.yaml", "model.layers.conv0.gate_params.policy=bogus", "info"], "gate_params.policy"),
    (["gated.yaml", "model.layers.conv0.gate_params.norm=channel", "bench"], "needs norm: batch"),
    # Models that cannot be built.
    (["big_kernel.yaml", "info"], "big_kernel.yaml: model.layers.conv0: Computed output size"),
    (["squeeze.yaml", "info"], "squeeze.yaml: model.layers.pool: Invalid value received for argument `axis`"),
    (["twice.yaml", "info"], "is used twice"),
    (["unknown_type.yaml", "info"], "did you mean reduce_mean?"),
    (["no_layers.yaml", "train"], "no layer between `input` and `output`"),
    # Checkpoints.
    (["steady.yaml", "system.checkpoint.load=nope", "eval"], "no checkpoint"),
    (["steady.yaml", "system.checkpoint.load=text.npz", "eval"], "text.npz: not a readable"),
    (["steady.yaml", "system.checkpoint.load=truncated.npz", "eval"], "truncated.npz: not a readable"),
    (["steady.yaml", "system.checkpoint.load=huge.npz", "eval"], "huge.npz: not a readable"),
    (["steady.yaml", "system.checkpoint.load=strings.npz", "eval"], "strings.npz: not a readable"),
    (["steady.yaml", "system.checkpoint.load=badepoch.npz", "eval"], "badepoch.npz: not a readable"),
    (["steady.yaml", "system.checkpoint.load=badmeta.npz", "eval"], "badmeta.npz: not a readable"),
    (["steady.yaml", "system.checkpoint.load=shapes.npz", "eval"], "has shape (5, 5, 3, 6) in the checkpoint"),
    (["steady.yaml", "system.checkpoint.load=-3", "eval"], "system.checkpoint.load"),
]


def _snapshot(directory):
    """Path -> content hash of everything under `directory` (directories too, as themselves)."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_fifo():
            found[str(path)] = "fifo"
        elif path.is_file() and not path.is_symlink():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[str(path)] = "directory" if path.is_dir() else "link"
    return found


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    """A working directory with a trained run in it, and the files the cases read."""
    directory = tmp_path_factory.mktemp("protected")
    previous = os.getcwd()
    os.chdir(directory)
    try:
        for name, content in FILES.items():
            (directory / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        assert main(["steady.yaml", "train"]) == 0
        _checkpoints(directory)
        _idx_datasets(directory)
        os.mkfifo(directory / "fifo.yaml")
        (directory / "zero.yaml").symlink_to("/dev/zero")
        (directory / "folder.yaml").mkdir()
    finally:
        os.chdir(previous)
    return directory


def test_there_are_at_least_eighty_cases():
    assert len(CASES) >= 80


@pytest.mark.parametrize("arguments, culprit", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_a_bad_input_is_one_line_exit_2_and_changes_nothing(protected, arguments, culprit, monkeypatch, capsys):
    monkeypatch.chdir(protected)
    before = _snapshot(protected)
    capsys.readouterr()
    status = main(arguments)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("my: "), lines
    assert culprit in lines[0], lines[0]
    assert len(lines[0]) <= 500
    assert "Traceback" not in captured.err and captured.out == ""
    assert _snapshot(protected) == before


def test_labels_outside_the_classes_are_a_data_error_naming_the_dataset(protected, monkeypatch, capsys):
    """Found only when the data is read (the labels are not scanned ahead), but still one error line, exit 2."""
    monkeypatch.chdir(protected)
    before = _snapshot(protected)
    assert main(["steady.yaml", "datasets/fashion_mnist.yaml", "dataset.task.num_classes=5",
                 "system.checkpoint.load=null", "eval"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("my: error: dataset fashion_mnist: a validate label is outside [0, num_classes)"), last
    assert _snapshot(protected) == before
