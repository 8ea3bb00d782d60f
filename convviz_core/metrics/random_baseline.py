"""The chance level: the faithfulness scores of seeded random maps."""

import dataclasses

import numpy as np

from convviz_core.metrics.average_drop import average_drop_increase
from convviz_core.metrics.deletion_insertion import DEFAULT_STEPS, deletion_insertion
from convviz_core.metrics.placement import resolve_class

DEFAULT_SEEDS = (0, 1, 2)


@dataclasses.dataclass
class RandomBaseline:
    """Mean scores of random maps of one image and class.

    Attributes:
        deletion_auc, insertion_auc: Means over the random maps.
        deletion_auc_spread, insertion_auc_spread: Their standard deviations.
        average_drop: Mean Average Drop (percent).
        increase_in_confidence: Fraction of random maps that raised the
            probability.
        count: How many random maps.
        class_index: The class scored.
    """

    deletion_auc: float
    insertion_auc: float
    deletion_auc_spread: float
    insertion_auc_spread: float
    average_drop: float
    increase_in_confidence: float
    count: int
    class_index: int


def random_maps(shape, seeds=DEFAULT_SEEDS):
    """Seeded random maps: uniform values in [0, 1), one per seed.

    Args:
        shape: (height, width), e.g. the shape of the map being judged, so that
            the random maps are as coarse as it is.
        seeds: Non-negative integer seeds.

    Returns:
        float32 array (len(seeds), height, width).
    """
    return np.stack([np.random.default_rng(seed).random(tuple(shape)) for seed in seeds]).astype(np.float32)


def random_baseline(model, image, shape, class_index=None, layer_name=None, seeds=DEFAULT_SEEDS,
                    steps=DEFAULT_STEPS):
    """Scores seeded random maps like a method's map, for the chance level.

    A method beats chance on this image when its deletion area is below the
    random maps' (and its insertion area above) by more than their spread.

    Args:
        model: A `VisionModel` with a class output.
        image: RGB uint8 array (height, width, 3) of any size.
        shape: (height, width) of the random maps: the judged map's shape.
        class_index: The class to score. Default: the top predicted class.
        layer_name: Place the random maps like this layer's maps; None
            resizes them to the input.
        seeds: One random map per seed.
        steps: Steps per deletion / insertion curve.

    Returns:
        A `RandomBaseline`.
    """
    class_index = resolve_class(model, image, class_index)
    curves, scores = [], []
    for heatmap in random_maps(shape, seeds):
        curves.append(deletion_insertion(model, image, heatmap, class_index, layer_name, steps))
        scores.append(average_drop_increase(model, image, heatmap, class_index, layer_name))
    return summarise_random_maps(curves, scores, class_index)


def summarise_random_maps(curves, scores, class_index):
    """Builds a `RandomBaseline` from each random map's `DeletionInsertion` and `AverageDropIncrease`."""
    deletions = [curve.deletion_auc for curve in curves]
    insertions = [curve.insertion_auc for curve in curves]
    return RandomBaseline(
        deletion_auc=float(np.mean(deletions)),
        insertion_auc=float(np.mean(insertions)),
        deletion_auc_spread=float(np.std(deletions)),
        insertion_auc_spread=float(np.std(insertions)),
        average_drop=float(np.mean([score.average_drop for score in scores])),
        increase_in_confidence=float(np.mean([score.increase_in_confidence for score in scores])),
        count=len(deletions),
        class_index=int(class_index),
    )


def beats_chance(curves, baseline):
    """Whether a map beats chance on deletion and on insertion, as the views judge it.

    Args:
        curves: The map's `DeletionInsertion`.
        baseline: The `RandomBaseline` of the same image and class.

    Returns:
        (beats on deletion, beats on insertion): the map's deletion area is
        below the random maps' by more than their spread (insertion above).
    """
    on_deletion = curves.deletion_auc < baseline.deletion_auc - baseline.deletion_auc_spread
    on_insertion = curves.insertion_auc > baseline.insertion_auc + baseline.insertion_auc_spread
    return bool(on_deletion), bool(on_insertion)
