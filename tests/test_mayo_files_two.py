"""Mayo's own files, round two: what a Mayo user's gated models, dataset files and other files meet here — Mayo-style
YAML the tests write themselves, one behaviour each."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Mayo's datasets/mnist.yaml: no `source` (Mayo read TFRecords from its own folders), a task type.
MAYO_MNIST = """
dataset:
    name: mnist
    task:
        type: mayo.task.image.Classify
        num_classes: 10
        background_class: {has: false}
        shape: {height: 28, width: 28, channels: 1}
        preprocess: {train: []}
    path: {train: mnist/train.tfrecord, validate: mnist/test.tfrecord, labels: mnist/labels.txt}
    num_examples_per_epoch: {train: 60000, validate: 10000}
"""
# Mayo's datasets/voc.yaml, shortened: the detection task of its YOLO models.
MAYO_VOC = MAYO_MNIST.replace("mayo.task.image.Classify", "mayo.task.image.YOLOv2").replace("name: mnist", "name: voc")
# Mayo's models/plot/lenet5.yaml: settings of Mayo's plotting command.
MAYO_PLOT = "visualize: {model_name: lenet5, layers: [conv0, conv1], image_cnt: 100}\n"


def test_a_gated_model_on_a_dataset_without_source_counts_nominal_densities(workspace, capsys):
    run = workspace({"mnist.yaml": MAYO_MNIST})
    assert run(str(ROOT / "configs/models/gate/lenet5.yaml"), "mnist.yaml", "_gate.density=0.5", "info") == 0
    out = capsys.readouterr().out
    assert "nominal gate densities: the dataset names no source to measure them on" in out
    assert "model lenet5_gate on mnist" in out


def test_mayos_detection_task_is_refused_in_one_line_naming_it(workspace, capsys):
    run = workspace({"voc.yaml": MAYO_VOC})
    assert run(str(ROOT / "configs/models/lenet5.yaml"), "voc.yaml", "info") == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "voc.yaml: dataset.task.type: mayo.task.image.YOLOv2" in lines[0]
    assert "detection" in lines[0] and "out of scope" in lines[0] and captured.out == ""


def test_a_plot_file_is_not_a_model_and_says_so(workspace, capsys):
    run = workspace({"plot.yaml": MAYO_PLOT, "mnist.yaml": MAYO_MNIST})
    assert run("plot.yaml", "mnist.yaml", "info") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "plot.yaml: visualize: Mayo's plotting settings, not a model" in lines[0]
    assert run("mnist.yaml", "info") == 2
    assert "no model: no file given defines `model`" in capsys.readouterr().err
