"""What every CAM method shares: its description and how a raw map becomes a heatmap.

A method is a `CamMethod`: a name, whether it needs the backward pass, a
short description, and a `raw_map` function from a `LayerPass` to the map
before the ReLU at the layer's own resolution (pytorch-grad-cam's
`get_cam_image`). Most methods only choose channel weights and leave the sum
to `weighted_sum` (pytorch-grad-cam's `get_cam_weights`). `normalize_map`
then applies the ReLU and divides by the maximum, the same for all.
"""

import dataclasses
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class CamMethod:
    """One class-activation-map method.

    Attributes:
        name: The public name, e.g. "grad-cam".
        title: The name as papers write it, e.g. "Grad-CAM".
        needs_gradients: Whether the method needs the backward pass.
        description: One sentence for a reader of the dashboard.
        paper: The paper that introduced the method.
        raw_map: Function (LayerPass, **options) -> float array (layer height,
            layer width), the map before the ReLU.
        class_specific: Whether the map depends on the class explained.
    """

    name: str
    title: str
    needs_gradients: bool
    description: str
    paper: str
    raw_map: Callable
    class_specific: bool = True


def weighted_sum(features, weights):
    """Sums a layer's feature maps, each times its channel weight.

    Args:
        features: float array (height, width, channels).
        weights: float array (channels,) or (height, width, channels).

    Returns:
        float64 array (height, width).
    """
    return (np.asarray(features, np.float64) * np.asarray(weights, np.float64)).sum(axis=-1)


def normalize_map(raw_map):
    """Applies the ReLU and divides by the maximum.

    A map with no positive value (or with NaN or infinity in it) stays all
    zero, never NaN.

    Args:
        raw_map: float array (height, width).

    Returns:
        float32 array (height, width) in [0, 1].
    """
    heatmap = np.maximum(np.asarray(raw_map, np.float64), 0.0)
    peak = heatmap.max() if heatmap.size else 0.0
    if not np.isfinite(peak) or peak <= 0:
        return np.zeros(heatmap.shape, dtype=np.float32)
    return (heatmap / peak).astype(np.float32)


def grad_cam_weights(features, gradients):
    """Grad-CAM's channel weights: the gradient averaged over space.

    Args:
        features: float array (height, width, channels) of the layer output.
        gradients: float array (height, width, channels), d score / d features.

    Returns:
        float array (channels,).
    """
    return np.asarray(gradients, np.float64).mean(axis=(0, 1))


def combine_channels(features, gradients, weigh_channels=grad_cam_weights):
    """Combines a layer's feature maps into one class-activation map.

    The map is the sum over channels of the weighted feature maps, through a
    ReLU, divided by its maximum (a mean instead of the sum gives the same
    map). A map with no positive value stays all zero.

    Args:
        features: float array (height, width, channels).
        gradients: float array (height, width, channels).
        weigh_channels: Function (features, gradients) -> channel weights;
            the weighting methods differ only here.

    Returns:
        float32 array (height, width) in [0, 1].
    """
    features = np.asarray(features, dtype=np.float64)
    weights = weigh_channels(features, np.asarray(gradients, dtype=np.float64))
    return normalize_map(weighted_sum(features, weights))
