"""Random transforms applied to the image at every optimisation step.

A pattern that only works at one exact pixel alignment is an adversarial
texture, not something the filter looks for. Jittering, scaling and rotating
the image a little before the model at every step makes the optimiser find
patterns that survive such changes, which removes most of the high-frequency
noise of plain gradient ascent ("transformation robustness" in Olah et al.,
"Feature Visualization", Distill 2017; Mordvintsev et al., "Differentiable
Image Parameterizations", Distill 2018).

A transform is a function `(images, seed) -> images` on float32 tensors
(batch, height, width, channels) with pixels in [0, 1]; `seed` is an int32
tensor of shape (2,) for TensorFlow's stateless random ops, so the same seed
gives the same transform. Every transform is differentiable with respect to
the images and keeps the output shape static for a given input shape.
"""

import math

import tensorflow as tf


def _uniform(seed, shape, low, high):
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def pad(width, value=0.5):
    """Pads every side with `width` pixels of a constant gray.

    The padding gives jitter and rotation room to move the image without
    pulling in undefined borders, and lets the pattern run to the edges.

    Args:
        width: Pixels added on each side.
        value: Their value (0.5 is mid-gray).
    """

    def transform(images, seed):
        del seed  # Deterministic.
        return tf.pad(images, [[0, 0], [width, width], [width, width], [0, 0]], constant_values=value)

    return transform


def jitter(distance):
    """Crops a random window `distance` pixels smaller than the image (a random shift).

    The same shift is used for the whole batch; the output is `distance`
    pixels smaller in height and width.

    Args:
        distance: The largest shift in pixels (> 0).

    Raises:
        ValueError: If distance < 1.
    """
    if distance < 1:
        raise ValueError(f"jitter distance must be 1 or more. Received: distance={distance}")

    def transform(images, seed):
        shape = tf.shape(images)
        offsets = tf.random.stateless_uniform((2,), seed=seed, minval=0, maxval=distance + 1, dtype=tf.int32)
        height, width = images.shape[1] - distance, images.shape[2] - distance
        return tf.slice(images, [0, offsets[0], offsets[1], 0], [shape[0], height, width, shape[3]])

    return transform


def affine_matrices(scales, angles, translations, height, width):
    """The projective-transform rows that zoom, rotate and shift each image about its centre.

    Args:
        scales: float32 (n,), > 1 enlarges the content.
        angles: float32 (n,) rotation angles in radians.
        translations: float32 (n, 2), (rows, columns) the content moves by.
        height, width: The image size.

    Returns:
        float32 (n, 8), as `tf.raw_ops.ImageProjectiveTransformV3` wants them:
        each row maps an output pixel to the input pixel it samples.
    """
    center_y, center_x = (height - 1) / 2.0, (width - 1) / 2.0
    cosine, sine = tf.cos(angles) / scales, tf.sin(angles) / scales
    a0, a1 = cosine, -sine
    b0, b1 = sine, cosine
    # Input = A (output - centre - shift) + centre, written as rows of A and an offset.
    shifted_x = center_x + translations[:, 1]
    shifted_y = center_y + translations[:, 0]
    a2 = center_x - a0 * shifted_x - a1 * shifted_y
    b2 = center_y - b0 * shifted_x - b1 * shifted_y
    zeros = tf.zeros_like(scales)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def apply_affine(images, matrices, fill_mode="REFLECT"):
    """Resamples each image with its own affine map (bilinear, differentiable)."""
    resampled = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=matrices,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.5,
        interpolation="BILINEAR",
        fill_mode=fill_mode,
    )
    # The op forgets the static shape, which the next transforms need.
    resampled.set_shape(images.shape)
    return resampled


def random_affine(scale_range=(0.9, 1.1), max_degrees=10.0, max_shift=0.0):
    """Zooms, rotates (and optionally shifts) each image by random amounts, in one resampling.

    One bilinear resampling for all three keeps the image sharper than a
    chain of separate ones. Each image of the batch gets its own draw.

    Args:
        scale_range: (low, high) zoom factors, drawn uniformly.
        max_degrees: Rotation angles are drawn uniformly in ±max_degrees.
        max_shift: Shifts in pixels are drawn uniformly in ±max_shift, per axis.
    """
    low, high = float(scale_range[0]), float(scale_range[1])
    max_radians = math.radians(float(max_degrees))

    def transform(images, seed):
        count = tf.shape(images)[0]
        seeds = tf.random.experimental.stateless_split(seed, num=3)
        scales = _uniform(seeds[0], (count,), low, high)
        angles = _uniform(seeds[1], (count,), -max_radians, max_radians)
        shifts = _uniform(seeds[2], (count, 2), -float(max_shift), float(max_shift))
        matrices = affine_matrices(scales, angles, shifts, images.shape[1], images.shape[2])
        return apply_affine(images, matrices)

    return transform


def random_scale(scale_range=(0.9, 1.1)):
    """Zooms each image about its centre by a random factor; see `random_affine`."""
    return random_affine(scale_range=scale_range, max_degrees=0.0)


def random_rotate(max_degrees=10.0):
    """Rotates each image about its centre by a random angle; see `random_affine`."""
    return random_affine(scale_range=(1.0, 1.0), max_degrees=max_degrees)


def compose(transforms):
    """Chains transforms, giving each its own seed split from the step's seed."""
    transforms = list(transforms)

    def transform(images, seed):
        if not transforms:
            return images
        seeds = tf.random.experimental.stateless_split(seed, num=len(transforms))
        for index, step in enumerate(transforms):
            images = step(images, seeds[index])
        return images

    return transform


def standard_transforms():
    """The chain of Lucid's recipe: pad, jitter 8, scale 0.9-1.1 and rotate ±10°, jitter 4.

    Lucid pads by 12 pixels, so the model sees an image 12 pixels larger than
    the pattern. Padding by 6 gives the same random shifts (up to 12 pixels
    in all) while the model sees exactly the pattern's size: about 20% less
    work at 128 pixels, with the same quality (bench/bench_pattern_quality.py).
    """
    return [pad(6), jitter(8), random_affine((0.9, 1.1), 10.0), jitter(4)]


TRANSFORM_SETS = {"standard": standard_transforms, "none": list}


def transforms_named(name):
    """The list of transforms called `name` ("standard" or "none").

    Raises:
        ValueError: For an unknown name.
    """
    if name not in TRANSFORM_SETS:
        raise ValueError(f"transforms must be one of {sorted(TRANSFORM_SETS)}. Received: {name!r}")
    return TRANSFORM_SETS[name]()
