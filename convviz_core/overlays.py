"""Heatmaps as pictures: the JET colormap and the book's overlay on the photo."""

import cv2
import numpy as np

from convviz_core.errors import InputError
from convviz_core.inputs.images import check_rgb_image


def colorize(heatmap):
    """Colours a [0, 1] heatmap with OpenCV's JET colormap, as RGB uint8.

    Args:
        heatmap: float array (height, width) in [0, 1].

    Returns:
        uint8 array (height, width, 3), RGB.
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise InputError(f"A heatmap must be 2-D (height, width). Received shape {heatmap.shape}.")
    levels = np.uint8(255 * np.clip(np.nan_to_num(heatmap), 0.0, 1.0))
    # OpenCV returns BGR; the rest of ConvViz works in RGB.
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay(image, heatmap, alpha=0.4):
    """Superimposes a heatmap on an image, as in the book (heatmap × 0.4 + image).

    Args:
        image: RGB uint8 array (height, width, 3).
        heatmap: float array (h, w) in [0, 1], any size; it is resized to the
            image.
        alpha: Strength of the heatmap.

    Returns:
        uint8 RGB array with the image's height and width.
    """
    image = check_rgb_image(image)
    height, width = image.shape[:2]
    resized = cv2.resize(np.asarray(heatmap, dtype=np.float32), (width, height))
    blended = colorize(resized).astype(np.float32) * float(alpha) + image.astype(np.float32)
    return np.clip(blended, 0, 255).astype(np.uint8)
