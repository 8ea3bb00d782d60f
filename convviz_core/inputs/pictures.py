"""Photos shrunk for the app and pictures encoded as PNG: what the pages and a queue's worker both draw with.

Kept apart from `inputs.images` (the hardened loader), which is part of every
filter atlas's key (`atlas_cache.dependency_modules`): a change here does not
make stored atlases stale.
"""

import cv2
import numpy as np

from convviz_core.inputs.images import resize_to

# The longer side of an uploaded photo is reduced to this for the app: every
# view resizes to the model's input (224 or so) and the overlay is shown on
# screen, so more pixels only cost memory in a server shared by a class.
MAX_WORKING_SIDE = 1024


def fit_within(image, max_side=MAX_WORKING_SIDE):
    """Shrinks an RGB image so its longer side is at most `max_side`, keeping its shape.

    Returns:
        The image itself when it already fits, else a resized copy.
    """
    height, width = image.shape[:2]
    longer = max(height, width)
    if longer <= max_side:
        return image
    scale = max_side / longer
    return resize_to(image, (max(1, round(height * scale)), max(1, round(width * scale))))


def png_bytes(image):
    """Encodes an RGB (or gray) uint8 array as PNG.

    Returns:
        The PNG file's bytes.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"Could not encode an image of shape {image.shape} as PNG.")
    return encoded.tobytes()
