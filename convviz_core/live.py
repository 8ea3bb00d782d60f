"""The Live page's work for one camera frame: a layer's strongest channels and the top class's Grad-CAM.

Both come from one compiled forward and backward pass (`cam.passes`'s
gradient pass, built once per model and layer and cached on the
`VisionModel`): its features are the layer's activations, and its gradients
weigh them into Grad-CAM. So a frame costs one pass, whichever layer is
chosen, and the result is what `activations`, `class_activation_map` and
`overlay` give for the same image. Nothing here changes the model, and
several threads (one per camera stream) may call `analyze_frame` at once.
"""

import dataclasses

import numpy as np

from convviz_core.cam.base import normalize_map
from convviz_core.cam.gradcam import grad_cam_raw_map
from convviz_core.cam.passes import run_layer_pass
from convviz_core.errors import InputError
from convviz_core.intermediate_activations import activation_grid
from convviz_core.overlays import overlay

# How many of the layer's channels the Live page shows, and in how many columns.
DEFAULT_CHANNEL_COUNT = 8
DEFAULT_CHANNEL_COLUMNS = 4


@dataclasses.dataclass(frozen=True)
class FrameAnalysis:
    """What one camera frame shows through one layer.

    Attributes:
        layer_name: The layer of the channels and of the map.
        channels: The indices of the layer's strongest channels, strongest
            first.
        channel_grid: uint8 array (rows * layer height, columns * layer
            width): those channels, each standardised as the Activations page
            shows them (`activation_grid`), in reading order.
        heatmap: float32 array (layer height, layer width) in [0, 1], the
            Grad-CAM map of the top class.
        overlay: uint8 RGB array of the frame's size, the map on the frame.
        class_index: The top class.
        label: Its name.
        probability: Its probability.
    """

    layer_name: str
    channels: tuple
    channel_grid: np.ndarray
    heatmap: np.ndarray
    overlay: np.ndarray
    class_index: int
    label: str
    probability: float


def strongest_channels(activation, count):
    """Returns the channels with the largest mean activation, strongest first.

    "Strongest" is the quantity whose gradient ascent draws a filter's
    pattern (as `most_active_channel`); ties go to the lower index, and NaN
    counts as weakest.

    Args:
        activation: float array (height, width, channels) of one image.
        count: How many channels; at most the layer's channel count.

    Returns:
        int array of at most `count` channel indices.

    Raises:
        ValueError: If `activation` is not 3-D or `count` < 1.
    """
    activation = np.asarray(activation)
    if activation.ndim != 3:
        raise ValueError(
            f"activation must have shape (height, width, channels). Received: {activation.shape}"
        )
    if int(count) < 1:
        raise ValueError(f"count must be at least 1. Received: count={count}")
    means = np.nan_to_num(activation.astype(np.float64).mean(axis=(0, 1)), nan=-np.inf)
    return np.argsort(-means, kind="stable")[: int(count)]


def analyze_frame(model, frame, layer_name=None, channel_count=DEFAULT_CHANNEL_COUNT,
                  columns=DEFAULT_CHANNEL_COLUMNS, alpha=0.4):
    """Shows one camera frame through one layer: its strongest channels and the top class's Grad-CAM.

    Args:
        model: A `VisionModel` with a class output.
        frame: RGB uint8 array (height, width, 3) of any size; it is resized
            to the model's input like every other image.
        layer_name: A layer from `model.layer_names`, for both the channels
            and the map. Default: `model.default_cam_layer()`.
        channel_count: How many of the strongest channels to show.
        columns: Channels per row of the grid.
        alpha: Strength of the map over the frame (`overlay`).

    Returns:
        A `FrameAnalysis`.

    Raises:
        InputError: For an unknown or non-4-D layer, a model without classes
            or a frame that is not RGB uint8.
    """
    if int(channel_count) < 1:
        raise InputError(f"Show at least one channel. Received: channel_count={channel_count}.")
    layer_pass = run_layer_pass(model, frame, layer_name, class_index=None, with_gradients=True)
    heatmap = normalize_map(grad_cam_raw_map(layer_pass))
    channels = strongest_channels(layer_pass.features, channel_count)
    probability = float(layer_pass.probabilities[layer_pass.class_index])
    return FrameAnalysis(
        layer_name=layer_pass.layer_name,
        channels=tuple(int(channel) for channel in channels),
        channel_grid=activation_grid(layer_pass.features[:, :, channels], images_per_row=columns),
        heatmap=heatmap,
        # Placed where each map pixel looked, as on the Grad-CAM page.
        overlay=overlay(frame, model.heatmap_on_input(layer_pass.layer_name, heatmap), alpha),
        class_index=layer_pass.class_index,
        label=model.class_label(layer_pass.class_index),
        probability=probability,
    )
