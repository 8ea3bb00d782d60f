"""Pictures encoded as PNG: what the pages and a queue's worker both draw with.

Kept apart from `inputs.images` (the hardened loader), which is part of every
filter atlas's key (`atlas_cache.dependency_modules`): a change here does not
make stored atlases stale.
"""

import cv2
import numpy as np


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
