"""Maps and faithfulness scores for many images, their masked inputs scored in shared batches.

Each image gets its CAM maps from the one-image pass (`class_activation_maps_
with_probabilities`), so its maps are exactly those of the dashboard. The
faithfulness metrics then need many masked copies of each image (33 per
deletion curve, 33 per insertion curve, 2 for Average Drop, 18 for ROAD, and
as many again for each random map of the chance level); those of several
images are pooled and scored in full batches through the one masked scoring
pass (`cam.passes.score_masked_inputs`), with no second forward pass for the
class. The masks, backgrounds and summaries are the metrics' own functions,
so every number equals the one-image functions' (`deletion_insertion`,
`average_drop_increase`, `random_baseline`, `road`).
"""

import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np

from convviz_core.cam.methods import (
    _check_methods,
    class_activation_maps_with_probabilities,
)
from convviz_core.cam.passes import score_masked_inputs
from convviz_core.errors import InputError
from convviz_core.inputs.images import load_image
from convviz_core.metrics.average_drop import explanation_mask, summarise_average_drop
from convviz_core.metrics.deletion_insertion import (
    DEFAULT_STEPS,
    pixel_ranks,
    revealing_masks,
    summarise_curves,
)
from convviz_core.metrics.placement import gaussian_blur, heatmap_on_input, model_input
from convviz_core.metrics.random_baseline import (
    DEFAULT_SEEDS,
    beats_chance,
    random_maps,
    summarise_random_maps,
)
from convviz_core.metrics.road import (
    DEFAULT_NOISE,
    DEFAULT_SEED,
    check_fractions,
    removal_masks,
    road_backgrounds,
    summarise_road,
)

# Masked inputs per forward pass: 33 is one curve of 32 steps, and the
# fastest batch of EfficientNet-Lite0 on two cores (bench/bench_batch.py).
BATCH_SIZE = 33
# Images whose masked inputs are pooled before they are scored.
IMAGES_PER_POOL = 4


@dataclasses.dataclass
class MethodScores:
    """One method's map of one image and its faithfulness scores.

    Attributes:
        heatmap: float32 array (layer height, layer width) in [0, 1], exactly
            `class_activation_map`'s.
        curves: Its `DeletionInsertion`.
        average_drop: Its `AverageDropIncrease`.
        road: Its `Road`, or None when ROAD was not asked for.
        beats_chance: (on deletion, on insertion), or None without a chance level.
    """

    heatmap: np.ndarray
    curves: object
    average_drop: object
    road: object = None
    beats_chance: tuple = None


@dataclasses.dataclass
class ImageExplanation:
    """What a batch run found for one image.

    Attributes:
        name: The image's name in the report (its path relative to the folder
            given, or its file name).
        image: RGB uint8 array as loaded, or None after an error.
        error: The loader's message for a file it refused, else None.
        probabilities: float32 array (classes,) of the image, or None.
        predicted_class: The top class, or None.
        explained_class: The class the maps explain, or None.
        methods: dict method name -> `MethodScores`.
        chance: The `RandomBaseline` (shared by the methods), or None.
        map_seconds: Time of the maps' pass (all methods at once).
        seconds: Time of all of the image's work (its share of the pooled
            scoring included).
    """

    name: str
    image: object = None
    error: str = None
    probabilities: object = None
    predicted_class: int = None
    explained_class: int = None
    methods: dict = dataclasses.field(default_factory=dict)
    chance: object = None
    map_seconds: float = 0.0
    seconds: float = 0.0


class _MaskPool:
    """Masked inputs of several images, scored together in full batches.

    Identical masked inputs are scored once: a full mask is its image
    (deletion's first point, insertion's last, Average Drop's reference)
    whatever the background, an empty mask is its background, and methods
    whose maps are equal (Grad-CAM, XGrad-CAM and HiResCAM often are) queue
    the same masks.
    """

    def __init__(self):
        self.inputs, self.backgrounds = [], []
        self.slots = {}  # (what the blend is, class) -> index of its unique masked input
        self.unique = []  # (mask, input row, background row, class) to score
        self.count = 0
        self.probabilities = None

    def add_input(self, inputs):
        self.inputs.append(inputs[0])
        return len(self.inputs) - 1

    def add_backgrounds(self, backgrounds):
        start = len(self.backgrounds)
        self.backgrounds.extend(backgrounds)
        return np.arange(start, start + len(backgrounds))

    def _slot(self, mask, input_row, background_row, class_index):
        if np.all(mask == 1):
            blend = ("input", input_row)
        elif not np.any(mask):
            blend = ("background", background_row)
        else:
            digest = hashlib.blake2b(np.ascontiguousarray(mask).tobytes(), digest_size=16).digest()
            blend = (mask.dtype.str, digest, input_row, background_row)
        key = (blend, int(class_index))
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = len(self.unique)
            self.unique.append((mask, input_row, background_row, class_index))
        return slot

    def add(self, masks, input_row, background_rows, class_index):
        """Queues masks; returns a function that gives their probabilities once scored."""
        background_rows = np.broadcast_to(np.asarray(background_rows), (len(masks),))
        masks = np.asarray(masks)
        slots = np.array([self._slot(mask, input_row, int(row), class_index)
                          for mask, row in zip(masks, background_rows)], int)
        self.count += len(masks)
        return lambda: self.probabilities[slots]

    def score(self, model, batch_size=BATCH_SIZE, progress=None):
        """Scores the unique masked inputs; `progress` counts every queued one, duplicates included."""
        inputs, backgrounds = np.stack(self.inputs), np.stack(self.backgrounds)
        probabilities = []
        reported = 0
        for start in range(0, len(self.unique), batch_size):
            batch = self.unique[start : start + batch_size]
            masks, input_rows, background_rows, classes = zip(*batch)
            _, batch_probabilities = score_masked_inputs(
                model, inputs, np.stack(masks).astype(np.float32), np.array(classes), backgrounds,
                batch_size=len(batch), input_rows=np.array(input_rows), background_rows=np.array(background_rows),
            )
            probabilities.append(batch_probabilities)
            if progress is not None:
                done = round(self.count * (start + len(batch)) / len(self.unique))
                progress(done - reported)
                reported = done
        self.probabilities = np.concatenate(probabilities) if probabilities else np.zeros(0, np.float32)


def _queue_map_scores(pool, model, placed, input_row, zero_row, blur_row, class_index, steps):
    """Queues a placed map's deletion, insertion and Average Drop masks; returns a finisher."""
    fractions, revealed = revealing_masks(placed, steps)
    deletion = pool.add(~revealed, input_row, zero_row, class_index)
    insertion = pool.add(revealed, input_row, blur_row, class_index)
    mask = explanation_mask(placed)
    drop = pool.add(np.stack([np.ones_like(mask), mask]), input_row, zero_row, class_index)
    return lambda: (
        summarise_curves(fractions, deletion(), insertion(), class_index),
        summarise_average_drop(*drop(), class_index),
    )


def _queue_road(pool, inputs, placed, input_row, class_index, fractions, noise, seed):
    removals = removal_masks(pixel_ranks(placed), fractions)
    rows = pool.add_backgrounds(road_backgrounds(inputs, removals, noise, seed))
    probabilities = pool.add(~removals, input_row, rows, class_index)
    return lambda: summarise_road(fractions, probabilities(), class_index)


def count_masked_inputs(methods, steps=DEFAULT_STEPS, chance_seeds=DEFAULT_SEEDS, road_fractions=None):
    """How many masked inputs one image costs (for a progress bar's total)."""
    per_map = 2 * (int(steps) + 1) + 2
    road = 2 * len(road_fractions) if road_fractions is not None else 0
    return len(methods) * (per_map + road) + len(chance_seeds) * per_map


def explain_images(model, sources, names=None, methods=("grad-cam",), class_index=None, layer_name=None,
                   steps=DEFAULT_STEPS, chance_seeds=DEFAULT_SEEDS, road_fractions=None,
                   road_noise=DEFAULT_NOISE, road_seed=DEFAULT_SEED, images_per_pool=IMAGES_PER_POOL,
                   batch_size=BATCH_SIZE, progress=None, prepare_image=None):
    """Explains many images: maps, deletion/insertion, Average Drop, chance and ROAD.

    A file the loader refuses gives an `ImageExplanation` with its `error`
    and nothing else; the other images go on.

    Args:
        model: A `VisionModel` with a class output.
        sources: Images: anything `load_image` reads (paths, bytes, file
            objects), RGB uint8 arrays, or an `InputError` for a file already
            refused (`archive.images_from_zip`'s), reported as such.
        names: One name per source for the report. Default: a path's
            string, else "image-<n>".
        methods: Method names from `CAM_METHODS`.
        class_index: The class to explain in every image. Default: each
            image's top class.
        layer_name: The layer. Default: `model.default_cam_layer()`.
        steps: Steps per deletion / insertion curve.
        chance_seeds: Seeds of the random maps of the chance level (one set
            per image, shared by its methods); empty for none.
        road_fractions: ROAD's fractions (e.g. `road.DEFAULT_FRACTIONS`), or
            None for no ROAD (it solves one sparse system per fraction and
            order: seconds per map at 224x224).
        road_noise, road_seed: ROAD's imputation noise and its seed.
        images_per_pool: Images whose masked inputs are scored together.
        batch_size: Masked inputs per forward pass.
        progress: Optional function (masked inputs scored) called after each
            batch; it may raise to cancel.
        prepare_image: Optional function applied to each image once loaded
            (the dashboard shrinks photos to a longer side of 1024 pixels).

    Yields:
        One `ImageExplanation` per source, in order.

    Raises:
        InputError: For an unknown method or layer, or a class out of range.
    """
    methods = _check_methods(methods)
    layer_name = layer_name or model.default_cam_layer()
    model.layer_info(layer_name)
    if class_index is not None:
        model.check_class(class_index)
    if road_fractions is not None:
        road_fractions = check_fractions(road_fractions)
    sources = list(sources)
    if names is None:
        names = [str(source) if isinstance(source, (str, Path)) else f"image-{index}"
                 for index, source in enumerate(sources)]
    for start in range(0, len(sources), max(1, int(images_per_pool))):
        pool, pending = _MaskPool(), []
        for source, name in zip(sources[start : start + images_per_pool], names[start : start + images_per_pool]):
            started = time.perf_counter()
            try:
                if isinstance(source, InputError):
                    raise source
                image = source if isinstance(source, np.ndarray) else load_image(source)
                if prepare_image is not None:
                    image = prepare_image(image)
                model.prepare(image)
            except InputError as error:
                pending.append((ImageExplanation(name=name, error=str(error)), None, started))
                continue
            maps, probabilities, explained = class_activation_maps_with_probabilities(
                model, image, methods, class_index, layer_name
            )
            map_seconds = time.perf_counter() - started
            inputs = model_input(model, image)
            input_row = pool.add_input(inputs)
            zero_row, blur_row = pool.add_backgrounds([np.zeros_like(inputs[0]), gaussian_blur(inputs)[0]])
            finishers = {}
            for method, heatmap in maps.items():
                placed = heatmap_on_input(model, heatmap, layer_name)
                finishers[method] = (
                    _queue_map_scores(pool, model, placed, input_row, zero_row, blur_row, explained, steps),
                    road_fractions is not None and _queue_road(
                        pool, inputs, placed, input_row, explained, road_fractions, road_noise, road_seed
                    ),
                )
            shape = next(iter(maps.values())).shape
            chance = [
                _queue_map_scores(pool, model, heatmap_on_input(model, random_map, layer_name), input_row,
                                  zero_row, blur_row, explained, steps)
                for random_map in (random_maps(shape, chance_seeds) if len(chance_seeds) else [])
            ]
            explanation = ImageExplanation(
                name=name, image=image, probabilities=probabilities,
                predicted_class=int(np.argmax(probabilities)), explained_class=int(explained),
                map_seconds=map_seconds,
            )
            explanation.methods = maps
            pending.append((explanation, (finishers, chance), time.perf_counter() - started))
        pooled_started = time.perf_counter()
        if pool.inputs:
            pool.score(model, batch_size, progress)
        pooled_seconds = time.perf_counter() - pooled_started
        scored = max(1, sum(1 for _, work, _ in pending if work is not None))
        for explanation, work, own_seconds in pending:
            if work is None:
                yield explanation
                continue
            finishers, chance = work
            baseline = None
            if chance:
                baseline = summarise_random_maps(*zip(*(finish() for finish in chance)), explanation.explained_class)
            results = {}
            for method, (finish, finish_road) in finishers.items():
                curves, drop = finish()
                results[method] = MethodScores(
                    heatmap=explanation.methods[method],
                    curves=curves,
                    average_drop=drop,
                    road=finish_road() if finish_road else None,
                    beats_chance=beats_chance(curves, baseline) if baseline is not None else None,
                )
            explanation.methods = results
            explanation.chance = baseline
            explanation.seconds = own_seconds + pooled_seconds / scored
            yield explanation
