"""Puts any heatmap on the model input, and prepares the image the metrics perturb."""

import numpy as np
import tensorflow as tf

from convviz_core.errors import InputError
from convviz_core.predictions import class_probabilities


def heatmap_on_input(model, heatmap, layer_name=None):
    """Places a heatmap on the model input as the views place it.

    Args:
        model: A `VisionModel`.
        heatmap: float array (h, w) at any resolution.
        layer_name: The layer a CAM map comes from: it is then placed where
            each of its pixels looks (`VisionModel.heatmap_on_input`). None
            for any other map: a plain bilinear resize.

    Returns:
        float32 array at `model.input_size`.

    Raises:
        InputError: If the heatmap is not a finite 2-D array.
    """
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.ndim != 2 or heatmap.size == 0 or not np.all(np.isfinite(heatmap)):
        raise InputError(
            f"A heatmap must be a finite 2-D array (height, width). Received an array of "
            f"shape {heatmap.shape}."
        )
    if layer_name is not None:
        return np.asarray(model.heatmap_on_input(layer_name, heatmap), np.float32)
    resized = tf.image.resize(heatmap[..., np.newaxis], model.input_size, method="bilinear")
    return resized.numpy()[..., 0]


def model_input(model, image):
    """The image as the model sees it: resized and preprocessed, float32 (1, h, w, c)."""
    return np.asarray(model.preprocess(model.prepare(image)), np.float32)


def resolve_class(model, image, class_index):
    """The class to score: the one asked for, or the top class of the image."""
    if class_index is None:
        return int(np.argmax(class_probabilities(model, image)))
    model.check_class(class_index)
    return int(class_index)


def gaussian_blur(inputs, size=11, sigma=5.0):
    """Blurs a model input as RISE's insertion substrate does (11x11, sigma 5, zero padding).

    Args:
        inputs: float array (1, height, width, channels).

    Returns:
        float32 array like `inputs`.
    """
    offsets = np.arange(size) - size // 2
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    blurred = np.asarray(inputs, np.float64)
    for axis in (1, 2):
        blurred = np.apply_along_axis(lambda line: np.convolve(line, kernel, mode="same"), axis, blurred)
    return blurred.astype(np.float32)
