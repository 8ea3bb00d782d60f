"""The RISE deletion and insertion metrics (Petsiuk, Das and Saenko, BMVC 2018)."""

import dataclasses

import numpy as np

from convviz_core.cam.passes import score_masked_inputs
from convviz_core.metrics.placement import (
    gaussian_blur,
    heatmap_on_input,
    model_input,
    resolve_class,
)

# Points on each curve: 0, 1/32, ..., 1 of the pixels (33 forward passes per
# curve). RISE moves 224 pixels per step on 224x224 inputs; 32 steps keep
# both curves within a few seconds on two cores, and their areas within about
# 0.01 of RISE's finer curves.
DEFAULT_STEPS = 32
BATCH_SIZE = 11


@dataclasses.dataclass
class DeletionInsertion:
    """Deletion and insertion curves of one map, and their areas.

    Attributes:
        deletion_auc: Area under the deletion curve (lower is better: the
            class probability falls fast as the pixels the map ranks first are
            removed).
        insertion_auc: Area under the insertion curve (higher is better).
        fractions: float array (steps + 1,), the fraction of pixels removed or
            revealed, 0 to 1.
        deletion_curve: float array (steps + 1,), the class probability after
            removing each fraction of pixels, most important first.
        insertion_curve: float array (steps + 1,), the class probability after
            revealing each fraction on the blurred image.
        class_index: The class scored.
    """

    deletion_auc: float
    insertion_auc: float
    fractions: np.ndarray
    deletion_curve: np.ndarray
    insertion_curve: np.ndarray
    class_index: int


def area_under_curve(curve):
    """The trapezoid area under a curve sampled evenly on [0, 1] (RISE's `auc`)."""
    curve = np.asarray(curve, np.float64)
    return float((curve.sum() - curve[0] / 2 - curve[-1] / 2) / (len(curve) - 1))


def pixel_ranks(heatmap):
    """Each pixel's rank by the map, 0 for the most important.

    Ties keep reading order (as RISE's `argsort` does).

    Args:
        heatmap: float array (height, width).

    Returns:
        int array (height, width).
    """
    order = np.argsort(-np.asarray(heatmap, np.float64).ravel(), kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(order.size)
    return ranks.reshape(np.shape(heatmap))


def deletion_insertion(model, image, heatmap, class_index=None, layer_name=None,
                       steps=DEFAULT_STEPS, progress=None):
    """Scores a map by the RISE deletion and insertion curves.

    The map is placed on the model input (as the views place it) and ranks
    its pixels, most important first. Deletion removes them in that order,
    setting them to zero in the model's input space (RISE's substrate: the
    mean colour for a model whose preprocessing centres its inputs, black for
    one that takes raw pixels); insertion reveals them in that order on a
    blurred copy of the input (RISE's: 11x11 Gaussian, sigma 5). Each curve
    is the class probability after each step; its area is taken with x the
    fraction of pixels from 0 to 1. A faithful map gives a low deletion area
    and a high insertion area; compare with `random_baseline`.

    Args:
        model: A `VisionModel` with a class output.
        image: RGB uint8 array (height, width, 3) of any size.
        heatmap: float array (h, w) at any resolution: a layer's CAM map, or
            any other (a random one).
        class_index: The class to score. Default: the top predicted class.
        layer_name: The layer a CAM map comes from, to place it where its
            pixels look; None resizes the map to the input.
        steps: Steps per curve (each curve has steps + 1 points).
        progress: Optional function (masked inputs scored, total) called
            after each batch; it may raise to cancel.

    Returns:
        A `DeletionInsertion`.

    Raises:
        InputError: For a class out of range, a model without classes, an
            image that is not RGB uint8 or a heatmap that is not 2-D.
    """
    class_index = resolve_class(model, image, class_index)
    fractions, revealed = revealing_masks(heatmap_on_input(model, heatmap, layer_name), steps)
    inputs = model_input(model, image)
    total = 2 * len(fractions)
    done_before = [0]

    def report(done, _):
        if progress is not None:
            progress(done_before[0] + done, total)

    _, deletion_curve = score_masked_inputs(
        model, inputs, ~revealed, class_index, np.zeros_like(inputs),
        batch_size=BATCH_SIZE, progress=report,
    )
    done_before[0] = len(fractions)
    _, insertion_curve = score_masked_inputs(
        model, inputs, revealed, class_index, gaussian_blur(inputs),
        batch_size=BATCH_SIZE, progress=report,
    )
    return summarise_curves(fractions, deletion_curve, insertion_curve, class_index)


def revealing_masks(placed_heatmap, steps=DEFAULT_STEPS):
    """The pixels revealed at each step of the curves, most important first.

    Deletion keeps the complement of each mask; insertion shows each mask on
    the blurred input.

    Args:
        placed_heatmap: float array at the model's input size
            (`placement.heatmap_on_input`).
        steps: Steps per curve (each curve has steps + 1 points).

    Returns:
        (fractions float array (steps + 1,), bool array (steps + 1, height,
        width) of the revealed pixels).
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"`steps` must be at least 1. Received: steps={steps}")
    ranks = pixel_ranks(placed_heatmap)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * ranks.size).astype(int)
    # Revealed pixels at each step: those ranked before the step's count.
    return fractions, ranks[np.newaxis] < counts[:, np.newaxis, np.newaxis]


def summarise_curves(fractions, deletion_curve, insertion_curve, class_index):
    """Builds a `DeletionInsertion` from the probabilities of each curve."""
    deletion_curve = np.asarray(deletion_curve, np.float64)
    insertion_curve = np.asarray(insertion_curve, np.float64)
    return DeletionInsertion(
        deletion_auc=area_under_curve(deletion_curve),
        insertion_auc=area_under_curve(insertion_curve),
        fractions=fractions,
        deletion_curve=deletion_curve,
        insertion_curve=insertion_curve,
        class_index=int(class_index),
    )
