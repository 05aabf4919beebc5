"""The small synthetic dataset that the end-to-end tests train on: nothing to download, seconds per epoch."""


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
