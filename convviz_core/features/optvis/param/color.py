"""The colour space of an optimised image: decorrelated, then squashed to valid pixels.

Neighbouring colour channels of photographs are strongly correlated: most of
their variance is in brightness. Optimising in a space where the three axes
are uncorrelated (brightness, then two colour-opponent axes, each scaled by
its standard deviation) keeps the optimiser from spending its steps on one
axis and gives far more colourful patterns (Olah et al., "Feature
Visualization", Distill 2017; Mordvintsev et al., "Differentiable Image
Parameterizations", Distill 2018).

The matrix below is the square root of the colour covariance of ImageNet,
U * sqrt(S) from its singular value decomposition, as measured for Lucid and
reused by lucent: multiplying a decorrelated pixel by it gives an RGB pixel
whose channels correlate like ImageNet's.
"""

import numpy as np
import tensorflow as tf

# Columns: the brightness axis, then two colour-opponent axes (ImageNet RGB statistics).
COLOR_CORRELATION_SQRT = np.array(
    [
        [0.26, 0.09, 0.02],
        [0.27, 0.00, -0.05],
        [0.27, -0.09, 0.03],
    ],
    dtype=np.float32,
)

# Scaled so that its longest column has length 1: a unit step in the
# decorrelated space moves RGB by at most one unit.
COLOR_CORRELATION_NORMALIZED = COLOR_CORRELATION_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0))


def decorrelated_to_rgb(images):
    """Maps images from the decorrelated colour space to (unbounded) RGB.

    Args:
        images: float32 tensor (..., 3) in the decorrelated space.

    Returns:
        float32 tensor of the same shape, correlated like ImageNet's RGB.
    """
    # One (pixels, 3) x (3, 3) product: `tf.linalg.matvec` broadcasts the
    # matrix to every pixel as a batch of tiny products, 25x slower forward
    # and backward (bench/bench_pattern_quality.py --profile).
    images = tf.convert_to_tensor(images, tf.float32)
    pixels = tf.reshape(images, [-1, 3])
    return tf.reshape(tf.matmul(pixels, COLOR_CORRELATION_NORMALIZED, transpose_b=True), tf.shape(images))


def to_valid_rgb(images, decorrelate=True):
    """Maps unbounded images to RGB pixels in [0, 1] (differentiable).

    Args:
        images: float32 tensor (batch, height, width, 3) from a spatial
            parameterisation.
        decorrelate: Whether `images` are in the decorrelated colour space.

    Returns:
        float32 tensor (batch, height, width, 3) in (0, 1): the sigmoid of the
        RGB image.
    """
    if decorrelate:
        images = decorrelated_to_rgb(images)
    return tf.sigmoid(images)
