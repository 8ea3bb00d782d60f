"""Average Drop and Increase in Confidence (Chattopadhay et al., WACV 2018)."""

import dataclasses

import numpy as np

from convviz_core.cam.passes import score_masked_inputs
from convviz_core.metrics.placement import heatmap_on_input, model_input, resolve_class


@dataclasses.dataclass
class AverageDropIncrease:
    """How the class probability changes when the model sees only what the map shows.

    Attributes:
        average_drop: max(0, p - p_map) / p in percent (lower is better).
            Over a set of images, its mean is the paper's Average Drop.
        increase_in_confidence: Whether p_map > p. Over a set of images, the
            fraction of True is the paper's Increase in Confidence (higher is
            better).
        probability: p, the class probability of the image.
        explanation_probability: p_map, that of the explanation map: the
            model input times the map (placed on the input, values in [0, 1]).
        class_index: The class scored.
    """

    average_drop: float
    increase_in_confidence: bool
    probability: float
    explanation_probability: float
    class_index: int


def average_drop_increase(model, image, heatmap, class_index=None, layer_name=None):
    """Scores a map by Average Drop and Increase in Confidence for one image.

    Chattopadhay, Sarkar, Howlader and Balasubramanian, "Grad-CAM++", WACV
    2018, section 5.1: the explanation map is the image times the heatmap;
    a faithful map keeps what the model needs, so the class probability
    drops little (or rises). As pytorch-grad-cam's `cam_mult_image` does, the
    map multiplies the model input after the preprocessing.

    Args:
        model: A `VisionModel` with a class output.
        image: RGB uint8 array (height, width, 3) of any size.
        heatmap: float array (h, w) in [0, 1] at any resolution (values are
            clipped to [0, 1]).
        class_index: The class to score. Default: the top predicted class.
        layer_name: The layer a CAM map comes from, to place it where its
            pixels look; None resizes the map to the input.

    Returns:
        An `AverageDropIncrease`.

    Raises:
        InputError: For a class out of range, a model without classes, an
            image that is not RGB uint8 or a heatmap that is not 2-D.
    """
    class_index = resolve_class(model, image, class_index)
    placed = explanation_mask(heatmap_on_input(model, heatmap, layer_name))
    inputs = model_input(model, image)
    masks = np.stack([np.ones_like(placed), placed])
    _, probabilities = score_masked_inputs(model, inputs, masks, class_index)
    return summarise_average_drop(*probabilities, class_index)


def explanation_mask(placed_heatmap):
    """The mask that multiplies the model input: the placed map clipped to [0, 1]."""
    return np.clip(placed_heatmap, 0.0, 1.0)


def summarise_average_drop(probability, explanation_probability, class_index):
    """Builds an `AverageDropIncrease` from p (the input's) and p_map (the explanation's)."""
    probability, explanation_probability = float(probability), float(explanation_probability)
    drop = max(0.0, probability - explanation_probability) / max(probability, 1e-12)
    return AverageDropIncrease(
        average_drop=100.0 * drop,
        increase_in_confidence=explanation_probability > probability,
        probability=probability,
        explanation_probability=explanation_probability,
        class_index=int(class_index),
    )
