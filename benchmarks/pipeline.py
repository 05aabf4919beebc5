"""Images per second of the ImageNet input pipeline against images per second of the training step it feeds.

The pipeline is the session's own training pipeline for configs/datasets/imagenet.yaml (read shards, shuffle, decode
JPEGs, distort_bbox, random_flip, linear_map, batch), timed over `--batches` batches from slim-style TFRecord shards
that the script writes into a temporary directory (JPEGs of ImageNet's typical sizes and file sizes), or from the
`train-*` shards of `--data DIR`. The training step is the session's step on in-memory batches of the same shape
(benchmarks/train_step.py). A ratio pipeline / training above 1 means decoding keeps up with training. Both use
every CPU core, one after the other; training from the pipeline shares the cores between them.

    .venv/bin/python benchmarks/pipeline.py [--model models/mobilenet.yaml] [--resolution 224] [--batch 32]
        [--batches 20] [--steps 5] [--data DIR] [--shards 4] [--per-shard 64] [--distort-color]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from train_step import batches, time_custom_loop  # noqa: E402

from mayo_lite.cli import Runner  # noqa: E402

# ILSVRC2012 training images: about 400x350 pixels on average, JPEG files of about 110 KB.
IMAGE_SIDES = (300, 500)


def photo_like(generator, height, width):
    """Smooth colour fields with a little grain: JPEG sizes near real photographs', unlike pure noise."""
    coarse = generator.random((1, 12, 12, 3), dtype=np.float32) * 255
    smooth = tf.image.resize(coarse, [height, width], method="bicubic")[0].numpy()
    grain = generator.normal(0, 30, (height, width, 3))
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def write_shards(directory, num_shards, per_shard, seed=0):
    """slim-style shards train-0000i-of-0000n, every other image with one object box; returns the mean JPEG size."""
    generator = np.random.default_rng(seed)
    sizes = []
    for shard in range(num_shards):
        with tf.io.TFRecordWriter(os.path.join(directory, f"train-{shard:05d}-of-{num_shards:05d}")) as writer:
            for index in range(per_shard):
                height, width = (int(side) for side in generator.integers(*IMAGE_SIDES, 2))
                encoded = tf.io.encode_jpeg(photo_like(generator, height, width), quality=90).numpy()
                sizes.append(len(encoded))
                box = [0.1, 0.15, 0.8, 0.9] if index % 2 == 0 else []
                features = {
                    "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                    "image/class/label": tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[int(generator.integers(1, 1001))])
                    ),
                }
                for position, side in enumerate(("ymin", "xmin", "ymax", "xmax")):
                    features[f"image/object/bbox/{side}"] = tf.train.Feature(
                        float_list=tf.train.FloatList(value=[box[position]] if box else [])
                    )
                writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    return sum(sizes) / len(sizes)


def imagenet_session(model, data, resolution, batch, distort_color):
    runner = Runner()
    for path in (model, "datasets/imagenet.yaml", "trainers/mobilenet.yaml"):
        runner.cfg.load(path)
    runner.cfg.set("dataset.path.train", os.path.join(data, "train-*"))
    runner.cfg.set("dataset.task.shape.height", resolution)
    runner.cfg.set("dataset.task.shape.width", resolution)
    if distort_color:
        steps = runner.cfg.get("dataset.task.preprocess.train")
        runner.cfg.set("dataset.task.preprocess.train", steps + [{"type": "distort_color"}])
    runner.cfg.set("system.batch_size_per_gpu", batch)
    runner.cfg.set("system.checkpoint.load", None)
    runner.cfg.set("system.seed", 0)
    return runner.session()


def pipeline_images_per_second(session, num_batches, batch):
    """Decoded, augmented images per second over `num_batches` batches, after two to warm up (tracing, the first
    fill of the shuffle buffer)."""
    iterator = iter(session.pipeline("train").repeat())
    for _ in range(2):
        next(iterator)
    start = time.perf_counter()
    for _ in range(num_batches):
        images, _ = next(iterator)
    elapsed = time.perf_counter() - start
    assert images.shape[0] == batch
    return num_batches * batch / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/mobilenet.yaml")
    parser.add_argument("--resolution", type=int, default=224, help="height and width of the model's input")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=20, help="pipeline batches timed")
    parser.add_argument("--steps", type=int, default=5, help="training steps timed")
    parser.add_argument("--data", help="a directory of slim-style train-* shards (default: written to a temp dir)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--per-shard", type=int, default=64)
    parser.add_argument("--distort-color", action="store_true", help="add slim's colour distortion to training")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.data:
            data, origin = args.data, f"shards {args.data}/train-*"
        else:
            data = scratch
            mean_size = write_shards(scratch, args.shards, args.per_shard)
            origin = (
                f"{args.shards} written shards of {args.per_shard} JPEGs, {IMAGE_SIDES[0]}-{IMAGE_SIDES[1]} pixels "
                f"a side, {mean_size / 1024:.0f} KB on average"
            )
        session = imagenet_session(args.model, data, args.resolution, args.batch, args.distort_color)
        steps = " -> ".join(step["type"] for step in session.dataset["task"]["preprocess"]["train"])
        pipeline = pipeline_images_per_second(session, args.batches, args.batch)
    images, labels = batches(session, args.steps, args.batch)
    training = args.batch / time_custom_loop(session, images, labels, args.batch)
    print(f"data: {origin}; train steps: {steps}")
    print(f"model {args.model} at {args.resolution}x{args.resolution}, batch {args.batch}, "
          f"{os.cpu_count()} CPU cores, {len(tf.config.list_logical_devices('GPU'))} GPUs")
    print(f"input pipeline: {pipeline:8.1f} images/s over {args.batches} batches")
    print(f"training step:  {training:8.1f} images/s over {args.steps} steps (in-memory batches)")
    print(f"ratio pipeline / training: {pipeline / training:.2f}")


if __name__ == "__main__":
    main()
