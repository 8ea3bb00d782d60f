"""One image's explanations as the Grad-CAM and Compare pages show them: maps, their scores, the chance level.

The app computes these in its job pool (`convviz_app.cached` keeps the
results) and a queue's worker computes them for a replica
(`convviz_core.remote_jobs`); both call the functions here, so the numbers
are the same wherever they are computed.

- `compute_class_map`: one method's map of one class at one layer (`ClassMap`).
- `score_map`: a map's deletion / insertion curves and Average Drop (`MapScores`).
- `chance_level`: the random maps' scores, one seed at a time (`RandomBaseline`).
- `score_maps`: several maps of one class and the chance level, in one job.
"""

import dataclasses
import hashlib
import time

import numpy as np

from convviz_core.cam.gradcam import grad_cam_with_probabilities
from convviz_core.cam.methods import class_activation_maps_with_probabilities
from convviz_core.metrics.average_drop import average_drop_increase
from convviz_core.metrics.deletion_insertion import deletion_insertion
from convviz_core.metrics.placement import resolve_class
from convviz_core.metrics.random_baseline import random_maps, summarise_random_maps


@dataclasses.dataclass(frozen=True)
class ClassMap:
    """One method's map of one class at one layer, and what it took.

    Attributes:
        heatmap: float32 (layer height, layer width) in [0, 1].
        probabilities: float32 (classes,), the image's class probabilities.
        class_index: The class explained.
        seconds: How long computing it took (the first map of a layer also
            compiles the layer's function).
    """

    heatmap: np.ndarray
    probabilities: np.ndarray
    class_index: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class MapScores:
    """How faithful one map is (`convviz_core.metrics`).

    Attributes:
        curves: The RISE `DeletionInsertion` (areas and curves).
        average_drop: The `AverageDropIncrease` of the map.
    """

    curves: object
    average_drop: object


def compute_class_map(model, image, layer_name, class_index, method, progress=None):
    """One method's map of a class (None: the top class) at a layer.

    Grad-CAM goes through `grad_cam_with_probabilities`, as the Grad-CAM page
    always has; every other method through `class_activation_maps_with_probabilities`.

    Args:
        model: A `VisionModel`.
        image: RGB uint8 array (height, width, 3).
        layer_name: The layer of the map.
        class_index: The class to explain, or None for the top class.
        method: A name from `cam.methods.CAM_METHODS`.
        progress: Optional function (done, total), called by slow methods (Score-CAM).

    Returns:
        A `ClassMap`.
    """
    start = time.perf_counter()
    if method == "grad-cam":
        heatmap, probabilities = grad_cam_with_probabilities(model, image, class_index, layer_name)
        explained = int(np.argmax(probabilities)) if class_index is None else int(class_index)
    else:
        maps, probabilities, explained = class_activation_maps_with_probabilities(
            model, image, [method], class_index, layer_name, progress
        )
        heatmap = maps[method]
    return ClassMap(heatmap, probabilities, int(explained), time.perf_counter() - start)


def map_digest(heatmap):
    """A digest of a map's values: methods whose maps are identical are scored once."""
    return hashlib.sha256(np.ascontiguousarray(heatmap, np.float32).tobytes()).hexdigest()


def score_map(model, image, heatmap, class_index, layer_name, steps, progress=None):
    """Deletion / insertion (`steps` per curve) and Average Drop of one map.

    Returns:
        A `MapScores`.
    """
    curves = deletion_insertion(model, image, heatmap, class_index, layer_name, steps, progress)
    drop = average_drop_increase(model, image, heatmap, class_index, layer_name)
    return MapScores(curves, drop)


def chance_level(model, image, shape, class_index, layer_name, steps, seeds, progress=None):
    """The random-map chance level of one image, class and layer (`random_baseline`).

    The random maps are scored one seed at a time so that a job reports
    progress and can be cancelled between seeds; the means and spreads are
    those `random_baseline` gives for all seeds at once.

    Returns:
        A `RandomBaseline`.
    """
    class_index = resolve_class(model, image, class_index)
    curves, scores = [], []
    for done, heatmap in enumerate(random_maps(shape, seeds)):
        if progress is not None:
            progress(done, len(seeds))
        curves.append(deletion_insertion(model, image, heatmap, class_index, layer_name, steps))
        scores.append(average_drop_increase(model, image, heatmap, class_index, layer_name))
    if progress is not None:
        progress(len(seeds), len(seeds))
    return summarise_random_maps(curves, scores, class_index)


def score_maps(maps, steps, seeds, progress, chance=None, scores_of=None):
    """Scores maps of one class and layer, and the chance level, reporting progress in masked inputs.

    Args:
        maps: {method name: float32 map (h, w)}.
        steps: Steps per deletion / insertion curve.
        seeds: Seeds of the random maps.
        progress: Function (done, total), raising when the job is cancelled.
        chance: Function of a progress callback that returns the `RandomBaseline`.
        scores_of: Function of (method, progress callback) that returns that
            method's `MapScores`.

    Returns:
        ({method: `MapScores`}, `RandomBaseline`).
    """
    # Progress in masked inputs: 2 (steps + 1) per map, random ones included.
    per_map = 2 * (steps + 1)
    total = per_map * (len(seeds) + len(maps))
    baseline = chance(lambda done, count: progress(per_map * done, total))
    scores = {}
    for index, method in enumerate(maps):
        before = per_map * (len(seeds) + index)
        scores[method] = scores_of(
            method, lambda done, count, before=before: progress(before + done * per_map // max(count, 1), total)
        )
    progress(total, total)
    return scores, baseline


def score_maps_of_image(model, image, layer_name, class_index, maps, steps, seeds, progress):
    """`score_maps` computed here, with no cache: identical maps are scored once.

    Args:
        model, image: The `VisionModel` and the RGB uint8 image.
        layer_name, class_index: Where the maps come from and what they explain (an int).
        maps, steps, seeds, progress: As for `score_maps`.

    Returns:
        ({method: `MapScores`}, `RandomBaseline`).
    """
    shape = tuple(int(side) for side in next(iter(maps.values())).shape)
    by_digest = {}

    def scores_of(method, report):
        digest = map_digest(maps[method])
        if digest not in by_digest:
            by_digest[digest] = score_map(model, image, maps[method], class_index, layer_name, steps, report)
        return by_digest[digest]

    return score_maps(
        maps, steps, seeds, progress,
        chance=lambda report: chance_level(model, image, shape, class_index, layer_name, steps, seeds, report),
        scores_of=scores_of,
    )
