"""The state that flows between the steps of a sparse program: a compact feature map and what it stands for.

A gated layer computes only its active output channels, so after it the feature map holds those channels alone
(`values`, the last axis compact) and their indices in the full map (`channels`). The absent channels are not
always zero: a batch norm's offset after a gate turns a switched-off channel into a constant (MobileNet's depthwise
batch norm does), so the feature also carries `fill`, the value of every absent channel, which does not depend on
the image and is known when the program is prepared (a NumPy vector, or None for zeros).
"""

from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf


class Feature(NamedTuple):
    values: tf.Tensor
    channels: Optional[tf.Tensor]  # int32 (k,), positions of the values' channels in the full map; None: all
    fill: Optional[np.ndarray]  # (width,) value of each absent channel, constant over space; None: zero
    width: int  # channels of the full map

    @classmethod
    def full(cls, values):
        return cls(values, None, None, values.shape[-1])

    @property
    def compact(self):
        return self.channels is not None

    def with_values(self, values, fill=None):
        return Feature(values, self.channels, fill, self.width)


def nonzero(fill):
    """`fill` as a float32 vector, or None when every absent channel is zero."""
    if fill is None:
        return None
    fill = np.asarray(fill, np.float32)
    return fill if np.any(fill != 0) else None


def absent_fill(feature):
    """(width,) tensor: the fill value of each absent channel, zero at the present ones; None without fill."""
    if feature.fill is None:
        return None
    if not feature.compact:
        return None
    zeros = tf.zeros(tf.shape(feature.channels), tf.float32)
    return tf.tensor_scatter_nd_update(tf.constant(feature.fill), feature.channels[:, None], zeros)


def materialize(feature):
    """The full feature map: the present channels where they belong, each absent one at its fill value."""
    if not feature.compact:
        return feature.values
    count = feature.values.shape[-1]
    if count is None:  # a moving threshold: how many channels are present depends on the image
        count = tf.shape(feature.values)[-1]
    # Each full channel's position among the values, or `count` (a zero slot appended to them) when it is absent:
    # one gather puts every channel in place, which XLA runs as a single pass over the map.
    slots = tf.tensor_scatter_nd_update(tf.fill([feature.width], count), feature.channels[:, None],
                                        tf.range(count))
    padded = tf.concat([feature.values, tf.zeros_like(feature.values[..., :1])], axis=-1)
    full = tf.gather(padded, slots, axis=-1)
    fill = absent_fill(feature)
    return full if fill is None else full + fill


def take(values, channels, axis=0):
    """`values` restricted to `channels` along `axis` (all of them for None)."""
    return values if channels is None else tf.gather(values, channels, axis=axis)
