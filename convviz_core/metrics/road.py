"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci and Kasneci, ICML 2022).

Deletion metrics put the model off its training distribution (a black square
is evidence of its own), and the shape of what was removed leaks the map's
information to the model. ROAD removes pixels by *noisy linear imputation*:
each removed pixel becomes the weighted mean of its eight neighbours (1/6 for
the four sharing an edge, 1/12 for the four diagonal ones), solved for all
removed pixels at once as one sparse linear system, plus a little Gaussian
noise so that the imputed region does not give itself away by its smoothness.

Two orders, as pytorch-grad-cam's `ROADMostRelevantFirst` and
`ROADLeastRelevantFirst` define them: removing the pixels the map ranks
*first* should make the class probability fall (MoRF, lower is better);
removing those it ranks *last* should leave it standing (LeRF, higher is
better). Each is taken at several fractions of the pixels (10% to 90%) and
averaged (pytorch-grad-cam's `ROAD...Average`); the combined score is
(LeRF - MoRF) / 2 (`ROADCombined`), higher is better.

Differences from pytorch-grad-cam, on purpose: the pixels removed are chosen
by rank (exactly a fraction of them, ties in reading order, as the deletion
curve does) rather than by a percentile threshold; the noise is seeded, so
a report can be reproduced; scores are class probabilities (the RISE curves'
unit), not logits.
"""

import dataclasses

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from convviz_core.cam.passes import score_masked_inputs
from convviz_core.metrics.deletion_insertion import BATCH_SIZE, pixel_ranks
from convviz_core.metrics.placement import heatmap_on_input, model_input, resolve_class

# Offset (row, column) -> weight of that neighbour in the imputed mean.
NEIGHBOUR_WEIGHTS = {
    (-1, -1): 1 / 12, (-1, 0): 1 / 6, (-1, 1): 1 / 12,
    (0, -1): 1 / 6, (0, 1): 1 / 6,
    (1, -1): 1 / 12, (1, 0): 1 / 6, (1, 1): 1 / 12,
}
DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# The noise's standard deviation in the model's input space (pytorch-grad-cam's 0.01).
DEFAULT_NOISE = 0.01
DEFAULT_SEED = 0
ORDERS = ("most-relevant-first", "least-relevant-first")


@dataclasses.dataclass
class Road:
    """ROAD scores of one map.

    Attributes:
        most_relevant_first: Mean class probability after removing each
            fraction of the pixels the map ranks first (lower is better).
        least_relevant_first: The same, removing those it ranks last (higher
            is better).
        combined: (least_relevant_first - most_relevant_first) / 2 (higher is
            better; pytorch-grad-cam's `ROADCombined`).
        fractions: float array (k,), the fractions of pixels removed.
        most_relevant_first_curve: float array (k,), the probability after
            each fraction, most relevant first.
        least_relevant_first_curve: float array (k,), least relevant first.
        class_index: The class scored.
    """

    most_relevant_first: float
    least_relevant_first: float
    combined: float
    fractions: np.ndarray
    most_relevant_first_curve: np.ndarray
    least_relevant_first_curve: np.ndarray
    class_index: int


def impute_linearly(values, removed, noise=0.0, rng=None):
    """Fills removed pixels with the weighted mean of their neighbours, solved jointly.

    For every removed pixel i, with N(i) its neighbours inside the image and
    w the weights of `NEIGHBOUR_WEIGHTS`: sum_N(i) w_j * (x_i - x_j) = 0,
    where x_j is known for a kept neighbour and unknown for a removed one.
    This is one sparse linear system per channel (diagonally dominant, so it
    has one solution as long as one pixel is kept).

    Args:
        values: float array (height, width, channels).
        removed: bool array (height, width), True where a pixel is removed.
        noise: Standard deviation of the Gaussian noise added to each imputed
            value (0 for the plain linear imputation).
        rng: A `numpy.random.Generator` for the noise.

    Returns:
        float32 array like `values`.

    Raises:
        ValueError: If the shapes differ or every pixel is removed.
    """
    values = np.asarray(values, np.float64)
    removed = np.asarray(removed, bool)
    if values.ndim != 3 or removed.shape != values.shape[:2]:
        raise ValueError(
            f"`values` must be (height, width, channels) and `removed` (height, width). Received: "
            f"values.shape={values.shape}, removed.shape={removed.shape}"
        )
    count = int(removed.sum())
    if count == 0:
        return values.astype(np.float32)
    if count == removed.size:
        raise ValueError("ROAD cannot impute an image with every pixel removed: keep at least one.")
    height, width = removed.shape
    unknown = np.full(removed.shape, -1)
    unknown[removed] = np.arange(count)
    rows, columns = np.nonzero(removed)
    diagonal = np.zeros(count)
    right_side = np.zeros((count, values.shape[2]))
    matrix_rows, matrix_columns, matrix_values = [], [], []
    for (row_offset, column_offset), weight in NEIGHBOUR_WEIGHTS.items():
        neighbour_rows, neighbour_columns = rows + row_offset, columns + column_offset
        inside = (
            (neighbour_rows >= 0) & (neighbour_rows < height)
            & (neighbour_columns >= 0) & (neighbour_columns < width)
        )
        equations = np.nonzero(inside)[0]
        neighbour_rows, neighbour_columns = neighbour_rows[inside], neighbour_columns[inside]
        diagonal[equations] += weight
        neighbour = unknown[neighbour_rows, neighbour_columns]
        known = neighbour < 0
        right_side[equations[known]] += weight * values[neighbour_rows[known], neighbour_columns[known]]
        matrix_rows.append(equations[~known])
        matrix_columns.append(neighbour[~known])
        matrix_values.append(np.full(int((~known).sum()), -weight))
    matrix = scipy.sparse.csc_matrix(
        (
            np.concatenate(matrix_values + [diagonal]),
            (np.concatenate(matrix_rows + [np.arange(count)]), np.concatenate(matrix_columns + [np.arange(count)])),
        ),
        shape=(count, count),
    )
    solution = scipy.sparse.linalg.splu(matrix).solve(right_side)
    if noise:
        solution = solution + noise * (rng or np.random.default_rng()).standard_normal(solution.shape)
    imputed = values.copy()
    imputed[removed] = solution
    return imputed.astype(np.float32)


def removal_masks(ranks, fractions):
    """The pixels each ROAD step removes, most relevant first then least relevant first.

    Args:
        ranks: int array (height, width), each pixel's rank by the map (0
            first; `deletion_insertion.pixel_ranks`).
        fractions: The fractions of pixels to remove, each in (0, 1).

    Returns:
        bool array (2 * len(fractions), height, width): the most-relevant-first
        removals, then the least-relevant-first ones.
    """
    counts = np.round(np.asarray(fractions, np.float64) * ranks.size).astype(int)
    first = [ranks < count for count in counts]
    last = [ranks >= ranks.size - count for count in counts]
    return np.stack(first + last)


def road_backgrounds(inputs, removals, noise=DEFAULT_NOISE, seed=DEFAULT_SEED):
    """The imputed model inputs, one per removal, with seeded noise.

    Step k's noise comes from `numpy.random.default_rng([seed, k])`, so an
    image's imputed inputs are the same whichever batch computes them.

    Args:
        inputs: float array (1, height, width, channels), the model input.
        removals: bool array (n, height, width) from `removal_masks`.
        noise: The noise's standard deviation.
        seed: Non-negative integer seed.

    Returns:
        float32 array (n, height, width, channels).
    """
    return np.stack([
        impute_linearly(inputs[0], removed, noise, np.random.default_rng([int(seed), step]))
        for step, removed in enumerate(removals)
    ])


def check_fractions(fractions):
    """Validates ROAD's fractions: each strictly between 0 and 1."""
    fractions = np.asarray(fractions, np.float64).reshape(-1)
    if fractions.size == 0 or np.any(fractions <= 0) or np.any(fractions >= 1):
        raise ValueError(
            f"ROAD's fractions must each be strictly between 0 and 1. Received: fractions={fractions.tolist()}"
        )
    return fractions


def summarise_road(fractions, probabilities, class_index):
    """Builds a `Road` from the probabilities of `removal_masks`' steps, in order."""
    probabilities = np.asarray(probabilities, np.float64)
    first, last = probabilities[: len(fractions)], probabilities[len(fractions) :]
    most, least = float(first.mean()), float(last.mean())
    return Road(
        most_relevant_first=most,
        least_relevant_first=least,
        combined=(least - most) / 2,
        fractions=np.asarray(fractions, np.float64),
        most_relevant_first_curve=first,
        least_relevant_first_curve=last,
        class_index=int(class_index),
    )


def road(model, image, heatmap, class_index=None, layer_name=None, fractions=DEFAULT_FRACTIONS,
         noise=DEFAULT_NOISE, seed=DEFAULT_SEED):
    """Scores a map by ROAD, most relevant first and least relevant first.

    Args:
        model: A `VisionModel` with a class output.
        image: RGB uint8 array (height, width, 3) of any size.
        heatmap: float array (h, w) at any resolution.
        class_index: The class to score. Default: the top predicted class.
        layer_name: The layer a CAM map comes from, to place it where its
            pixels look; None resizes the map to the input.
        fractions: Fractions of the pixels to remove, each in (0, 1).
        noise: Standard deviation of the imputation noise in the model's
            input space (0 for none).
        seed: Seed of the noise.

    Returns:
        A `Road`.

    Raises:
        InputError: For a class out of range, a model without classes, an
            image that is not RGB uint8 or a heatmap that is not 2-D.
        ValueError: For a fraction outside (0, 1).
    """
    fractions = check_fractions(fractions)
    class_index = resolve_class(model, image, class_index)
    removals = removal_masks(pixel_ranks(heatmap_on_input(model, heatmap, layer_name)), fractions)
    inputs = model_input(model, image)
    backgrounds = road_backgrounds(inputs, removals, noise, seed)
    _, probabilities = score_masked_inputs(
        model, inputs, (~removals).astype(np.float32), class_index, backgrounds,
        batch_size=BATCH_SIZE, background_rows=np.arange(len(removals)),
    )
    return summarise_road(fractions, probabilities, class_index)
