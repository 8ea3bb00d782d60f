"""The model-randomisation sanity check (Adebayo et al., NeurIPS 2018).

A map that explains the model must change when the weights that produced
the class are destroyed. The cascading check re-initialises the weights from
the top layer downwards, one block at a time, on a private copy of the model,
and compares each method's map after each step with the original one.
"""

import dataclasses
import re

import cv2
import keras
import numpy as np

from convviz_core.cam.methods import FAST_METHODS, class_activation_maps_with_probabilities
from convviz_core.errors import InputError
from convviz_core.metrics.placement import heatmap_on_input

# Weights that describe the data rather than a learned function (a random
# variance could be negative): they keep their values.
_KEPT_WEIGHTS = ("moving_mean", "moving_variance")


@dataclasses.dataclass
class SanityCurves:
    """How much each method's map changes as the model is randomised.

    Attributes:
        steps: Names of what was randomised, cumulatively: "original" then one
            block (top first) per step.
        rank_correlation: {method: float array (len(steps),)}, the Spearman
            rank correlation of each step's map with the original one.
        ssim: {method: float array (len(steps),)}, their structural similarity.
        maps: {method: list of float32 maps, one per step}.
        class_index: The class explained.
    """

    steps: list
    rank_correlation: dict
    ssim: dict
    maps: dict
    class_index: int


def weight_blocks(keras_model):
    """Groups the layers that hold weights into blocks, top first.

    Layers named like "block5c_expand_conv" (EfficientNet) or
    "block_5_expand" (MobileNetV2) belong to block "block5c" or "block_5";
    every other layer with weights is a block of its own.

    Args:
        keras_model: A Keras model (nested models are walked into).

    Returns:
        [(block name, [layers])], from the output towards the input.
    """
    blocks = []
    for layer in _layers_with_weights(keras_model):
        match = re.match(r"(block_?\d+[a-z]?)_", layer.name)
        name = match.group(1) if match else layer.name
        if blocks and blocks[-1][0] == name:
            blocks[-1][1].append(layer)
        else:
            blocks.append((name, [layer]))
    return blocks[::-1]


def _layers_with_weights(keras_model):
    for layer in keras_model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers_with_weights(layer)
        elif layer.weights:
            yield layer


def private_copy(keras_model):
    """A copy of a Keras model with its own weights (the shared one is never touched).

    Raises:
        InputError: If the model cannot be rebuilt from its configuration.
    """
    try:
        copy = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(keras_model), safe_mode=True
        )
        copy.set_weights(keras_model.get_weights())
    except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError) as error:
        raise InputError(
            f"The model '{keras_model.name}' cannot be copied from its configuration "
            f"({error}), so it cannot be randomised without changing it."
        ) from error
    return copy


def reinitialize(layer, rng):
    """Replaces a layer's weights with seeded Gaussian noise of the same scale.

    Each weight tensor becomes noise with mean 0 and the tensor's own standard
    deviation: the scale the network was trained at. (Adebayo et al. use each
    layer's initialiser; a model converted from other weights may have been
    built with zeros there.) Batch-normalisation statistics are kept.
    """
    values = []
    for variable in layer.weights:
        original = np.asarray(variable.numpy())
        if variable.path.rsplit("/", 1)[-1] in _KEPT_WEIGHTS:
            values.append(original)
        else:
            values.append(rng.normal(0.0, original.std() + 1e-6, original.shape).astype(original.dtype))
    layer.set_weights(values)


def rank_correlation(first, second):
    """Spearman's rank correlation of two maps (average ranks for ties); 0 if one is flat."""
    first, second = _ranks(np.ravel(first)), _ranks(np.ravel(second))
    first, second = first - first.mean(), second - second.mean()
    denominator = np.sqrt((first**2).sum() * (second**2).sum())
    return float((first * second).sum() / denominator) if denominator > 0 else 0.0


def _ranks(values):
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    # Ties share their average rank.
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse.ravel(), weights=ranks)
    return (sums / counts)[inverse.ravel()]


def structural_similarity(first, second, sigma=1.5, size=11):
    """SSIM of two maps in [0, 1] (Wang et al., 2004: Gaussian window, K1 0.01, K2 0.03).

    Args:
        first, second: float arrays (height, width) with values in [0, 1].

    Returns:
        The mean SSIM over the map (1 for identical maps).
    """

    def smooth(image):
        return cv2.GaussianBlur(image, (size, size), sigma, borderType=cv2.BORDER_REFLECT)

    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    c1, c2 = 0.01**2, 0.03**2
    mean1, mean2 = smooth(first), smooth(second)
    variance1 = smooth(first * first) - mean1**2
    variance2 = smooth(second * second) - mean2**2
    covariance = smooth(first * second) - mean1 * mean2
    ssim = ((2 * mean1 * mean2 + c1) * (2 * covariance + c2)) / (
        (mean1**2 + mean2**2 + c1) * (variance1 + variance2 + c2)
    )
    return float(ssim.mean())


def cascading_randomization(model, image, methods=FAST_METHODS, class_index=None, layer_name=None,
                            max_steps=None, seed=0, progress=None):
    """Runs the cascading model-parameter randomisation check.

    Adebayo, Gilmer, Muelly, Goodfellow, Hardt and Kim, "Sanity Checks for
    Saliency Maps", NeurIPS 2018: on a private copy of the model, the weights
    are re-initialised block by block from the top layer downwards; after
    each step every method's map of the same class is compared with the
    original map, by Spearman rank correlation (on the layer's maps) and SSIM
    (on the maps placed on the model input). A method whose maps stay close
    to the original once the top is random does not explain the model.

    Args:
        model: A `VisionModel` with a class output. It is not changed.
        image: RGB uint8 array (height, width, 3) of any size.
        methods: Method names from `CAM_METHODS`.
        class_index: The class to explain. Default: the original top class.
        layer_name: The layer of the maps. Default: `model.default_cam_layer()`.
        max_steps: Stop after this many blocks. Default: every block.
        seed: Seed of the re-initialisation.
        progress: Optional function (steps done, total) called after each
            step; it may raise to cancel.

    Returns:
        A `SanityCurves`.
    """
    # Imported here: `models` imports nothing from `metrics`, and this keeps it so.
    from convviz_core.models.vision_model import VisionModel

    layer_name = layer_name or model.default_cam_layer()
    original_maps, _, class_index = class_activation_maps_with_probabilities(
        model, image, methods, class_index, layer_name
    )
    copy = private_copy(model.keras_model)
    twin = VisionModel(
        copy, preprocess=model._preprocess, name=f"{model.name} (randomised copy)",
        class_names=model.class_names, input_size=model.input_size,
    )
    blocks = weight_blocks(copy)[: max_steps if max_steps is not None else None]
    rng = np.random.default_rng(seed)
    steps = ["original"]
    maps = {method: [original_maps[method]] for method in methods}
    for index, (name, layers) in enumerate(blocks):
        for layer in layers:
            reinitialize(layer, rng)
        step_maps, _, _ = class_activation_maps_with_probabilities(
            twin, image, methods, class_index, layer_name
        )
        steps.append(name)
        for method in methods:
            maps[method].append(step_maps[method])
        if progress is not None:
            progress(index + 1, len(blocks))
    placed = {
        method: [heatmap_on_input(model, heatmap, layer_name) for heatmap in maps[method]]
        for method in methods
    }
    return SanityCurves(
        steps=steps,
        rank_correlation={
            method: np.array([rank_correlation(maps[method][0], heatmap) for heatmap in maps[method]])
            for method in methods
        },
        ssim={
            method: np.array([structural_similarity(placed[method][0], heatmap) for heatmap in placed[method]])
            for method in methods
        },
        maps=maps,
        class_index=class_index,
    )
