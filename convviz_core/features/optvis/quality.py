"""Measures that compare filter patterns, whatever method made them.

- `transform_robustness`: a pattern that shows what a filter looks for still
  excites it when shifted, zoomed or turned a little; an adversarial texture
  that works at one pixel alignment does not (Olah et al., "Feature
  Visualization", Distill 2017, "transformation robustness").
- `high_frequency_share`: how much of a pattern's energy is fine, pixel-level
  detail, the gray noise of plain gradient ascent.
"""

import numpy as np
import tensorflow as tf

from convviz_core.features.optvis.render import free_size_supported
from convviz_core.features.optvis.transform import affine_matrices, apply_affine

# Keeps ratios finite for a dead filter or a flat pattern.
EPSILON = 1e-8
# Copies of a pattern evaluated together.
_CHUNK = 32


def _channel_means(model, layer_name, images, filter_indices):
    """The mean over space of each image's own channel, in chunks (float64 (n,))."""
    values = []
    for start in range(0, len(images), _CHUNK):
        chunk = tf.constant(images[start : start + _CHUNK], tf.float32)
        if model.has_fixed_input_size and tuple(chunk.shape[1:3]) != tuple(model.input_size):
            # Patterns made at another size are measured at that size where the graph allows it.
            if chunk.shape[1] != chunk.shape[2] or not free_size_supported(model, layer_name, chunk.shape[1]):
                chunk = tf.image.resize(chunk, model.input_size)
        captured, _ = model.plan.run(model.preprocess(chunk), taps=(layer_name,))
        activation = tf.cast(captured[layer_name], tf.float32)
        indices = tf.constant(filter_indices[start : start + _CHUNK], tf.int32)
        chosen = tf.gather(activation, indices, axis=3, batch_dims=1)
        values.append(tf.reduce_mean(chosen, axis=[1, 2]).numpy())
    return np.concatenate(values).astype(np.float64)


def transform_robustness(
    model,
    layer_name,
    patterns,
    filter_indices,
    copies=8,
    max_shift=8.0,
    scale_range=(0.9, 1.1),
    max_degrees=5.0,
    seed=0,
):
    """How well each pattern still excites its filter once shifted, zoomed and rotated.

    The ratio of the filter's mean activation (its channel's mean over space)
    on `copies` randomly transformed copies of the pattern — shifted by up
    to ±`max_shift` pixels, zoomed by a factor in `scale_range`, rotated by up
    to ±`max_degrees`, borders filled by reflection — to its activation on
    the pattern itself. About 1 for a robust pattern, well below 1 for one
    that works only at its exact pixel alignment.

    Args:
        model: A `VisionModel`.
        layer_name: The layer the patterns were made for.
        patterns: uint8 or float array (n, height, width, 3) of 0-255 pixels.
        filter_indices: The filter of each pattern.
        copies: Transformed copies per pattern.
        max_shift, scale_range, max_degrees: The random transforms.
        seed: The same seed gives the same copies.

    Returns:
        float64 array (n,). A pattern whose own activation is not positive
        gets NaN: the ratio means nothing for it.
    """
    patterns = np.asarray(patterns, dtype=np.float32)
    filter_indices = np.asarray(filter_indices, dtype=np.int32)
    count, height, width = patterns.shape[:3]
    rng = np.random.default_rng(seed)
    scales = rng.uniform(scale_range[0], scale_range[1], count * copies).astype(np.float32)
    angles = np.radians(rng.uniform(-max_degrees, max_degrees, count * copies)).astype(np.float32)
    shifts = rng.uniform(-max_shift, max_shift, (count * copies, 2)).astype(np.float32)
    repeated = np.repeat(patterns, copies, axis=0)
    matrices = affine_matrices(tf.constant(scales), tf.constant(angles), tf.constant(shifts), height, width)
    transformed = apply_affine(tf.constant(repeated), matrices).numpy()
    own = _channel_means(model, layer_name, patterns, filter_indices)
    moved = _channel_means(model, layer_name, transformed, np.repeat(filter_indices, copies))
    moved = moved.reshape(count, copies).mean(axis=1)
    return np.where(own > EPSILON, moved / np.maximum(own, EPSILON), np.nan)


def high_frequency_share(patterns, cutoff=0.25):
    """The share of each pattern's spectral energy above `cutoff` × the Nyquist frequency.

    The energy is the squared magnitude of the 2-D FFT of each colour channel
    minus its mean, summed over channels. A frequency's distance from zero
    is measured radially, in units of the Nyquist frequency (half a cycle
    per pixel), so the corners of the spectrum reach √2.

    Args:
        patterns: array (n, height, width, channels).
        cutoff: The fraction of the Nyquist frequency above which energy counts.

    Returns:
        float64 array (n,) in [0, 1]; 0 for a flat pattern.
    """
    patterns = np.asarray(patterns, dtype=np.float64)
    height, width = patterns.shape[1:3]
    centred = patterns - patterns.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(centred, axes=(1, 2))) ** 2
    power = power.sum(axis=3)
    radius = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :]) / 0.5
    high = power[:, radius > cutoff].sum(axis=1)
    return high / (power.sum(axis=(1, 2)) + EPSILON)
