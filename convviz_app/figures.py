"""Pictures, Plotly figures and labels for the pages, made from core's arrays (no Streamlit here)."""

import math

import cv2
import numpy as np
import plotly.graph_objects as go

# `fit_within` and `png_bytes` live in core (a queue's worker draws a dataset report's thumbnails too).
from convviz_core.inputs.images import MAX_WORKING_SIDE, fit_within  # noqa: F401
from convviz_core.inputs.pictures import png_bytes  # noqa: F401

# Wider pictures are shrunk by the browser anyway (Streamlit's content is at
# most 1460 pixels wide), so enlarging past this only costs bytes.
MAX_DISPLAY_WIDTH = 1460
# Small feature maps (7x7) are enlarged with nearest-neighbour so that each
# value shows as a crisp square instead of a browser-smoothed blur.
MIN_TILE_PIXELS = 48


def viridis(levels):
    """Colours a uint8 picture with the viridis colormap, as the book's plots do.

    Args:
        levels: uint8 array (height, width).

    Returns:
        uint8 RGB array (height, width, 3).
    """
    levels = np.ascontiguousarray(levels, dtype=np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)


def enlarge_tiles(image, tile_side, min_tile=MIN_TILE_PIXELS, max_width=MAX_DISPLAY_WIDTH):
    """Enlarges a grid of small tiles by a whole factor, with nearest-neighbour.

    Args:
        image: uint8 array (height, width) or (height, width, 3).
        tile_side: The side of one tile in pixels.
        min_tile: Tiles smaller than this are enlarged...
        max_width: ...as long as the picture stays at most this wide.

    Returns:
        The enlarged picture (the same array when no enlargement is needed).
    """
    factor = max(1, math.ceil(min_tile / max(1, tile_side)))
    factor = min(factor, max(1, max_width // max(1, image.shape[1])))
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def jpeg_bytes(image, max_width=MAX_DISPLAY_WIDTH, quality=90):
    """Encodes an RGB uint8 array as JPEG, at most `max_width` pixels wide: what `st.image` would send.

    `st.image` given an array encodes it again on every script run, and
    encodes it twice when the array is wider than the width it is shown at;
    given these bytes (with `output_format="JPEG"`) it only reads their
    header. Cache the result (`cached.display_jpeg`).

    Args:
        image: RGB uint8 array (height, width, 3).
        max_width: Wider images are shrunk to this width, keeping their shape.
        quality: The JPEG quality (Streamlit's own re-encoding uses 90).

    Returns:
        The JPEG file's bytes.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    if width > max_width:
        new_height = max(1, round(height * max_width / width))
        image = cv2.resize(image, (max_width, new_height), interpolation=cv2.INTER_AREA)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"Could not encode an image of shape {image.shape} as JPEG.")
    return encoded.tobytes()


def class_option_label(model, probabilities, class_index):
    """How the Grad-CAM class picker names a class: "Egyptian_cat (285), 78.0%".

    Args:
        model: The `VisionModel` whose class names label the classes.
        probabilities: float array (classes,) for the image.
        class_index: The class.
    """
    return f"{model.class_label(class_index)} ({class_index}), {probabilities[class_index]:.1%}"


def heatmap_figure(values, colorscale="Viridis", zmin=None, zmax=None, value_label="value", height=420):
    """Draws a 2-D array as an interactive heatmap: hover shows row, column and value.

    Row 0 is at the top, as in an image, and pixels are square.

    Args:
        values: float array (height, width).
        colorscale: A Plotly colorscale name ("Viridis" as the book's
            activation plots, "Jet" as its Grad-CAM heatmap).
        zmin, zmax: The colour range; default the data's range.
        value_label: What the hover calls the value.
        height: The figure's height in pixels.

    Returns:
        A `plotly.graph_objects.Figure`.
    """
    values = np.asarray(values, dtype=np.float32)
    figure = go.Figure(
        go.Heatmap(
            z=values,
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            hovertemplate=f"row %{{y}}, column %{{x}}<br>{value_label} %{{z:.3f}}<extra></extra>",
            colorbar={"thickness": 12},
        )
    )
    figure.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", showgrid=False)
    figure.update_xaxes(constrain="domain", showgrid=False)
    figure.update_layout(height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return figure
