"""The small synthetic dataset and model that the end-to-end tests train on: nothing to download, seconds per epoch."""


def synthetic_dataset(channels=3, train=64, validate=32):
    """A `dataset:` section of random 8×8 images in 4 classes, as YAML text."""
    return f"""
dataset:
  name: synthetic
  source: {{type: synthetic}}
  task:
    num_classes: 4
    background_class: {{use: false}}
    shape: {{height: 8, width: 8, channels: {channels}}}
    preprocess: {{train: null, validate: null, final_cpu: null, final_gpu: null}}
  num_examples_per_epoch: {{train: {train}, validate: {validate}}}
"""


def small_model(name, num_outputs=6, keep_prob=None):
    """A `model:` section, as YAML text: one batch-normalised 3×3 convolution, a dropout layer when `keep_prob` is
    given, a global mean and the logits."""
    dropout = f"\n    dropout: {{type: dropout, keep_prob: {keep_prob}}}" if keep_prob is not None else ""
    chain = "conv0, dropout, pool, logits" if keep_prob is not None else "conv0, pool, logits"
    return f"""
model:
  name: {name}
  layers:
    conv0: {{type: convolution, kernel_size: 3, num_outputs: {num_outputs}, normalizer_fn: batch_norm}}{dropout}
    pool: {{type: reduce_mean, axis: [1, 2]}}
    logits: {{type: fully_connected, num_outputs: $(dataset.task.num_classes), activation_fn: null}}
  graph: {{from: input, with: [{chain}], to: output}}
"""
