"""The `tfds` source: a TensorFlow Datasets builder (`cifar10`, `mnist`, `imagenet2012`, ...) read as (image, label).

The `idx` source falls back to it, so a failure is first a `TfdsUnavailable` that carries a short reason, and each
reader words its own one-line DataError around it. Builders whose data cannot be downloaded (`imagenet2012`) are
prepared from the archives in `source.manual_dir`.
"""

import logging
import os
import socket

from mayo_lite.data.description import bad_value, dataset_name, lookup
from mayo_lite.data.examples import SourceExamples
from mayo_lite.errors import DataError

logger = logging.getLogger(__name__)

# The TFDS split behind our `validate` split, where it is not "test"; `source.splits` overrides both.
VALIDATE_SPLITS = {"imagenet2012": "validation", "imagenet2012_subset": "validation"}

# TFDS fetches the builders this project names from its Google Cloud Storage mirror first.
DOWNLOAD_HOST = "storage.googleapis.com"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class TfdsUnavailable(Exception):
    """A builder that cannot be loaded; `reason` is one short line."""

    def __init__(self, builder, data_dir, reason):
        super().__init__(reason)
        self.builder, self.data_dir, self.reason = builder, data_dir, reason


def tfds_split(dataset, split):
    """The TFDS split name that serves our `split` ("train" / "validate")."""
    builder = lookup(dataset, "source.tfds")
    defaults = {"train": "train", "validate": VALIDATE_SPLITS.get(builder, "test")}
    splits = lookup(dataset, "source.splits", None) or {}
    if not isinstance(splits, dict):
        raise bad_value("source.splits", "a mapping of train and validate to TFDS split names", splits)
    return splits.get(split, defaults[split])


def _short(error):
    lines = str(error).strip().splitlines()
    reason = lines[0] if lines else type(error).__name__
    return reason if len(reason) <= 160 else reason[:157] + "..."


def _offline_reason():
    """Why a download cannot work, or None when it may.

    Offline, TFDS retries each URL with back-off for minutes before it gives up; one name look-up tells at once.
    Behind a proxy the look-up proves nothing, so it is skipped.
    """
    if any(os.environ.get(variable) for variable in PROXY_VARIABLES):
        return None
    try:
        socket.getaddrinfo(DOWNLOAD_HOST, 443)
    except OSError:
        return f"no network (cannot resolve {DOWNLOAD_HOST})"
    return None


def _directory(dataset, key):
    value = lookup(dataset, key, None)
    return None if value is None else os.path.expanduser(str(value))


def load_tfds_split(dataset, split):
    """`split` of the builder named by `source.tfds`, prepared first from `source.manual_dir` when that is set, else
    downloaded when allowed; TfdsUnavailable when it cannot be."""
    # Imported here: TensorFlow Datasets takes seconds to import and most runs read IDX files or synthetic data.
    import tensorflow_datasets as tfds

    name = lookup(dataset, "source.tfds")
    if not isinstance(name, str) or not name:
        raise bad_value("source.tfds", "a TensorFlow Datasets builder name", name)
    data_dir = _directory(dataset, "source.data_dir")
    manual_dir = _directory(dataset, "source.manual_dir")
    shown_dir = data_dir or "~/tensorflow_datasets"
    split_name = tfds_split(dataset, split)
    offline = None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared() and manual_dir is not None:
            # From archives already on disk: no network needed, and none to wait for.
            logger.info("preparing TensorFlow Datasets '%s' in %s from %s", name, shown_dir, manual_dir)
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        elif not builder.is_prepared() and lookup(dataset, "source.download", True):
            offline = _offline_reason()
            if offline is None:
                logger.info("downloading and preparing TensorFlow Datasets '%s' in %s", name, shown_dir)
                builder.download_and_prepare()
        examples = builder.as_dataset(split=split_name, as_supervised=True, shuffle_files=False)
    except Exception as error:  # TFDS raises many unrelated types (AssertionError, requests, tf.errors, ...).
        # Offline and unprepared, TFDS only says it found no data; ours says why it could not fetch any.
        reason = f"{offline} and no prepared copy there" if offline else _short(error)
        raise TfdsUnavailable(name, shown_dir, reason) from None
    return SourceExamples(examples, in_memory=False, origin=f"TensorFlow Datasets '{name}' in {shown_dir}")


def read_tfds_source(dataset, split, search_path):
    """The `tfds` source reader; `search_path` is unused (TFDS has its own `data_dir`)."""
    try:
        return load_tfds_split(dataset, split)
    except TfdsUnavailable as error:
        manual_dir = _directory(dataset, "source.manual_dir")
        if manual_dir is not None:
            how = (
                f"put the archives its manual download instructions name in {manual_dir} (for imagenet2012: "
                f"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org)"
            )
        else:
            how = (
                f"give it network access to download, or run 'tfds build {error.builder} --data_dir DIR' on a "
                f"connected machine, copy DIR here and set dataset.source.data_dir"
            )
        raise DataError(
            f"{dataset_name(dataset)}: TensorFlow Datasets could not load '{error.builder}' from {error.data_dir} "
            f"({error.reason}); {how}"
        ) from None
