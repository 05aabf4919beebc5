"""The compiled kernels of the native sparse runtime (`native_runtime.py`): the gate and its ranking, the kernel
gathers, image patches, scale and activation, scatter-add and max pooling, each a small loop compiled by Numba
(`nogil`, cached on disk after the first compilation). NumPy and Numba only, like the runtime: `export-model`
copies this file beside it.
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def gate(means, present, kernel, bias, relu, count, conv_bias, beta, beta_first):
    """The gate of one image: gamma from the spatial means of the present input channels (`present`: their indices
    in the full map), then the `count` channels kept, and per kept channel the scale and offset that turn its
    convolution into the layer's output before the activation: `conv·scale + offset`. A channel tied with the
    (count+1)-th largest gamma gets scale and offset 0 (off)."""
    gamma = bias.copy()
    for c in range(means.shape[0]):
        mean = means[c]
        row = kernel[present[c]]
        for o in range(gamma.shape[0]):
            gamma[o] += mean * row[o]
    if relu:
        for o in range(gamma.shape[0]):
            if gamma[o] < 0.0:
                gamma[o] = 0.0
    channels = gamma.shape[0]
    if count < channels:
        # The (count+1)-th largest gamma by selection, not a sort; the channels above it are on, and as many tied
        # with it as make up `count` are kept switched off, as the Keras layer does.
        threshold = -np.partition(-gamma, count)[count]
        kept = np.empty(count, np.int64)
        above = 0
        for o in range(channels):
            if gamma[o] > threshold:
                kept[above] = o
                above += 1
        ties = above
        for o in range(channels):
            if ties == count:
                break
            if gamma[o] == threshold:
                kept[ties] = o
                ties += 1
        kept = np.sort(kept)
    else:
        kept = np.arange(channels)
        threshold = -np.inf
    scale = np.empty(kept.shape[0], np.float32)
    offset = np.empty(kept.shape[0], np.float32)
    for a in range(kept.shape[0]):
        o = kept[a]
        on = gamma[o] > threshold
        g = gamma[o] if on else 0.0
        b = beta[o] if on else 0.0
        if beta_first:
            scale[a], offset[a] = g, (conv_bias[o] + b) * g
        else:
            scale[a], offset[a] = g, conv_bias[o] * g + b
    return kept, scale, offset


@njit(cache=True, nogil=True)
def gather_kernel(kernel, inputs, outputs, gathered):
    """`gathered[t·len(inputs) + b, a] = kernel[t, inputs[b], outputs[a]]`: the kernel (taps, in, out) restricted to
    the present input channels and the kept output channels, as BLAS multiplies it, written row after row."""
    width = inputs.shape[0]
    for t in range(kernel.shape[0]):
        for b in range(width):
            source = kernel[t, inputs[b]]
            target = gathered[t * width + b]
            for a in range(outputs.shape[0]):
                target[a] = source[outputs[a]]


@njit(cache=True, nogil=True)
def gather_inputs(kernel, inputs, gathered):
    """`gathered[t·len(inputs) + b] = kernel[t, inputs[b]]`: the rows of the present input channels, every output."""
    width = inputs.shape[0]
    for t in range(kernel.shape[0]):
        for b in range(width):
            gathered[t * width + b] = kernel[t, inputs[b]]


@njit(cache=True, nogil=True)
def patches(values, patches, kernel_height, kernel_width, stride_y, stride_x, top, left, first_row, last_row,
             out_width):
    """Image patches (`im2col`) of output rows `first_row` to `last_row` (excluded): patch row
    `(y − first_row)·out_width + x` holds the input window of output position (y, x), tap by tap (each tap the
    input's channels, contiguous), zero outside the image."""
    height, width, channels = values.shape
    if channels == 1:  # a grey image: a tap is one value, so copy along the row instead
        patches_of_one_channel(values, patches, kernel_height, kernel_width, stride_y, stride_x, top, left,
                               first_row, last_row, out_width)
        return
    for y in range(first_row, last_row):
        row = (y - first_row) * out_width
        for dy in range(kernel_height):
            source_y = y * stride_y + dy - top
            for dx in range(kernel_width):
                column = (dy * kernel_width + dx) * channels
                first, last = 0, out_width  # the output columns whose input column is inside the image
                while first < out_width and first * stride_x + dx - left < 0:
                    first += 1
                while last > first and (last - 1) * stride_x + dx - left >= width:
                    last -= 1
                if source_y < 0 or source_y >= height:
                    first = last = out_width
                for x in range(out_width):
                    if x < first or x >= last:
                        target = patches[row + x]
                        for c in range(channels):
                            target[column + c] = 0.0
                for x in range(first, last):
                    source = values[source_y, x * stride_x + dx - left]
                    target = patches[row + x]
                    for c in range(channels):
                        target[column + c] = source[c]


@njit(cache=True, nogil=True)
def patches_of_one_channel(values, patches, kernel_height, kernel_width, stride_y, stride_x, top, left,
                            first_row, last_row, out_width):
    height, width = values.shape[0], values.shape[1]
    for y in range(first_row, last_row):
        for x in range(out_width):
            target = patches[(y - first_row) * out_width + x]
            for dy in range(kernel_height):
                source_y = y * stride_y + dy - top
                inside_y = 0 <= source_y < height
                for dx in range(kernel_width):
                    source_x = x * stride_x + dx - left
                    inside = inside_y and 0 <= source_x < width
                    target[dy * kernel_width + dx] = values[source_y, source_x, 0] if inside else 0.0


@njit(cache=True, nogil=True)
def scale_offset(outputs, scale, offset, relu, means):
    """In place: `act(outputs·scale + offset)` per column (output channel); `means` receives each column's mean
    (what the next gate pools, taken while the values are in cache)."""
    positions, channels = outputs.shape
    means[:] = 0.0
    for p in range(positions):
        row = outputs[p]
        for c in range(channels):
            value = row[c] * scale[c] + offset[c]
            value = value if (value > 0.0 or not relu) else 0.0
            row[c] = value
            means[c] += value
    for c in range(channels):
        means[c] /= positions


@njit(cache=True, nogil=True)
def column_means(values):
    positions, channels = values.shape
    means = np.zeros(channels, np.float32)
    for p in range(positions):
        for c in range(channels):
            means[c] += values[p, c]
    for c in range(channels):
        means[c] /= positions
    return means


@njit(cache=True, nogil=True)
def scatter_add(total, values, channels):
    """`total[:, channels] += values` (positions × channels)."""
    for p in range(values.shape[0]):
        target, source = total[p], values[p]
        for j in range(channels.shape[0]):
            target[channels[j]] += source[j]


@njit(cache=True, nogil=True)
def max_pool(values, out, pool_y, pool_x, stride_y, stride_x, top, left):
    height, width, channels = values.shape
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            target = out[y, x]
            target[:] = -np.inf
            for dy in range(pool_y):
                sy = y * stride_y + dy - top
                if sy < 0 or sy >= height:
                    continue
                for dx in range(pool_x):
                    sx = x * stride_x + dx - left
                    if 0 <= sx < width:
                        source = values[sy, sx]
                        for c in range(channels):
                            if source[c] > target[c]:
                                target[c] = source[c]
